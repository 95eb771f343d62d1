// LlamaRunner.resume: a prompt's cache streamed out and restored continues exactly as the runner
// that computed it (the same logits, bit for bit), the cached system prompt's use.
import { describe, expect, it } from 'vitest';
import { LlamaRunner } from '../src/llama2c/index';
import { useModel } from './llama2c-helpers';

const fx = useModel('stories260K.bin', 'tok512.bin');

async function gather(stream: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const chunks: Uint8Array[] = [];
  for await (const c of stream) chunks.push(c);
  return chunks;
}

describe('LlamaRunner.resume', () => {
  it('a restored prompt cache gives the logits of the runner that computed it, token after token', async () => {
    const options = { bits: 2 as const, groupSize: 32, residual: 32 };
    const prompt = fx.tokenizer.encode(fx.text.slice(0, 600), { bos: true }).slice(0, 120);
    const computed = new LlamaRunner(fx.model, fx.kivi, options);
    for (const id of prompt.slice(0, -1)) computed.advance(id);
    const chunks = await gather(computed.cache.serializeStream({ chunkBytes: 2048 }));
    const resumed = new LlamaRunner(fx.model, fx.kivi, options);
    resumed.resume(await fx.kivi.restoreCacheStream(chunks));
    expect(resumed.position).toBe(prompt.length - 1);
    let token = prompt[prompt.length - 1]!;
    for (let step = 0; step < 8; step++) {
      const want = computed.forward(token);
      const got = resumed.forward(token);
      expect(got).toEqual(want);
      token = want.indexOf(Math.max(...want));
    }
    computed.dispose();
    resumed.dispose();
  });

  it('refuses a cache of another shape, uneven layers or a disposed cache', () => {
    const runner = new LlamaRunner(fx.model, fx.kivi);
    const c = fx.model.config;
    const other = fx.kivi.createCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, queryHeads: c.kvHeads });
    expect(() => runner.resume(other)).toThrow(/^LlamaRunner\.resume: cache queryHeads must be the model's \(8\), got 4$/);
    const uneven = fx.kivi.createCache(runner.cacheOptions);
    uneven.append(1, new Float32Array(c.kvHeads * c.headDim), new Float32Array(c.kvHeads * c.headDim));
    expect(() => runner.resume(uneven)).toThrow(/every layer must hold the same tokens, got 0 in layer 0 and 1 in layer 1/);
    uneven.dispose();
    expect(() => runner.resume(uneven)).toThrow(/the cache was disposed/);
    expect(() => runner.resume({} as never)).toThrow(TypeError);
    expect(runner.position).toBe(0);
    runner.dispose();
  });
});

// stories3M (f32 file) through an f32 cache: the reference numbers of shared/models/README.md.
// ~13 s on a 2-core machine; the Q8_0 file is in llama2c-q80.test.ts so that the two run in parallel.
import { beforeAll, describe, expect, it } from 'vitest';
import { Kivi } from '../src/index';
import { evaluate, generate, LlamaRunner, type LlamaModel, type Protocol, type Tokenizer } from '../src/llama2c/index';
import { loadModel, REFERENCE, REFERENCE_TOLERANCE, validationText } from './llama2c-helpers';

let kivi: Kivi;
let stories: { model: LlamaModel; tokenizer: Tokenizer };
let text: string;
beforeAll(async () => {
  kivi = await Kivi.load();
  stories = loadModel('stories3M.f32.bin', 'tok4096.bin');
  text = validationText();
});

describe('stories3M (f32 weights, f32 cache)', () => {
  for (const protocol of ['A', 'B'] as Protocol[]) {
    const want = REFERENCE.stories3M[protocol];
    it(`protocol ${protocol}: ${want.tokens} tokens, mean NLL ${want.meanNll}`, () => {
      const runner = new LlamaRunner(stories.model, kivi);
      const t0 = performance.now();
      const r = evaluate(runner, stories.tokenizer, text, protocol);
      const ms = performance.now() - t0;
      console.log(`stories3M ${protocol} (f32 cache): ${r.tokens} tokens, mean NLL ${r.meanNll.toFixed(6)}, ${(ms / 1000).toFixed(2)} s, ${(ms / (r.tokens + r.sequences)).toFixed(3)} ms/token`);
      expect(r.tokens).toBe(want.tokens);
      expect(Math.abs(r.meanNll - want.meanNll)).toBeLessThan(REFERENCE_TOLERANCE);
      runner.dispose();
    });
  }

  it('generates greedily from BOS', () => {
    const runner = new LlamaRunner(stories.model, kivi);
    const g = generate(runner, stories.tokenizer, { steps: 24, temperature: 0 });
    expect(g.text.startsWith('Once upon a time, there was a little girl named Lily.')).toBe(true);
    runner.dispose();
  });
});

// The end-to-end part of npm run bench:llamacpp (bench/llamacpp-e2e.ts) at a tiny depth, so that it
// cannot rot: a random-weight GGUF in kivi-wasm's runner (a Worker of the wllama page, at 1 and 2
// threads) and in wllama (f16 and q4_0 caches), in the same headless Chromium. What is checked is
// what the numbers rest on, not the numbers: the threads each engine ran, the tokens each cache
// holds, the bytes counted, and that the page's run of our runner is the one Node gives on the same
// file (the same generated tokens and cache bytes; the same bits for any thread count).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Kivi } from '../../../../src/index';
import { randomGguf } from '../../../../src/gguf/convert';
import { BOS, LlamaRunner, parseModel } from '../../../../src/llama2c/index';
import { E2E_KIVI_CACHE, GGML_BYTES, runE2e, WORD, type E2eRow, type PeerPage } from '../../../llamacpp-e2e';

const here = dirname(fileURLToPath(import.meta.url));
const PEERS = join(here, '..');
// 2 layers, 2 kv heads of 64: tiny, and head dim 64 as llama.cpp's quantized caches need
const SHAPE = { dim: 128, heads: 2, kvHeads: 2, layers: 2, hiddenDim: 256, vocabSize: 512, type: 'q8_0' as const };
const DEPTHS = [40, 200]; // 200 > R = 128: the KIVI-2 cache has quantized tokens there
const STEPS = 6;
const CONTEXT = 256;

let scratch: string;
let gguf: string;
let page: PeerPage & { close(): Promise<void> };
let rows: E2eRow[];
let variant: string;

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'kivi-peers-e2e-'));
  gguf = join(scratch, 'tiny.gguf');
  writeFileSync(gguf, randomGguf({ ...SHAPE, context: CONTEXT, name: 'random-tiny' }));
  const { openWllama } = await import(pathToFileURL(join(PEERS, 'wllama.mjs')).href);
  page = await openWllama({ 'tiny.gguf': gguf });
  ({ rows, variant } = await runE2e(page, { model: '/models/tiny.gguf', shape: SHAPE, context: CONTEXT, depths: DEPTHS, steps: STEPS, threads: [1, 2], caches: ['f16', 'q4_0'] }));
}, 300_000);
afterAll(async () => {
  await page?.close();
  rmSync(scratch, { recursive: true, force: true });
});

const of = (engine: string, cache: string, threads: number) => rows.filter((r) => r.engine === engine && r.cache === cache && r.threads === threads);

describe('end to end in the browser (bench:llamacpp part e2e)', () => {
  it('runs both engines at every depth, thread count and cache, with finite speeds', () => {
    for (const threads of [1, 2]) {
      for (const [engine, cache] of [['kivi-wasm', 'KIVI-2'], ['wllama', 'f16'], ['wllama', 'q4_0']] as const) {
        const r = of(engine, cache, threads);
        expect(r.map((x) => x.depth)).toEqual(DEPTHS);
        for (const x of r) {
          expect(Number.isFinite(x.tokensPerSecond) && x.tokensPerSecond > 0).toBe(true);
          expect(x.msPerToken).toBeCloseTo(1000 / x.tokensPerSecond, 6);
          expect(x.fillSeconds).toBeGreaterThanOrEqual(0);
          expect(Number.isFinite(x.cpuPerWall)).toBe(true);
        }
      }
    }
  });

  it('runs our runner in the page as Node runs it on the same file (tokens and cache bytes), the same at 1 and 2 threads', async () => {
    const kivi = await Kivi.load({ threads: 1 });
    try {
      expect(variant).toBe(kivi.variant); // the same wasm build in Chromium and in Node
      const { fillAndGenerate, wordToken } = await import(pathToFileURL(join(PEERS, 'page', 'fill-and-generate.js')).href);
      const { model, tokenizer } = parseModel(new Uint8Array(readFileSync(gguf)));
      const runner = new LlamaRunner(model, kivi, { ...E2E_KIVI_CACHE, maxTokens: Math.max(...DEPTHS) + STEPS });
      try {
        const node = fillAndGenerate(runner, { depths: DEPTHS, steps: STEPS, word: wordToken(tokenizer!, WORD, BOS), bos: BOS, layers: SHAPE.layers, vocabSize: SHAPE.vocabSize });
        for (const threads of [1, 2]) {
          of('kivi-wasm', 'KIVI-2', threads).forEach((r, i) => {
            expect(r.generated).toEqual(node[i].generated);
            expect(r.generated).toHaveLength(STEPS);
            expect(r.cacheBytes).toBe(node[i].cacheBytes);
            expect(r.allocatedBytes).toBe(r.cacheBytes);
          });
        }
        // the deeper cache holds quantized tokens: fewer bytes than its f32 rows would take
        const deep = node[1];
        expect(deep.cacheTokens).toBe(DEPTHS[1]! + STEPS - 1);
        expect(deep.cacheBytes).toBeLessThan(deep.cacheTokens * SHAPE.layers * SHAPE.kvHeads * 64 * 2 * 4);
      } finally {
        runner.dispose();
      }
    } finally {
      kivi.close();
    }
  });

  it("counts wllama's cache bytes as llama.cpp allocates them", () => {
    const kvDim = SHAPE.kvHeads * (SHAPE.dim / SHAPE.heads);
    for (const cache of ['f16', 'q4_0']) {
      for (const r of [...of('wllama', cache, 1), ...of('wllama', cache, 2)]) {
        expect(r.cacheBytes).toBe(r.depth * SHAPE.layers * kvDim * 2 * GGML_BYTES[cache]!);
        // llama.cpp allocates its whole context (n_ctx cells, padded to 256) up front; its log prints MiB to 2 decimals
        const cells = Math.ceil(CONTEXT / 256) * 256;
        expect(Math.abs(r.allocatedBytes - cells * SHAPE.layers * kvDim * 2 * GGML_BYTES[cache]!)).toBeLessThanOrEqual(0.005 * 2 ** 20);
      }
    }
  });
});

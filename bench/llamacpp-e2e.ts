// The end-to-end part of npm run bench:llamacpp (and of bench/peers/llamacpp/test/e2e.test.ts, at a
// tiny depth): one GGUF in kivi-wasm's runner and in wllama, in the same browser page (the page of
// bench/peers/llamacpp/wllama.mjs: cross-origin isolated, so both may run threads), each filling its
// cache to every depth and then generating tokens greedily; tokens per second and each cache's bytes.

/** The end-to-end model: small weights (about 7 M multiply-adds per token), so that from a few
 *  thousand tokens on attention is most of a token's time; head dim 64 (llama.cpp's quantized
 *  caches need a multiple of 32). */
export const E2E_SHAPE = { dim: 512, heads: 8, kvHeads: 8, layers: 2, hiddenDim: 1536, vocabSize: 512, type: 'q8_0' as const };
export type E2eShape = typeof E2E_SHAPE | { dim: number; heads: number; kvHeads: number; layers: number; hiddenDim: number; vocabSize: number; type: 'q8_0' | 'f16' | 'f32' | 'q4_0' };
/** kivi-wasm's cache in the end-to-end part: KIVI-2 with KIVI's G and R. */
export const E2E_KIVI_CACHE = { bits: 2 as const, groupSize: 32, residual: 128 };
/** Bytes per cached number of llama.cpp's cache types (ggml's blocks of 32). */
export const GGML_BYTES: Record<string, number> = { f16: 2, q8_0: 34 / 32, q4_0: 18 / 32 };
/** The prompt word: one token ("▁aa") per word in the vocabulary of `convert --random`. */
export const WORD = 'aa';

export interface E2eRow {
  engine: 'kivi-wasm' | 'wllama';
  cache: string;
  threads: number;
  depth: number;
  tokensPerSecond: number;
  msPerToken: number;
  /** bytes the cache holds at this depth (ours: stats().bytes; llama.cpp: depth · layers · kv dim · 2 · bytes per number) */
  cacheBytes: number;
  /** bytes the cache has allocated (llama.cpp: its whole context, from its load log; ours: = cacheBytes) */
  allocatedBytes: number;
  /** time to fill the cache from the previous depth (ours one token at a time; wllama its prefill) */
  fillSeconds: number;
  /** the browser's CPU seconds per wall second over the engine's whole job */
  cpuPerWall: number;
  /** the greedy tokens generated at this depth */
  generated: number[];
}

/** The page of wllama.mjs's openWllama. */
export interface PeerPage {
  run(job: object): Promise<any>;
  version: string;
}

/** One decode step's time from llama.cpp's server timings: predicted_ms runs from the first sampled
 *  token to the last, over predicted_n − 1 decode steps. */
export const msPerStep = (t: { predicted_ms: number; predicted_n: number }): number => t.predicted_ms / (t.predicted_n - 1);

/** Checks that wllama ran the threads asked for, cross-origin isolated; returns the browser's CPU
 *  seconds per wall second over the job (above 1 only if more than one core worked). */
export function checkWllamaThreads(r: { threads: number; multithread: boolean; cpuSeconds: number; wallSeconds: number; crossOriginIsolated: boolean }, threads: number): number {
  if (r.threads !== threads || r.multithread !== threads > 1 || !r.crossOriginIsolated) {
    throw new Error(`wllama ran ${r.threads} thread(s) (multithread ${r.multithread}, cross-origin isolated ${r.crossOriginIsolated}), asked ${threads}`);
  }
  return r.cpuSeconds / r.wallSeconds;
}

export interface E2eOptions {
  /** the GGUF's URL on the page's server (/models/<name>) */
  model: string;
  shape: E2eShape;
  /** the GGUF's context (wllama's n_ctx): at least the deepest depth + steps */
  context: number;
  depths: number[];
  steps: number;
  threads: number[];
  /** wllama's cache types */
  caches: string[];
  onProgress?: (message: string) => void;
}

export async function runE2e(page: PeerPage, o: E2eOptions): Promise<{ rows: E2eRow[]; variant: string }> {
  const say = o.onProgress ?? (() => {});
  const kvDim = o.shape.kvHeads * (o.shape.dim / o.shape.heads);
  const rows: E2eRow[] = [];
  let variant = '';
  for (const threads of o.threads) {
    const r = await page.run({ kind: 'kivi-generate', model: o.model, threads, cache: E2E_KIVI_CACHE, depths: o.depths, steps: o.steps, word: WORD });
    if (r.threads !== threads || !r.crossOriginIsolated) throw new Error(`kivi-wasm in the page ran ${r.threads} thread(s) (cross-origin isolated: ${r.crossOriginIsolated}), asked ${threads}`);
    variant = r.variant;
    let previous = 0;
    for (const row of r.rows) {
      if (row.cacheTokens !== row.depth + o.steps - 1) throw new Error(`kivi-wasm: the cache holds ${row.cacheTokens} tokens after generating at depth ${row.depth}, expected ${row.depth + o.steps - 1}`);
      rows.push({ engine: 'kivi-wasm', cache: 'KIVI-2', threads, depth: row.depth, tokensPerSecond: row.tokensPerSecond, msPerToken: row.msPerToken, cacheBytes: row.cacheBytes, allocatedBytes: row.cacheBytes, fillSeconds: row.fillMs / 1000, cpuPerWall: r.cpuSeconds / r.wallSeconds, generated: row.generated });
      say(`e2e kivi-wasm KIVI-2 ${threads} thread(s) depth ${row.depth}: ${row.tokensPerSecond.toFixed(1)} tokens/s, cache ${(row.cacheBytes / 2 ** 20).toFixed(2)} MiB, filled from ${previous} in ${(row.fillMs / 1000).toFixed(1)} s`);
      previous = row.depth;
    }
    for (const cache of o.caches) {
      const w = await page.run({ kind: 'decode', model: o.model, nCtx: o.context, threads, cacheK: cache, cacheV: cache, flashAttention: true, depths: o.depths, steps: o.steps, word: WORD });
      const cpuPerWall = checkWllamaThreads(w, threads);
      if (!w.kvCache || w.kvCache.typeK !== cache || w.kvCache.typeV !== cache || w.kvCache.layers !== o.shape.layers || w.kvCache.cells < o.depths.at(-1)! + o.steps) {
        throw new Error(`wllama's KV cache is not the one asked for (${cache}, ${o.shape.layers} layers, ≥ ${o.depths.at(-1)! + o.steps} cells): ${JSON.stringify(w.kvCache)}`);
      }
      for (const row of w.rows) {
        if (row.timings.predicted_n !== o.steps) throw new Error(`wllama generated ${row.timings.predicted_n} tokens at depth ${row.depth}, asked ${o.steps}`);
        const ms = msPerStep(row.timings);
        rows.push({
          engine: 'wllama', cache, threads, depth: row.depth, tokensPerSecond: 1000 / ms, msPerToken: ms,
          cacheBytes: row.depth * o.shape.layers * kvDim * 2 * GGML_BYTES[cache]!, allocatedBytes: w.kvCache.mib * 2 ** 20,
          fillSeconds: row.timings.prompt_ms / 1000, cpuPerWall, generated: row.tokens ?? [],
        });
        say(`e2e wllama ${cache} ${threads} thread(s) depth ${row.depth}: ${(1000 / ms).toFixed(1)} tokens/s, prefill of ${row.timings.prompt_n} tokens ${(row.timings.prompt_ms / 1000).toFixed(1)} s`);
      }
      if (threads > 1 && cpuPerWall < 1.3) say(`warning: wllama at ${threads} threads used ${cpuPerWall.toFixed(2)} CPU seconds per second`);
    }
  }
  return { rows, variant };
}

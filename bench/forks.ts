// (5) Forks: the memory of 16 forks of a 4K-token Llama-3-8B-shaped prompt (32 layers, 8 kv heads,
// D 128, KIVI-2), each then decoding 256 tokens of its own, against 16 separate caches fed the same
// tokens. Memory is counted two ways: what the caches hold (byteLength, shared blocks once) and what
// the stored tokens take (stats().bytes, shared blocks once). Deterministic: no timing.

import { Kivi, type CacheOptions, type KiviCache } from '../src/index';
import { Rng, syntheticKv } from '../src/reference';
import { progress } from './progress';

export const FORK_PROMPT = 4096;
export const FORK_DECODE = 256;
export const FORK_COUNT = 16;
export const FORK_OPTIONS: CacheOptions = { layers: 32, kvHeads: 8, queryHeads: 32, headDim: 128, bits: 2, groupSize: 32, residual: 128 };

export interface ForkResults {
  options: CacheOptions;
  prompt: number;
  decode: number;
  count: number;
  /** separate caches: sum of byteLength, and of stats().bytes */
  separate: { byteLength: number; storedBytes: number };
  /** forks: the original's byteLength plus each fork's own (byteLength − sharedByteLength); stored bytes likewise */
  forked: { byteLength: number; storedBytes: number; sharedByteLength: number };
}

export function measureForks(kivi: Kivi): ForkResults {
  const o = FORK_OPTIONS;
  const width = o.kvHeads * o.headDim;
  const rng = new Rng(4096);
  // The same tokens for every layer (memory does not depend on the values): a prompt and one
  // decode token per step, different for each sequence.
  const promptKeys = syntheticKv(rng, FORK_PROMPT, o.kvHeads, o.headDim, 'keys');
  const promptValues = syntheticKv(rng, FORK_PROMPT, o.kvHeads, o.headDim, 'values');
  const steps = Array.from({ length: FORK_COUNT }, () => [syntheticKv(rng, FORK_DECODE, o.kvHeads, o.headDim, 'keys'), syntheticKv(rng, FORK_DECODE, o.kvHeads, o.headDim, 'values')] as const);
  const prefill = (cache: KiviCache) => {
    for (let l = 0; l < o.layers; l++) cache.append(l, promptKeys, promptValues);
  };
  const decode = (cache: KiviCache, i: number) => {
    const [keys, values] = steps[i]!;
    for (let t = 0; t < FORK_DECODE; t++) {
      for (let l = 0; l < o.layers; l++) cache.append(l, keys.subarray(t * width, (t + 1) * width), values.subarray(t * width, (t + 1) * width));
    }
  };

  progress(`forks: ${FORK_COUNT} separate caches of ${FORK_PROMPT} + ${FORK_DECODE} tokens…`);
  const separate = { byteLength: 0, storedBytes: 0 };
  for (let i = 0; i < FORK_COUNT; i++) {
    const cache = kivi.createCache(o);
    prefill(cache);
    decode(cache, i);
    separate.byteLength += cache.byteLength;
    separate.storedBytes += cache.stats().bytes;
    cache.dispose(); // one at a time: the sum is what 16 would hold together
  }

  progress(`forks: one prompt, ${FORK_COUNT} forks…`);
  const base = kivi.createCache(o);
  prefill(base);
  const forks = Array.from({ length: FORK_COUNT }, () => base.fork());
  forks.forEach((fork, i) => decode(fork, i));
  const forked = { byteLength: base.byteLength, storedBytes: base.stats().bytes, sharedByteLength: base.sharedByteLength };
  for (const fork of forks) {
    forked.byteLength += fork.byteLength - fork.sharedByteLength;
    forked.storedBytes += fork.stats().bytes - fork.stats().sharedBytes;
  }
  for (const fork of forks) fork.dispose();
  base.dispose();
  progress(`forks: separate ${(separate.byteLength / 2 ** 20).toFixed(0)} MiB held (${(separate.storedBytes / 2 ** 20).toFixed(0)} MiB stored), ` +
    `forked ${(forked.byteLength / 2 ** 20).toFixed(0)} MiB held (${(forked.storedBytes / 2 ** 20).toFixed(0)} MiB stored)`);
  return { options: o, prompt: FORK_PROMPT, decode: FORK_DECODE, count: FORK_COUNT, separate, forked };
}

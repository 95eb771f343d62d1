// Correctness checks run before anything is timed: every implementation's output against float64
// attention (src/reference.ts) over the same data.
//
// - f32 implementations (kivi bits 32, plain JS, onnxruntime-web): against attentionF64 over the exact
//   f32 keys and values, relative L2 < 1e-4.
// - quantized caches: against the same exact result with a loose sanity bound (the cost of quantization:
//   2-bit < 0.5, 4-bit < 0.1, 8-bit < 0.02), and, at the --exact-contexts, against attentionF64 over the
//   cache's own dequantized keys and values (read back with cache.inspect(), as scripts/demo.ts does
//   for its "kernel error"), relative L2 < 2e-3 (SPEC.md's bound for the kernels).

import type { GroupListing, KiviCache } from '../src/index';
import { attentionF64, f16BitsToF32 } from '../src/reference';
import type { BenchData } from './data';

export const F32_TOLERANCE = 1e-4;
export const KERNEL_TOLERANCE = 2e-3;
export const SANITY_BOUND: Record<2 | 4 | 8, number> = { 2: 0.5, 4: 0.1, 8: 0.02 };

/** Token-major [tokens][kvHeads][D] copy of `exact` with the quantized tokens replaced by code·s+z. */
function dequantize(listing: GroupListing, exact: Float32Array, tokens: number, kvHeads: number, D: number): Float64Array {
  const into = Float64Array.from(exact.subarray(0, tokens * kvHeads * D));
  const n = listing.groupLength;
  const groups = listing.scales.length;
  for (let g = 0; g < groups; g++) {
    const s = f16BitsToF32(listing.scales[g]!);
    const z = f16BitsToF32(listing.zeros[g]!);
    if (listing.grouping === 'channel') {
      // chunk of n tokens → kv head → channel: n codes in token order
      const channel = g % D;
      const head = Math.floor(g / D) % kvHeads;
      const chunk = Math.floor(g / (D * kvHeads));
      for (let t = 0; t < n; t++) into[((chunk * n + t) * kvHeads + head) * D + channel] = listing.codes[g * n + t]! * s + z;
    } else {
      // token → kv head → group of n channels: n codes in channel order
      const perHead = D / n;
      const group = g % perHead;
      const head = Math.floor(g / perHead) % kvHeads;
      const token = Math.floor(g / (perHead * kvHeads));
      const base = (token * kvHeads + head) * D + group * n;
      for (let c = 0; c < n; c++) into[base + c] = listing.codes[g * n + c]! * s + z;
    }
  }
  return into;
}

/** float64 attention of data.query over the cache's dequantized keys and values (the first `tokens` of data) */
export function dequantizedAttention(cache: KiviCache, data: BenchData, tokens: number): Float64Array {
  const { queryHeads, kvHeads, headDim: D } = data.shape;
  const listing = cache.inspect(0);
  const keys = listing.keys ? dequantize(listing.keys, data.keys, tokens, kvHeads, D) : data.keys;
  const values = listing.values ? dequantize(listing.values, data.values, tokens, kvHeads, D) : data.values;
  return attentionF64(data.query, keys, values, tokens, 1, queryHeads, kvHeads, D);
}

export function exactAttention(data: BenchData, tokens: number): Float64Array {
  const { queryHeads, kvHeads, headDim: D } = data.shape;
  return attentionF64(data.query, data.keys, data.values, tokens, 1, queryHeads, kvHeads, D);
}

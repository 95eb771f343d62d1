// Correctness checks run before anything is timed: every implementation's output against float64
// attention (src/reference.ts) over the same data.
//
// - f32 implementations (kivi bits 32, plain JS, onnxruntime-web): against attentionF64 over the exact
//   f32 keys and values, relative L2 < 1e-4.
// - quantized caches: against the same exact result with a loose sanity bound (the cost of quantization:
//   2-bit < 0.5, 4-bit < 0.1, 8-bit < 0.02), and, at the --exact-contexts, against attentionF64 over the
//   cache's own dequantized keys and values (read back with cache.inspect(), as scripts/demo.ts does
//   for its "kernel error"), relative L2 < 2e-3 (SPEC.md's bound for the kernels).

import type { KiviCache } from '../src/index';
import { attentionF64, dequantizeListing } from '../src/reference';
import type { BenchData } from './data';

export const F32_TOLERANCE = 1e-4;
export const KERNEL_TOLERANCE = 2e-3;
export const SANITY_BOUND: Record<2 | 4 | 8, number> = { 2: 0.5, 4: 0.1, 8: 0.02 };


/** float64 attention of data.query over the cache's dequantized keys and values (the first `tokens` of data) */
export function dequantizedAttention(cache: KiviCache, data: BenchData, tokens: number): Float64Array {
  const { queryHeads, kvHeads, headDim: D } = data.shape;
  const listing = cache.inspect(0);
  const keys = listing.keys ? dequantizeListing(listing.keys, data.keys, tokens, kvHeads, D) : data.keys;
  const values = listing.values ? dequantizeListing(listing.values, data.values, tokens, kvHeads, D) : data.values;
  return attentionF64(data.query, keys, values, tokens, 1, queryHeads, kvHeads, D);
}

export function exactAttention(data: BenchData, tokens: number): Float64Array {
  const { queryHeads, kvHeads, headDim: D } = data.shape;
  return attentionF64(data.query, data.keys, data.values, tokens, 1, queryHeads, kvHeads, D);
}

// kivi-wasm kernels: one AssemblyScript source, three builds (scripts/build-wasm.mjs):
//   scalar        no SIMD
//   simd          SIMD128                  (ASC_FEATURE_SIMD)
//   relaxed-simd  SIMD128 + relaxed SIMD   (ASC_FEATURE_RELAXED_SIMD)
//
// Kernel names follow `<input>_<output>_<operation>`: f32 = unquantized rows, qchannel = key
// blocks quantized per channel, qtoken = rows quantized per token (layouts in quantize.ts). The
// build a kernel runs in is the variant; the names mean the same thing in every build. The simd and
// relaxed-simd variants also have a threaded build (on a shared memory; jobs.ts).
//
// Memory: the TypeScript facade owns every allocation through alloc/realloc/free (AssemblyScript's
// TLSF allocator, 16-byte aligned); kernels never allocate.

export { f32_qchannel_quantize, f32_qtoken_quantize } from './quantize';
export {
  f32_f32_scores, qchannel_f32_scores, qtoken_f32_scores, f32_softmax_partial,
  f32_f32_accumulate, qtoken_f32_accumulate, qchannel_f32_accumulate,
} from './attention';
export { run_job } from './jobs';
export { f32_first_invalid, f32_scatter_heads } from './memory';
export { selfTest } from './selftest';
export { f16_f32_matvec, matvec_scratch_bytes, q4_0_f32_matvec, q8_0_f32_matvec } from './matvec';

/** 16-byte aligned block of `bytes` bytes; grows the memory if needed (traps if it cannot). */
export function alloc(bytes: usize): usize {
  return heap.alloc(bytes);
}

/** Resizes a block from alloc, keeping its contents; may move it. */
export function realloc(ptr: usize, bytes: usize): usize {
  return heap.realloc(ptr, bytes);
}

export function free(ptr: usize): void {
  heap.free(ptr);
}

/** Which instruction sets this build was compiled for: bit 0 SIMD128, bit 1 relaxed SIMD, bit 2
 *  threads (a shared memory, atomics, and data copied in by init_memory; scripts/build-wasm.mjs). */
export function features(): i32 {
  return (ASC_FEATURE_SIMD ? 1 : 0) | (ASC_FEATURE_RELAXED_SIMD ? 2 : 0) | (ASC_FEATURE_THREADS ? 4 : 0);
}

// The one list of wasm builds. It drives loading (best first), the test suite (every build is tested
// against the reference) and the benchmarks (every build the runtime runs is measured).
//
// A variant is an instruction set; the simd and relaxed-simd variants each have two builds: one for
// a single thread, and one on a shared memory with atomics, which the worker pool runs on several
// threads (scripts/build-wasm.mjs, src/pool/). Both compute the same bits.

export type VariantName = 'relaxed-simd' | 'simd' | 'scalar';
export type BuildName = VariantName | 'relaxed-simd-threads' | 'simd-threads';

export interface Variant {
  readonly name: VariantName;
  /** Bits of the module's `features()` export: 1 = SIMD128, 2 = relaxed SIMD (4 = threads, per build). */
  readonly features: number;
  readonly description: string;
}

export interface Build {
  readonly name: BuildName;
  readonly variant: Variant;
  /** On a shared memory, for the worker pool. */
  readonly threaded: boolean;
}

/** Feature bit of the threaded builds. */
export const THREADS_FEATURE = 4;

/** In order of preference: `Kivi.load()` picks the first one the runtime validates and that passes
 *  its known-answer check. */
export const VARIANTS: readonly Variant[] = [
  { name: 'relaxed-simd', features: 3, description: 'SIMD128 plus relaxed SIMD (fused multiply-add, integer dot products)' },
  { name: 'simd', features: 1, description: 'SIMD128' },
  { name: 'scalar', features: 0, description: 'no SIMD, for runtimes without it' },
];

export const BUILDS: readonly Build[] = VARIANTS.flatMap((variant): Build[] => [
  ...(variant.name === 'scalar' ? [] : [{ name: `${variant.name}-threads` as BuildName, variant, threaded: true }]),
  { name: variant.name, variant, threaded: false },
]);

export function variantByFeatures(features: number): Variant | undefined {
  return VARIANTS.find((v) => v.features === (features & ~THREADS_FEATURE));
}

export function buildByFeatures(features: number): Build | undefined {
  const threaded = (features & THREADS_FEATURE) !== 0;
  return BUILDS.find((b) => b.variant.features === (features & ~THREADS_FEATURE) && b.threaded === threaded);
}

/** The build of a variant, threaded or not (scalar has no threaded build). */
export function buildOf(variant: VariantName, threaded: boolean): Build | undefined {
  return BUILDS.find((b) => b.variant.name === variant && b.threaded === threaded);
}

// The one list of wasm builds. It drives loading (best first), the test suite (every build is tested
// against the reference) and the benchmarks (every build the runtime runs is measured).

export type VariantName = 'relaxed-simd' | 'simd' | 'scalar';

export interface Variant {
  readonly name: VariantName;
  /** Bits of the module's `features()` export: 1 = SIMD128, 2 = relaxed SIMD. */
  readonly features: number;
  readonly description: string;
}

/** In order of preference: `Kivi.load()` picks the first one the runtime validates and that passes
 *  its known-answer check. */
export const VARIANTS: readonly Variant[] = [
  { name: 'relaxed-simd', features: 3, description: 'SIMD128 plus relaxed SIMD (fused multiply-add, integer dot products)' },
  { name: 'simd', features: 1, description: 'SIMD128' },
  { name: 'scalar', features: 0, description: 'no SIMD, for runtimes without it' },
];

export function variantByFeatures(features: number): Variant | undefined {
  return VARIANTS.find((v) => v.features === features);
}

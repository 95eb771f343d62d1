// Every build against the float64 reference (src/reference.ts): codes and stored halves
// bit-identical, attention within SPEC.md's 2e-3 relative L2 of a float64 evaluation over the same
// dequantized cache, and stats() equal to the reference's flush schedule after every step.
import { beforeAll, describe, expect, it } from 'vitest';
import type { CacheOptions, Kivi, VariantName } from '../src/index';
import { attentionF64, ReferenceCache, Rng, relativeL2, syntheticKv } from '../src/reference';
import { expectSameGroups, loadAllVariants, referenceOptions, VARIANT_NAMES } from './helpers';

const TOLERANCE = 2e-3;

interface Scenario {
  name: string;
  options: CacheOptions;
  /** Tokens per append, in order; each append goes to every layer. */
  steps: number[];
  /** Replaces the generated data of a step (edge values). */
  edit?: (step: number, keys: Float32Array, values: Float32Array, o: Required<Pick<CacheOptions, 'kvHeads' | 'headDim'>>) => void;
  /** Multiplies the queries: keeps logits in a range where f32 itself is accurate to 2e-3 when keys
   *  reach ±65504 (a logit of 1e4 has an f32 ulp of 1e-3, whatever the kernel). */
  queryScale?: number;
  /** Measure the error against the size of the terms that cancel (attention over |v'|) instead of
   *  the size of the result: values of ±65504 next to values of ~1 in one group make the weighted
   *  sum cancel to a small result, so any rounding of the weights or of f32 sums is magnified by
   *  the ratio; this is the condition number of the sum, not a property of the kernel. */
  conditioned?: boolean;
}

const ones = (n: number) => Array.from({ length: n }, () => 1);

const SCENARIOS: Scenario[] = [
  // Prefill in one append: n below, equal to, above, and a multiple of G and R; then decode.
  { name: 'MHA 2-bit G32 R64: prefill below G', options: { layers: 1, kvHeads: 2, headDim: 32, bits: 2, groupSize: 32, residual: 64 }, steps: [31, ...ones(40)] },
  { name: 'MHA 2-bit G32 R64: prefill = G', options: { layers: 1, kvHeads: 2, headDim: 32, bits: 2, groupSize: 32, residual: 64 }, steps: [32, ...ones(3), 32] },
  { name: 'MHA 2-bit G32 R64: prefill = R, then decode past two flushes', options: { layers: 2, kvHeads: 2, headDim: 32, bits: 2, groupSize: 32, residual: 64 }, steps: [64, ...ones(140)] },
  { name: 'MHA 2-bit G32 R64: prefill = 3R+5 (multiple of G plus)', options: { layers: 1, kvHeads: 2, headDim: 32, bits: 2, groupSize: 32, residual: 64 }, steps: [197, ...ones(70)] },
  { name: 'GQA 4-bit G32 R128 defaults, mixed chunks', options: { layers: 2, kvHeads: 2, headDim: 64, queryHeads: 8, bits: 4 }, steps: [100, 1, 1, 30, 1, 64, 5, 128, 3, 256, ...ones(5)] },
  { name: 'GQA 8-bit G16 R32', options: { layers: 1, kvHeads: 2, headDim: 32, queryHeads: 4, bits: 8, groupSize: 16, residual: 32 }, steps: [40, ...ones(40), 33] },
  { name: 'GQA 8-bit G32 D64 (16-bit path for 8-bit codes)', options: { layers: 1, kvHeads: 2, headDim: 64, queryHeads: 8, bits: 8, groupSize: 32, residual: 32 }, steps: [80, ...ones(40), 9] },
  { name: 'GQA 4 rows, D = 8, 4-bit G32 (short last chunk)', options: { layers: 1, kvHeads: 2, headDim: 8, queryHeads: 8, bits: 4, groupSize: 32, residual: 32 }, steps: [100, ...ones(40)] },
  { name: 'GQA 4-bit G32 D24 (a 16- and an 8-channel chunk, value groups of 24), multi-token queries', options: { layers: 1, kvHeads: 3, headDim: 24, queryHeads: 6, bits: 4, groupSize: 32, residual: 32 }, steps: [70, 5, 7, ...ones(20)] },
  { name: 'MQA 2-bit D128 G32 R32', options: { layers: 1, kvHeads: 1, headDim: 128, queryHeads: 4, bits: 2, groupSize: 32, residual: 32 }, steps: [96, ...ones(35), 7] },
  // R = 0: every whole G-token chunk is quantized at the next append.
  { name: 'R = 0, 2-bit G32', options: { layers: 1, kvHeads: 2, headDim: 32, bits: 2, groupSize: 32, residual: 0 }, steps: [70, ...ones(40), 64, 1] },
  { name: 'R = 0, 4-bit G8 D8 (tiny heads)', options: { layers: 1, kvHeads: 4, headDim: 8, queryHeads: 8, bits: 4, groupSize: 8, residual: 0 }, steps: [20, ...ones(20)] },
  // Tiny head dims as in the real models (D = 8, 16): value groups of min(G, D) channels.
  { name: 'D = 8, 2-bit G32 R64 (value group = 8)', options: { layers: 1, kvHeads: 4, headDim: 8, queryHeads: 8, bits: 2, groupSize: 32, residual: 64 }, steps: [150, ...ones(70)] },
  { name: 'D = 16, 8-bit G64 R128', options: { layers: 1, kvHeads: 4, headDim: 16, bits: 8, groupSize: 64, residual: 128 }, steps: [300, ...ones(10)] },
  // Sinks: the first S tokens stay f32 and do not count toward R.
  { name: 'sinks 4, 2-bit G32 R64, prefill', options: { layers: 1, kvHeads: 2, headDim: 32, bits: 2, groupSize: 32, residual: 64, sinkTokens: 4 }, steps: [100, ...ones(70)] },
  { name: 'sinks 5 filled across appends', options: { layers: 1, kvHeads: 2, headDim: 32, bits: 2, groupSize: 16, residual: 32, sinkTokens: 5 }, steps: [1, 2, 1, 3, ...ones(60), 40] },
  // Sliding key window: quantize G keys at a time.
  { name: 'sliding window 2-bit G32 R128', options: { layers: 1, kvHeads: 2, headDim: 32, bits: 2, keyWindow: 'sliding' }, steps: [300, ...ones(80), 45] },
  { name: 'sliding window R = G with sinks', options: { layers: 1, kvHeads: 2, headDim: 32, bits: 4, groupSize: 16, residual: 16, keyWindow: 'sliding', sinkTokens: 2 }, steps: [50, ...ones(40)] },
  // The paper's ablations.
  { name: 'ablation: keys per token', options: { layers: 1, kvHeads: 2, headDim: 64, bits: 2, groupSize: 32, residual: 64, keyGrouping: 'token' }, steps: [100, ...ones(70)] },
  { name: 'ablation: values per channel', options: { layers: 1, kvHeads: 2, headDim: 64, bits: 2, groupSize: 32, residual: 64, valueGrouping: 'channel' }, steps: [100, ...ones(70)] },
  { name: 'ablation: both, R = 0, GQA', options: { layers: 1, kvHeads: 2, headDim: 32, queryHeads: 4, bits: 4, groupSize: 16, residual: 0, keyGrouping: 'token', valueGrouping: 'channel' }, steps: [40, ...ones(20)] },
  // bits 32: nothing is ever quantized.
  { name: 'f32 cache (bits 32)', options: { layers: 2, kvHeads: 2, headDim: 32, queryHeads: 4, bits: 32 }, steps: [300, ...ones(10), 77] },
  // Edge values: a constant group (per channel and per token), numbers at ±65504, tiny magnitudes.
  {
    name: 'constant groups and values at ±65504',
    options: { layers: 1, kvHeads: 2, headDim: 32, bits: 2, groupSize: 32, residual: 32 },
    steps: [64, ...ones(40)],
    queryScale: 1e-4,
    conditioned: true,
    edit: (step, keys, values, { kvHeads, headDim }) => {
      const tokens = keys.length / (kvHeads * headDim);
      for (let t = 0; t < tokens; t++) {
        const row = t * kvHeads * headDim;
        keys[row + 3] = 1.5; // channel 3 of head 0 is constant: its key groups have scale 0
        keys[row + 5] = (t + step) % 2 === 0 ? 65504 : -65504; // full half range
        keys[row + headDim + 7] = 3e-6 * ((t % 5) - 2); // subnormal halves
        for (let c = 0; c < headDim; c++) values[row + headDim + c] = -2.25; // head 1's value rows are constant
        values[row + 9] = t % 3 === 0 ? -65504 : 65504;
      }
    },
  },
];

/** ||got − want|| / ||attention over |v'|||: the error relative to the magnitude of the summed terms. */
function conditionedError(got: Float32Array, want: Float64Array, ref: ReferenceCache, layer: number, queries: Float32Array, queryHeads: number): number {
  const { kvHeads, headDim } = ref.options;
  const tokens = ref.stats(layer).tokens;
  const magnitudes = attentionF64(queries, ref.dequantizedKeys(layer), ref.dequantizedValues(layer).map(Math.abs), tokens,
    queries.length / (queryHeads * headDim), queryHeads, kvHeads, headDim);
  let error = 0;
  let size = 0;
  for (let i = 0; i < want.length; i++) {
    error += (got[i]! - want[i]!) ** 2;
    size += magnitudes[i]! ** 2;
  }
  return Math.sqrt(error / size);
}

describe.each(VARIANT_NAMES)('%s build against the reference', (variantName: VariantName) => {
  let kivi: Kivi;
  beforeAll(async () => {
    kivi = (await loadAllVariants()).get(variantName)!;
  });

  it.each(SCENARIOS.map((s) => [s.name, s] as const))('%s', (_name, scenario) => {
    const o = scenario.options;
    const cache = kivi.createCache(o);
    const ref = new ReferenceCache(referenceOptions(o));
    const queryHeads = o.queryHeads ?? o.kvHeads;
    const rng = new Rng(0x5eed ^ scenario.name.length);
    let worst = 0;
    scenario.steps.forEach((n, step) => {
      for (let layer = 0; layer < o.layers; layer++) {
        const keys = syntheticKv(rng, n, o.kvHeads, o.headDim, 'keys');
        const values = syntheticKv(rng, n, o.kvHeads, o.headDim, 'values');
        scenario.edit?.(step, keys, values, o);
        cache.append(layer, keys, values);
        ref.append(layer, keys, values);
        const { bytes: _b, sharedBytes: _s, bitsPerElement: _e, ...counts } = cache.stats(layer);
        expect(counts, `stats after step ${step} (append ${n}), layer ${layer}`).toEqual(ref.stats(layer));
        expect(cache.tokens(layer)).toBe(ref.stats(layer).tokens);
        // The newest min(n, 3) tokens query the cache (causal), and sometimes just the newest.
        for (const q of new Set([Math.min(n, 3), 1])) {
          const queries = syntheticKv(rng, q, queryHeads, o.headDim, 'queries').map((x) => x * (scenario.queryScale ?? 1));
          const got = cache.attend(layer, queries);
          const want = ref.attend(layer, queries);
          const error = scenario.conditioned ? conditionedError(got, want, ref, layer, queries, queryHeads) : relativeL2(got, want);
          worst = Math.max(worst, error);
          expect(error, `attention error after step ${step}, layer ${layer}, ${q} queries`).toBeLessThan(TOLERANCE);
        }
      }
    });
    for (let layer = 0; layer < o.layers; layer++) {
      const stored = cache.inspect(layer);
      if ((o.bits ?? 2) === 32) {
        expect(stored).toEqual({ keys: null, values: null });
      } else {
        expectSameGroups(stored.keys, ref.keyGroups(layer), `keys of layer ${layer}`);
        expectSameGroups(stored.values, ref.valueGroups(layer), `values of layer ${layer}`);
      }
    }
    expect(worst).toBeGreaterThan(0); // the comparison really ran on nonzero data
    cache.dispose();
  });
});

describe('the flush schedule of SPEC.md, checked directly', () => {
  let kivi: Kivi;
  beforeAll(async () => {
    kivi = (await loadAllVariants()).get('simd')!;
  });
  const shape = { layers: 1, kvHeads: 1, headDim: 8 } as const;
  const append = (cache: ReturnType<Kivi['createCache']>, n: number, rng: Rng) =>
    cache.append(0, syntheticKv(rng, n, 1, 8, 'keys'), syntheticKv(rng, n, 1, 8, 'values'));

  it('prefill of T then one-token decode: keys in 1..R, values min(len, R+1), T mod R keys and R values f32', () => {
    const R = 64;
    const cache = kivi.createCache({ ...shape, groupSize: 32, residual: R });
    const rng = new Rng(1);
    const T = 150;
    append(cache, T, rng);
    expect(cache.stats(0)).toMatchObject({ residualKeys: T, residualValues: T, quantizedKeys: 0 }); // a prefill attends exactly
    append(cache, 1, rng);
    expect(cache.stats(0)).toMatchObject({ residualKeys: (T % R) + 1, residualValues: R + 1 });
    for (let len = T + 2; len < T + 200; len++) {
      append(cache, 1, rng);
      const s = cache.stats(0);
      expect(s.residualKeys).toBeGreaterThanOrEqual(1);
      expect(s.residualKeys).toBeLessThanOrEqual(R);
      expect(s.residualValues).toBe(Math.min(len, R + 1));
      expect(s.quantizedKeys % 32).toBe(0);
    }
  });

  it('sliding window keeps R-G+1..R keys in f32', () => {
    const cache = kivi.createCache({ ...shape, groupSize: 16, residual: 64, keyWindow: 'sliding' });
    const rng = new Rng(2);
    append(cache, 64, rng);
    for (let i = 0; i < 100; i++) {
      append(cache, 1, rng);
      const s = cache.stats(0);
      expect(s.residualKeys).toBeGreaterThanOrEqual(64 - 16 + 1);
      expect(s.residualKeys).toBeLessThanOrEqual(64);
    }
  });

  it('bits 32 quantizes nothing; sinks stay out of the window', () => {
    const f32 = kivi.createCache({ ...shape, bits: 32 });
    const rng = new Rng(3);
    for (const n of [100, 1, 1, 300]) append(f32, n, rng);
    expect(f32.stats(0)).toMatchObject({ tokens: 402, quantizedKeys: 0, quantizedValues: 0, residualKeys: 402, bitsPerElement: 32 });
    const sinks = kivi.createCache({ ...shape, groupSize: 8, residual: 8, sinkTokens: 3 });
    append(sinks, 2, rng);
    append(sinks, 30, rng);
    append(sinks, 1, rng);
    expect(sinks.stats(0)).toMatchObject({ tokens: 33, sinkTokens: 3, quantizedKeys: 24, residualKeys: 6, quantizedValues: 21, residualValues: 9 });
  });
});

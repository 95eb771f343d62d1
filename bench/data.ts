// Benchmark data: structured synthetic post-RoPE keys and values (never zeros), and one query token.
//
// Like real keys and values (KIVI Fig. 2) and like the data of scripts/demo.ts (written independently
// here), per kv head, token-major [tokens][kvHeads][D]:
//   x_t = mean + loadings · f_t + NOISE · noise_t
//   mean      N(0, 1) per channel; for keys, 2-4 outlier channels per head with mean ±(4..8)
//   f_t       RANK factors, each an AR(1) process over tokens (correlation 0.95, unit variance)
//   loadings  N(0, 1/RANK) per channel and factor (outlier key channels: 1.5..3 times larger)
//   query     N(0, a²) per number, a chosen per kv head so that the logits q·k/sqrt(D) have a standard
//             deviation of LOGIT_STD over tokens (attention neither one-hot nor flat, as in trained models)
// Each kv head has its own generator, so the first n tokens are the same whatever the total length:
// a context of N tokens is a prefix of the longest one.

import { Rng } from '../src/reference';
import type { Shape } from './options';

const RANK = 8;
const FACTOR_CORRELATION = 0.95;
const NOISE = 0.35;
const LOGIT_STD = 1.5;
export const DATA_SEED = 20240205;

export const DATA_DESCRIPTION = `structured synthetic data (bench/data.ts, seed ${DATA_SEED}): per kv head, channel means ` +
  `(keys: 2-4 outlier channels at ±4..8) + ${RANK} factors drifting over tokens (AR(1), ${FACTOR_CORRELATION}) + ${NOISE} noise; ` +
  `query scaled to a logit std of ${LOGIT_STD} over tokens`;

export interface BenchData {
  readonly shape: Shape;
  readonly tokens: number;
  /** [tokens][kvHeads][D] */
  readonly keys: Float32Array;
  readonly values: Float32Array;
  /** one query token [queryHeads][D] */
  readonly query: Float32Array;
}

interface HeadModel {
  mean: Float64Array;
  loadings: Float64Array; // [D][RANK]
  /** sum over channels of the variance over tokens */
  varianceSum: number;
}

function headModel(rng: Rng, D: number, outliers: boolean): HeadModel {
  const mean = Float64Array.from({ length: D }, () => rng.normal());
  const loadings = Float64Array.from({ length: D * RANK }, () => rng.normal() / Math.sqrt(RANK));
  if (outliers) {
    const count = 2 + Math.floor(rng.next() * 3);
    const channels = new Set<number>();
    while (channels.size < count) channels.add(Math.floor(rng.next() * D));
    for (const c of channels) {
      mean[c] = (rng.next() < 0.5 ? -1 : 1) * (4 + 4 * rng.next());
      const spread = 1.5 + 1.5 * rng.next();
      for (let r = 0; r < RANK; r++) loadings[c * RANK + r]! *= spread;
    }
  }
  let varianceSum = 0;
  for (let i = 0; i < D * RANK; i++) varianceSum += loadings[i]! ** 2;
  varianceSum += D * NOISE * NOISE;
  return { mean, loadings, varianceSum };
}

function headSeed(seed: number, kind: number, head: number): number {
  return (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) + Math.imul(kind * 4099 + head + 1, 0xc2b2ae35)) >>> 0;
}

/** keys (kind 0) or values (kind 1); returns the data and each head's variance sum */
function structured(seed: number, kind: 0 | 1, tokens: number, kvHeads: number, D: number): { data: Float32Array; varianceSums: number[] } {
  const data = new Float32Array(tokens * kvHeads * D);
  const varianceSums: number[] = [];
  const innovation = Math.sqrt(1 - FACTOR_CORRELATION ** 2);
  const factors = new Float64Array(RANK);
  for (let h = 0; h < kvHeads; h++) {
    const rng = new Rng(headSeed(seed, kind, h));
    const { mean, loadings, varianceSum } = headModel(rng, D, kind === 0);
    varianceSums.push(varianceSum);
    for (let r = 0; r < RANK; r++) factors[r] = rng.normal(); // stationary start: unit variance
    for (let t = 0; t < tokens; t++) {
      for (let r = 0; r < RANK; r++) factors[r] = FACTOR_CORRELATION * factors[r]! + innovation * rng.normal();
      const base = (t * kvHeads + h) * D;
      for (let c = 0, l = 0; c < D; c++, l += RANK) {
        let x = mean[c]! + NOISE * rng.normal();
        for (let r = 0; r < RANK; r++) x += loadings[l + r]! * factors[r]!;
        data[base + c] = x === 0 ? 1e-3 : x; // never exactly zero
      }
    }
  }
  return { data, varianceSums };
}

export function generate(shape: Shape, tokens: number, seed = DATA_SEED): BenchData {
  const { queryHeads, kvHeads, headDim: D } = shape;
  const keys = structured(seed, 0, tokens, kvHeads, D);
  const values = structured(seed, 1, tokens, kvHeads, D);
  // Var over tokens of q·k/sqrt(D) for q ~ N(0, a²): a² · (sum of channel variances) / D.
  const perKv = queryHeads / kvHeads;
  const rng = new Rng(headSeed(seed, 2, 0));
  const query = new Float32Array(queryHeads * D);
  for (let h = 0; h < queryHeads; h++) {
    const a = LOGIT_STD / Math.sqrt(keys.varianceSums[Math.floor(h / perKv)]! / D);
    for (let c = 0; c < D; c++) {
      let x = 0;
      while (x === 0) x = a * rng.normal();
      query[h * D + c] = x;
    }
  }
  return { shape, tokens, keys: keys.data, values: values.data, query };
}

/** Tokens [from, from + n) of keys or values; past the end of the data the tokens repeat from the start
 *  (used where only the amount of data matters: append throughput and bytes). */
export function tokenSlice(data: BenchData, array: Float32Array, from: number, n: number): Float32Array {
  const width = data.shape.kvHeads * data.shape.headDim;
  if (from + n <= data.tokens) return array.subarray(from * width, (from + n) * width);
  const out = new Float32Array(n * width);
  for (let t = 0; t < n; t++) {
    const src = (from + t) % data.tokens;
    out.set(array.subarray(src * width, (src + 1) * width), t * width);
  }
  return out;
}

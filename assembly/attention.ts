// Streaming attention kernels: scores over one stored segment, a row-wise softmax, and the weighted
// sum over one stored segment, each reading its storage directly (dequantization is fused: the
// group's scale is folded into the query for keys and into the softmax weight for values).
//
// Shared arguments:
//   rows     query rows that share this kv head (GQA group × query tokens), row-major [rows][D]
//   queries  f32 [rows][D], already multiplied by the attention scale
//   scores   f32, row m of this segment starts at scores + m·scoreStride·4
//   weights  the softmax output, same shape as scores
//   out      f32 [rows][D] accumulators; the kernels add into them
// Key block and value row layouts are drawn in quantize.ts.
//
// Unpacked codes of a block or token are written once to scratch and reused by every row, so the
// query heads of a GQA group (and the tokens of a multi-token query) share one unpack.

import { halvesToF32, f16ToF32 } from './half';
import { unpackPlanarF32 } from './pack';

// @ts-ignore: decorator
@inline function madd(a: v128, b: v128, acc: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, acc);
  return f32x4.add(f32x4.mul(a, b), acc);
}

// @ts-ignore: decorator
@inline function hsum(v: v128): f32 {
  const v2 = f32x4.add(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
  return f32x4.extract_lane(f32x4.add(v2, i32x4.shuffle(v2, v2, 1, 0, 3, 2)), 0);
}

/** Σ a[i]·b[i] over n f32. */
export function dotF32(n: i32, a: usize, b: usize): f32 {
  let i = 0;
  let sum: f32 = 0;
  if (ASC_FEATURE_SIMD) {
    let vacc0 = f32x4.splat(0), vacc1 = f32x4.splat(0), vacc2 = f32x4.splat(0), vacc3 = f32x4.splat(0);
    for (; i + 16 <= n; i += 16) {
      const offset = <usize>i << 2;
      vacc0 = madd(v128.load(a + offset), v128.load(b + offset), vacc0);
      vacc1 = madd(v128.load(a + offset, 16), v128.load(b + offset, 16), vacc1);
      vacc2 = madd(v128.load(a + offset, 32), v128.load(b + offset, 32), vacc2);
      vacc3 = madd(v128.load(a + offset, 48), v128.load(b + offset, 48), vacc3);
    }
    for (; i + 4 <= n; i += 4) {
      const offset = <usize>i << 2;
      vacc0 = madd(v128.load(a + offset), v128.load(b + offset), vacc0);
    }
    sum = hsum(f32x4.add(f32x4.add(vacc0, vacc1), f32x4.add(vacc2, vacc3)));
  }
  for (; i < n; i++) sum += load<f32>(a + (<usize>i << 2)) * load<f32>(b + (<usize>i << 2));
  return sum;
}

/** acc[i] += w·x[i] + bias over n f32. */
function axpbF32(n: i32, w: f32, bias: f32, x: usize, acc: usize): void {
  let i = 0;
  if (ASC_FEATURE_SIMD) {
    const vw = f32x4.splat(w);
    const vb = f32x4.splat(bias);
    for (; i + 4 <= n; i += 4) {
      const offset = <usize>i << 2;
      v128.store(acc + offset, f32x4.add(madd(vw, v128.load(x + offset), v128.load(acc + offset)), vb));
    }
  }
  for (; i < n; i++) {
    const offset = <usize>i << 2;
    store<f32>(acc + offset, load<f32>(acc + offset) + w * load<f32>(x + offset) + bias);
  }
}

/** dst[i] = a[i]·b[i] over n f32. */
function mulF32(n: i32, a: usize, b: usize, dst: usize): void {
  let i = 0;
  if (ASC_FEATURE_SIMD) {
    for (; i + 4 <= n; i += 4) {
      const offset = <usize>i << 2;
      v128.store(dst + offset, f32x4.mul(v128.load(a + offset), v128.load(b + offset)));
    }
  }
  for (; i < n; i++) store<f32>(dst + (<usize>i << 2), load<f32>(a + (<usize>i << 2)) * load<f32>(b + (<usize>i << 2)));
}

// ── scores ─────────────────────────────────────────────────────────────────────────────────────

/** Scores against f32 keys (sinks, the residual window, or the whole `bits: 32` cache).
 *  keys: f32 rows of D, `keyStride` bytes apart. */
export function f32_f32_scores(
  rows: i32, tokens: i32, D: i32, queries: usize, keys: usize, keyStride: usize, scores: usize, scoreStride: i32,
): void {
  const queryBytes = <usize>D << 2;
  const scoreRowBytes = <usize>scoreStride << 2;
  for (let t = 0; t < tokens; t++) {
    const key = keys + <usize>t * keyStride;
    for (let m = 0; m < rows; m++) {
      store<f32>(scores + <usize>m * scoreRowBytes + (<usize>t << 2), dotF32(D, queries + <usize>m * queryBytes, key));
    }
  }
}

/** Scores against per-channel key blocks (the KIVI default for keys).
 *  score_t = Σ_c (q_c·s_c)·code_{c,t} + Σ_c q_c·z_c, per block.
 *  scratch: 4·(G·D + 2·D + rows·D) bytes. */
export function qchannel_f32_scores(
  rows: i32, blocks: i32, D: i32, G: i32, bits: i32,
  queries: usize, keys: usize, blockStride: usize, scores: usize, scoreStride: i32, scratch: usize,
): void {
  const rowBytes = (G * bits) >> 3;
  const queryBytes = <usize>D << 2;
  const scoreRowBytes = <usize>scoreStride << 2;
  const scales = scratch;
  const zeros = scales + queryBytes;
  const scaledQueries = zeros + queryBytes;
  const codes = scaledQueries + <usize>rows * queryBytes;
  for (let b = 0; b < blocks; b++) {
    const block = keys + <usize>b * blockStride;
    halvesToF32(D, block, scales);
    halvesToF32(D, block + (<usize>D << 1), zeros);
    unpackPlanarF32(rowBytes * D, bits, block + (<usize>D << 2), codes);
    for (let m = 0; m < rows; m++) {
      const query = queries + <usize>m * queryBytes;
      mulF32(D, query, scales, scaledQueries);
      const offset = dotF32(D, query, zeros);
      const scoreRow = scores + <usize>m * scoreRowBytes + (<usize>(b * G) << 2);
      for (let t = 0; t < G; t++) {
        store<f32>(scoreRow + (<usize>t << 2), dotF32(D, scaledQueries, codes + <usize>t * queryBytes) + offset);
      }
    }
  }
}

/** Scores against per-token rows (keys in the `keyGrouping: 'token'` ablation).
 *  score = Σ_g s_g·(q_g · code_g) + z_g·Σ q_g.  scratch: 4·(D + rows·D/gv + 2·D/gv) bytes. */
export function qtoken_f32_scores(
  rows: i32, tokens: i32, D: i32, gv: i32, bits: i32,
  queries: usize, keys: usize, rowStride: usize, scores: usize, scoreStride: i32, scratch: usize,
): void {
  const groups = D / gv;
  const groupBytes = (gv * bits) >> 3;
  const queryBytes = <usize>D << 2;
  const scoreRowBytes = <usize>scoreStride << 2;
  const codes = scratch;
  const querySums = codes + queryBytes;
  const scales = querySums + (<usize>(rows * groups) << 2);
  const zeros = scales + (<usize>groups << 2);
  for (let m = 0; m < rows; m++) {
    for (let g = 0; g < groups; g++) {
      let sum: f32 = 0;
      const query = queries + <usize>m * queryBytes + (<usize>(g * gv) << 2);
      for (let c = 0; c < gv; c++) sum += load<f32>(query + (<usize>c << 2));
      store<f32>(querySums + (<usize>(m * groups + g) << 2), sum);
    }
  }
  for (let t = 0; t < tokens; t++) {
    const row = keys + <usize>t * rowStride;
    halvesToF32(groups, row, scales);
    halvesToF32(groups, row + (<usize>groups << 1), zeros);
    for (let g = 0; g < groups; g++) {
      unpackPlanarF32(groupBytes, bits, row + <usize>(4 * groups + g * groupBytes), codes + (<usize>(g * gv) << 2));
    }
    for (let m = 0; m < rows; m++) {
      const query = queries + <usize>m * queryBytes;
      let score: f32 = 0;
      for (let g = 0; g < groups; g++) {
        const groupOffset = <usize>(g * gv) << 2;
        score += load<f32>(scales + (<usize>g << 2)) * dotF32(gv, query + groupOffset, codes + groupOffset)
          + load<f32>(zeros + (<usize>g << 2)) * load<f32>(querySums + (<usize>(m * groups + g) << 2));
      }
      store<f32>(scores + <usize>m * scoreRowBytes + (<usize>t << 2), score);
    }
  }
}

// ── softmax ────────────────────────────────────────────────────────────────────────────────────

// exp(x) for x <= 0 (scores minus their maximum): Cody-Waite range reduction x = n·ln2 + r and a
// degree-6 polynomial for e^r (Cephes expf), relative error below 2e-7; the result is scaled by
// 2^n through the exponent bits. Below -87 the result is flushed to 0.
// @ts-ignore: decorator
@inline function expNonPositiveF32x4(x: v128): v128 {
  const vx = f32x4.max(x, f32x4.splat(-87.0));
  const vn = f32x4.nearest(f32x4.mul(vx, f32x4.splat(1.44269504088896341)));
  let vr = f32x4.sub(vx, f32x4.mul(vn, f32x4.splat(0.693359375)));
  vr = f32x4.sub(vr, f32x4.mul(vn, f32x4.splat(-2.12194440e-4)));
  let vp = f32x4.splat(1.9875691500e-4);
  vp = madd(vp, vr, f32x4.splat(1.3981999507e-3));
  vp = madd(vp, vr, f32x4.splat(8.3334519073e-3));
  vp = madd(vp, vr, f32x4.splat(4.1665795894e-2));
  vp = madd(vp, vr, f32x4.splat(1.6666665459e-1));
  vp = madd(vp, vr, f32x4.splat(5.0000001201e-1));
  vp = madd(f32x4.mul(vp, vr), vr, f32x4.add(vr, f32x4.splat(1)));
  const vpow2n = i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(vn), i32x4.splat(127)), 23);
  const vresult = f32x4.mul(vp, vpow2n);
  return v128.andnot(vresult, f32x4.le(x, f32x4.splat(-87.0)));
}

/**
 * In place: each row becomes softmax(scores) over its first `visible` entries and 0 after them,
 * where row m sees min(length, firstVisible + floor(m / rowsPerToken)) tokens (the causal rule:
 * rows are grouped by query token, newest last).
 */
export function f32_softmax(
  rows: i32, length: i32, firstVisible: i32, rowsPerToken: i32, scores: usize, scoreStride: i32,
): void {
  for (let m = 0; m < rows; m++) {
    const row = scores + (<usize>m * <usize>scoreStride << 2);
    const visible = min(length, firstVisible + m / rowsPerToken);
    let maximum: f32 = -Infinity;
    let i = 0;
    if (ASC_FEATURE_SIMD) {
      let vmax = f32x4.splat(-Infinity);
      for (; i + 4 <= visible; i += 4) vmax = f32x4.max(vmax, v128.load(row + (<usize>i << 2)));
      maximum = max(max(f32x4.extract_lane(vmax, 0), f32x4.extract_lane(vmax, 1)), max(f32x4.extract_lane(vmax, 2), f32x4.extract_lane(vmax, 3)));
    }
    for (; i < visible; i++) maximum = max(maximum, load<f32>(row + (<usize>i << 2)));
    let sum: f32 = 0;
    i = 0;
    if (ASC_FEATURE_SIMD) {
      const vmax = f32x4.splat(maximum);
      let vsum = f32x4.splat(0);
      for (; i + 4 <= visible; i += 4) {
        const p = expNonPositiveF32x4(f32x4.sub(v128.load(row + (<usize>i << 2)), vmax));
        v128.store(row + (<usize>i << 2), p);
        vsum = f32x4.add(vsum, p);
      }
      sum = hsum(vsum);
    }
    for (; i < visible; i++) {
      const p = Mathf.exp(load<f32>(row + (<usize>i << 2)) - maximum);
      store<f32>(row + (<usize>i << 2), p);
      sum += p;
    }
    const inverse: f32 = 1 / sum;
    i = 0;
    if (ASC_FEATURE_SIMD) {
      const vinverse = f32x4.splat(inverse);
      for (; i + 4 <= visible; i += 4) v128.store(row + (<usize>i << 2), f32x4.mul(v128.load(row + (<usize>i << 2)), vinverse));
    }
    for (; i < visible; i++) store<f32>(row + (<usize>i << 2), load<f32>(row + (<usize>i << 2)) * inverse);
    if (visible < length) memory.fill(row + (<usize>visible << 2), 0, <usize>(length - visible) << 2);
  }
}

// ── weighted sums ──────────────────────────────────────────────────────────────────────────────

/** out[m] += Σ_t w[m][t]·v_t over f32 values, `valueStride` bytes apart. */
export function f32_f32_accumulate(
  rows: i32, tokens: i32, D: i32, weights: usize, weightStride: i32, values: usize, valueStride: usize, out: usize,
): void {
  const outBytes = <usize>D << 2;
  const weightRowBytes = <usize>weightStride << 2;
  for (let t = 0; t < tokens; t++) {
    const value = values + <usize>t * valueStride;
    for (let m = 0; m < rows; m++) {
      const w = load<f32>(weights + <usize>m * weightRowBytes + (<usize>t << 2));
      if (w != 0) axpbF32(D, w, 0, value, out + <usize>m * outBytes);
    }
  }
}

/** out[m] += Σ_t w[m][t]·(code·s_g + z_g) over per-token value rows (the KIVI default for values).
 *  The weight is folded into each group's scale and zero.  scratch: 4·(D + 2·D/gv) bytes. */
export function qtoken_f32_accumulate(
  rows: i32, tokens: i32, D: i32, gv: i32, bits: i32,
  weights: usize, weightStride: i32, values: usize, rowStride: usize, out: usize, scratch: usize,
): void {
  const groups = D / gv;
  const groupBytes = (gv * bits) >> 3;
  const outBytes = <usize>D << 2;
  const weightRowBytes = <usize>weightStride << 2;
  const codes = scratch;
  const scales = codes + outBytes;
  const zeros = scales + (<usize>groups << 2);
  for (let t = 0; t < tokens; t++) {
    let used = false;
    for (let m = 0; m < rows; m++) used = used || load<f32>(weights + <usize>m * weightRowBytes + (<usize>t << 2)) != 0;
    if (!used) continue;
    const row = values + <usize>t * rowStride;
    halvesToF32(groups, row, scales);
    halvesToF32(groups, row + (<usize>groups << 1), zeros);
    for (let g = 0; g < groups; g++) {
      unpackPlanarF32(groupBytes, bits, row + <usize>(4 * groups + g * groupBytes), codes + (<usize>(g * gv) << 2));
    }
    for (let m = 0; m < rows; m++) {
      const w = load<f32>(weights + <usize>m * weightRowBytes + (<usize>t << 2));
      if (w == 0) continue;
      for (let g = 0; g < groups; g++) {
        const groupOffset = <usize>(g * gv) << 2;
        axpbF32(gv, w * load<f32>(scales + (<usize>g << 2)), w * load<f32>(zeros + (<usize>g << 2)),
          codes + groupOffset, out + <usize>m * outBytes + groupOffset);
      }
    }
  }
}

/** out[m] += Σ_t w[m][t]·(code_{c,t}·s_c + z_c) over per-channel blocks (values in the
 *  `valueGrouping: 'channel'` ablation): per block, out[c] += s_c·Σ_t w_t·code_{c,t} + z_c·Σ_t w_t.
 *  scratch: 4·(G·D + 3·D) bytes. */
export function qchannel_f32_accumulate(
  rows: i32, blocks: i32, D: i32, G: i32, bits: i32,
  weights: usize, weightStride: i32, values: usize, blockStride: usize, out: usize, scratch: usize,
): void {
  const rowBytes = (G * bits) >> 3;
  const outBytes = <usize>D << 2;
  const weightRowBytes = <usize>weightStride << 2;
  const scales = scratch;
  const zeros = scales + outBytes;
  const partial = zeros + outBytes;
  const codes = partial + outBytes;
  for (let b = 0; b < blocks; b++) {
    const block = values + <usize>b * blockStride;
    halvesToF32(D, block, scales);
    halvesToF32(D, block + (<usize>D << 1), zeros);
    unpackPlanarF32(rowBytes * D, bits, block + (<usize>D << 2), codes);
    for (let m = 0; m < rows; m++) {
      const weightRow = weights + <usize>m * weightRowBytes + (<usize>(b * G) << 2);
      memory.fill(partial, 0, outBytes);
      let weightSum: f32 = 0;
      for (let t = 0; t < G; t++) {
        const w = load<f32>(weightRow + (<usize>t << 2));
        if (w == 0) continue;
        weightSum += w;
        axpbF32(D, w, 0, codes + <usize>t * outBytes, partial);
      }
      const outRow = out + <usize>m * outBytes;
      for (let c = 0; c < D; c++) {
        const offset = <usize>c << 2;
        store<f32>(outRow + offset, load<f32>(outRow + offset)
          + load<f32>(scales + offset) * load<f32>(partial + offset) + load<f32>(zeros + offset) * weightSum);
      }
    }
  }
}

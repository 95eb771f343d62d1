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
// Layouts: layout.ts (key blocks, value blocks, f32 rows).
//
// The SIMD builds compute the quantized parts with integer dot products:
//   keys    score_t = α·Σ_c q̂_c·code_{c,t} + Σ_c q_c·z_c, where q̂ = round(q∘s / α) is the query with
//           the block's channel scales folded in, quantized to 16 bits (α = max|q∘s| / 32639), so
//           one i32x4.dot_i16x8_s (or, in the relaxed build, two relaxed_dot_i8x16_i7x16_add_s on
//           its high and low signed bytes) multiplies 8 (16) channels;
//   values  out_c += γ_g·Σ_t â_{t,g}·code_{t,c} + Σ_t w_t·z_{t,g}, where â = round(w_t·s_{t,g} / γ_g)
//           is the softmax weight with the token's group scale folded in, quantized per block to
//           16 bits, and the value block's layout puts 4 tokens of a channel in each 32-bit lane.
// SPEC.md allows fast kernels to quantize the query to int16 and fold scales into it (its tolerance
// is 2e-3 relative); the tests measure what this costs against float64. Query rows are processed four at a time where possible, so the query heads of a
// GQA group share each unpacked vector of codes. The scalar build computes the same in f32.

import { halvesToF32, f16ToF32 } from './half';
import { unpackPlanarF32 } from './pack';
import { VALUE_BLOCK, valueBlockBytes, valueCodeByte, valueCodeShift } from './layout';

/** Largest magnitude of a quantized query or weight: 16 bits, less 128 so that it splits into a
 *  high and a low signed byte (q = 256·high + low, both in -128..127) for the relaxed dot product. */
// @ts-ignore: decorator
@inline const QMAX: f32 = 32639;

/** Splits i16 lanes q into signed bytes: low = ((q + 128) & 255) - 128, high = (q + 128) >> 8. */
// @ts-ignore: decorator
@inline function splitHigh(vq: v128): v128 {
  return i16x8.shr_s(i16x8.add(vq, i16x8.splat(128)), 8);
}
// @ts-ignore: decorator
@inline function splitLow(vq: v128): v128 {
  return i16x8.sub(v128.and(i16x8.add(vq, i16x8.splat(128)), i16x8.splat(255)), i16x8.splat(128));
}

/** i32x4.relaxed_dot_i8x16_i7x16_add_s in the relaxed build. Other builds never call it (useRelaxedDot
 *  is false there); the guard keeps the instruction out of their binaries. */
// @ts-ignore: decorator
@inline function dotAddI8I7(a: v128, b: v128, acc: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b, acc);
  return acc;
}

/** Bits up to which the relaxed build uses relaxed_dot_i8x16_i7x16 (codes must fit in 7 bits). */
// @ts-ignore: decorator
@inline function useRelaxedDot(bits: i32): bool {
  return ASC_FEATURE_RELAXED_SIMD && bits <= 4;
}

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

// @ts-ignore: decorator
@inline function hsumI32(v: v128): i32 {
  const v2 = i32x4.add(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
  return i32x4.extract_lane(i32x4.add(v2, i32x4.shuffle(v2, v2, 1, 0, 3, 2)), 0);
}

/** [Σa, Σb, Σc, Σd] of four vectors of four lanes (f32 or i32 by `float`). */
// @ts-ignore: decorator
@inline function transposeSum(a: v128, b: v128, c: v128, d: v128, float: bool): v128 {
  if (float) {
    const ab = f32x4.add(i32x4.shuffle(a, b, 0, 4, 1, 5), i32x4.shuffle(a, b, 2, 6, 3, 7));
    const cd = f32x4.add(i32x4.shuffle(c, d, 0, 4, 1, 5), i32x4.shuffle(c, d, 2, 6, 3, 7));
    return f32x4.add(i32x4.shuffle(ab, cd, 0, 1, 4, 5), i32x4.shuffle(ab, cd, 2, 3, 6, 7));
  }
  const ab = i32x4.add(i32x4.shuffle(a, b, 0, 4, 1, 5), i32x4.shuffle(a, b, 2, 6, 3, 7));
  const cd = i32x4.add(i32x4.shuffle(c, d, 0, 4, 1, 5), i32x4.shuffle(c, d, 2, 6, 3, 7));
  return i32x4.add(i32x4.shuffle(ab, cd, 0, 1, 4, 5), i32x4.shuffle(ab, cd, 2, 3, 6, 7));
}

/** Scores against f32 keys (sinks, the residual window, or the whole `bits: 32` cache).
 *  keys: f32 rows of D, `keyStride` bytes apart. Four query rows share each loaded key vector. */
export function f32_f32_scores(
  rows: i32, tokens: i32, D: i32, queries: usize, keys: usize, keyStride: usize, scores: usize, scoreStride: i32,
): void {
  const queryBytes = <usize>D << 2;
  const scoreRowBytes = <usize>scoreStride << 2;
  let m = 0;
  if (ASC_FEATURE_SIMD && D % 4 == 0) {
    for (; m + 4 <= rows; m += 4) {
      const q0 = queries + <usize>m * queryBytes;
      const q1 = q0 + queryBytes, q2 = q1 + queryBytes, q3 = q2 + queryBytes;
      const out = scores + <usize>m * scoreRowBytes;
      for (let t = 0; t < tokens; t++) {
        const key = keys + <usize>t * keyStride;
        let vacc0 = f32x4.splat(0), vacc1 = f32x4.splat(0), vacc2 = f32x4.splat(0), vacc3 = f32x4.splat(0);
        for (let c = 0; c < D; c += 4) {
          const offset = <usize>c << 2;
          const vk = v128.load(key + offset);
          vacc0 = madd(v128.load(q0 + offset), vk, vacc0);
          vacc1 = madd(v128.load(q1 + offset), vk, vacc1);
          vacc2 = madd(v128.load(q2 + offset), vk, vacc2);
          vacc3 = madd(v128.load(q3 + offset), vk, vacc3);
        }
        const vsum = transposeSum(vacc0, vacc1, vacc2, vacc3, true);
        const at = out + (<usize>t << 2);
        store<f32>(at, f32x4.extract_lane(vsum, 0));
        store<f32>(at + scoreRowBytes, f32x4.extract_lane(vsum, 1));
        store<f32>(at + 2 * scoreRowBytes, f32x4.extract_lane(vsum, 2));
        store<f32>(at + 3 * scoreRowBytes, f32x4.extract_lane(vsum, 3));
      }
    }
  }
  for (; m < rows; m++) {
    const query = queries + <usize>m * queryBytes;
    const out = scores + <usize>m * scoreRowBytes;
    for (let t = 0; t < tokens; t++) store<f32>(out + (<usize>t << 2), dotF32(D, query, keys + <usize>t * keyStride));
  }
}

/**
 * Per-block query preparation for the integer key kernels (SIMD builds): for each row,
 * q̂ = round(q∘s · qmax / max|q∘s|) as i16 [D] (or its high and low signed bytes as two i8 planes
 * [D] for the relaxed dot), and (α, β) = (max|q∘s| / qmax, q·z).
 *   prepared: rows × 2·D bytes;  alphaBeta: rows × 2 f32;  work: D f32
 */
function prepareKeyQueries(
  rows: i32, D: i32, qmax: f32, relaxed: bool, queries: usize, scales: usize, zeros: usize, prepared: usize, alphaBeta: usize, work: usize,
): void {
  const queryBytes = <usize>D << 2;
  for (let m = 0; m < rows; m++) {
    const query = queries + <usize>m * queryBytes;
    let vmax = f32x4.splat(0);
    for (let c = 0; c < D; c += 4) {
      const offset = <usize>c << 2;
      const vqs = f32x4.mul(v128.load(query + offset), v128.load(scales + offset));
      v128.store(work + offset, vqs);
      vmax = f32x4.max(vmax, f32x4.abs(vqs));
    }
    const amax = max(max(f32x4.extract_lane(vmax, 0), f32x4.extract_lane(vmax, 1)), max(f32x4.extract_lane(vmax, 2), f32x4.extract_lane(vmax, 3)));
    const vinverse = f32x4.splat(amax > 0 ? qmax / amax : 0);
    const out = prepared + <usize>(m * 2 * D);
    for (let c = 0; c < D; c += 8) {
      const offset = <usize>c << 2;
      const va = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(work + offset), vinverse)));
      const vb = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v128.load(work + offset, 16), vinverse)));
      const vq = i16x8.narrow_i32x4_s(va, vb);
      if (relaxed) {
        const vhigh = splitHigh(vq);
        const vlow = splitLow(vq);
        v128.store64_lane(out + <usize>c, i8x16.narrow_i16x8_s(vhigh, vhigh), 0);
        v128.store64_lane(out + <usize>(D + c), i8x16.narrow_i16x8_s(vlow, vlow), 0);
      } else {
        v128.store(out + (<usize>c << 1), vq);
      }
    }
    store<f32>(alphaBeta + (<usize>m << 3), amax / qmax);
    store<f32>(alphaBeta + (<usize>m << 3), dotF32(D, query, zeros), 4);
  }
}

/** Σ over channels of q̂·code for one token's codes (plane `shift` of the code row at `codes`), one row. */
// @ts-ignore: decorator
@inline function keyDot1(D: i32, relaxed: bool, codes: usize, shift: i32, vmask: v128, q: usize): i32 {
  let vacc0 = i32x4.splat(0), vacc1 = i32x4.splat(0);
  let c = 0;
  for (; c + 16 <= D; c += 16) {
    const vcodes = v128.and(i8x16.shr_u(v128.load(codes + <usize>c), shift), vmask);
    if (relaxed) {
      vacc0 = dotAddI8I7(v128.load(q + <usize>c), vcodes, vacc0);
      vacc1 = dotAddI8I7(v128.load(q + <usize>(D + c)), vcodes, vacc1);
    } else {
      vacc0 = i32x4.add(vacc0, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(vcodes), v128.load(q + (<usize>c << 1))));
      vacc1 = i32x4.add(vacc1, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(vcodes), v128.load(q + (<usize>c << 1), 16)));
    }
  }
  if (c < D) { // D is a multiple of 8
    const vcodes = v128.and(i8x16.shr_u(v128.load64_zero(codes + <usize>c), shift), vmask);
    if (relaxed) {
      vacc0 = dotAddI8I7(v128.load64_zero(q + <usize>c), vcodes, vacc0);
      vacc1 = dotAddI8I7(v128.load64_zero(q + <usize>(D + c)), vcodes, vacc1);
    } else {
      vacc0 = i32x4.add(vacc0, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(vcodes), v128.load(q + (<usize>c << 1))));
    }
  }
  return hsumI32(relaxed ? i32x4.add(i32x4.shl(vacc0, 8), vacc1) : i32x4.add(vacc0, vacc1));
}

/** The same for four rows at once (their prepared queries 2·D bytes apart): [Σ0, Σ1, Σ2, Σ3]. */
// @ts-ignore: decorator
@inline function keyDot4(D: i32, relaxed: bool, codes: usize, shift: i32, vmask: v128, q: usize): v128 {
  const stride = <usize>(2 * D);
  let vacc0 = i32x4.splat(0), vacc1 = i32x4.splat(0), vacc2 = i32x4.splat(0), vacc3 = i32x4.splat(0);
  let vlow0 = i32x4.splat(0), vlow1 = i32x4.splat(0), vlow2 = i32x4.splat(0), vlow3 = i32x4.splat(0);
  let c = 0;
  for (; c < D; c += 16) {
    const full = c + 16 <= D;
    const vbytes = full ? v128.load(codes + <usize>c) : v128.load64_zero(codes + <usize>c);
    const vcodes = v128.and(i8x16.shr_u(vbytes, shift), vmask);
    const q0 = q + <usize>c;
    if (relaxed) {
      // High and low signed bytes of each row's q̂; a short last chunk reads zeros past D.
      vacc0 = dotAddI8I7(full ? v128.load(q0) : v128.load64_zero(q0), vcodes, vacc0);
      vacc1 = dotAddI8I7(full ? v128.load(q0 + stride) : v128.load64_zero(q0 + stride), vcodes, vacc1);
      vacc2 = dotAddI8I7(full ? v128.load(q0 + 2 * stride) : v128.load64_zero(q0 + 2 * stride), vcodes, vacc2);
      vacc3 = dotAddI8I7(full ? v128.load(q0 + 3 * stride) : v128.load64_zero(q0 + 3 * stride), vcodes, vacc3);
      const l0 = q0 + <usize>D;
      vlow0 = dotAddI8I7(full ? v128.load(l0) : v128.load64_zero(l0), vcodes, vlow0);
      vlow1 = dotAddI8I7(full ? v128.load(l0 + stride) : v128.load64_zero(l0 + stride), vcodes, vlow1);
      vlow2 = dotAddI8I7(full ? v128.load(l0 + 2 * stride) : v128.load64_zero(l0 + 2 * stride), vcodes, vlow2);
      vlow3 = dotAddI8I7(full ? v128.load(l0 + 3 * stride) : v128.load64_zero(l0 + 3 * stride), vcodes, vlow3);
    } else {
      const vlo = i16x8.extend_low_i8x16_u(vcodes);
      const qc = q + (<usize>c << 1);
      vacc0 = i32x4.add(vacc0, i32x4.dot_i16x8_s(vlo, v128.load(qc)));
      vacc1 = i32x4.add(vacc1, i32x4.dot_i16x8_s(vlo, v128.load(qc + stride)));
      vacc2 = i32x4.add(vacc2, i32x4.dot_i16x8_s(vlo, v128.load(qc + 2 * stride)));
      vacc3 = i32x4.add(vacc3, i32x4.dot_i16x8_s(vlo, v128.load(qc + 3 * stride)));
      if (full) {
        const vhi = i16x8.extend_high_i8x16_u(vcodes);
        vacc0 = i32x4.add(vacc0, i32x4.dot_i16x8_s(vhi, v128.load(qc, 16)));
        vacc1 = i32x4.add(vacc1, i32x4.dot_i16x8_s(vhi, v128.load(qc + stride, 16)));
        vacc2 = i32x4.add(vacc2, i32x4.dot_i16x8_s(vhi, v128.load(qc + 2 * stride, 16)));
        vacc3 = i32x4.add(vacc3, i32x4.dot_i16x8_s(vhi, v128.load(qc + 3 * stride, 16)));
      }
    }
  }
  if (relaxed) {
    vacc0 = i32x4.add(i32x4.shl(vacc0, 8), vlow0);
    vacc1 = i32x4.add(i32x4.shl(vacc1, 8), vlow1);
    vacc2 = i32x4.add(i32x4.shl(vacc2, 8), vlow2);
    vacc3 = i32x4.add(i32x4.shl(vacc3, 8), vlow3);
  }
  return transposeSum(vacc0, vacc1, vacc2, vacc3, false);
}

/** Scores against per-channel key blocks (the KIVI default for keys).
 *  score_t = Σ_c (q_c·s_c)·code_{c,t} + Σ_c q_c·z_c, per block (integer form above in SIMD builds).
 *  scratch: 4·(G·D + 3·D + rows·D) bytes. */
export function qchannel_f32_scores(
  rows: i32, blocks: i32, D: i32, G: i32, bits: i32,
  queries: usize, keys: usize, blockStride: usize, scores: usize, scoreStride: i32, scratch: usize,
): void {
  const rowBytes = (G * bits) >> 3;
  const queryBytes = <usize>D << 2;
  const scoreRowBytes = <usize>scoreStride << 2;
  const scales = scratch;
  const zeros = scales + queryBytes;
  const work = zeros + queryBytes;
  const prepared = work + queryBytes; // rows × 2·D bytes (SIMD) or rows × D f32 (scalar)
  const planes = 8 / bits;
  if (ASC_FEATURE_SIMD) {
    const relaxed = useRelaxedDot(bits);
    // Σ_c q̂·code over D channels must fit in an i32: at 8 bits and D > 258 the range of q̂ shrinks.
    const qmax = min(QMAX, <f32>floor(<f64>i32.MAX_VALUE / <f64>(((1 << bits) - 1) * D)));
    const alphaBeta = prepared + <usize>(rows * 2 * D);
    const vmask = i8x16.splat(<i8>((<i32>1 << bits) - 1));
    for (let b = 0; b < blocks; b++) {
      const block = keys + <usize>b * blockStride;
      halvesToF32(D, block, scales);
      halvesToF32(D, block + (<usize>D << 1), zeros);
      prepareKeyQueries(rows, D, qmax, relaxed, queries, scales, zeros, prepared, alphaBeta, work);
      const codes = block + (<usize>D << 2);
      const blockScores = scores + (<usize>(b * G) << 2);
      let m = 0;
      for (; m + 4 <= rows; m += 4) {
        const ab = alphaBeta + (<usize>m << 3);
        const valpha = f32x4(load<f32>(ab), load<f32>(ab, 8), load<f32>(ab, 16), load<f32>(ab, 24));
        const vbeta = f32x4(load<f32>(ab, 4), load<f32>(ab, 12), load<f32>(ab, 20), load<f32>(ab, 28));
        const q = prepared + <usize>(m * 2 * D);
        const out = blockScores + <usize>m * scoreRowBytes;
        for (let j = 0; j < rowBytes; j++) {
          const row = codes + <usize>(j * D);
          for (let s = 0; s < planes; s++) {
            const vscore = madd(valpha, f32x4.convert_i32x4_s(keyDot4(D, relaxed, row, s * bits, vmask, q)), vbeta);
            const at = out + (<usize>(j + s * rowBytes) << 2);
            store<f32>(at, f32x4.extract_lane(vscore, 0));
            store<f32>(at + scoreRowBytes, f32x4.extract_lane(vscore, 1));
            store<f32>(at + 2 * scoreRowBytes, f32x4.extract_lane(vscore, 2));
            store<f32>(at + 3 * scoreRowBytes, f32x4.extract_lane(vscore, 3));
          }
        }
      }
      for (; m < rows; m++) {
        const alpha = load<f32>(alphaBeta + (<usize>m << 3));
        const beta = load<f32>(alphaBeta + (<usize>m << 3), 4);
        const q = prepared + <usize>(m * 2 * D);
        const out = blockScores + <usize>m * scoreRowBytes;
        for (let j = 0; j < rowBytes; j++) {
          const row = codes + <usize>(j * D);
          for (let s = 0; s < planes; s++) {
            store<f32>(out + (<usize>(j + s * rowBytes) << 2), alpha * <f32>keyDot1(D, relaxed, row, s * bits, vmask, q) + beta);
          }
        }
      }
    }
    return;
  }
  // Scalar build: f32 codes, scales folded into the query.
  const codes = prepared + <usize>rows * queryBytes;
  for (let b = 0; b < blocks; b++) {
    const block = keys + <usize>b * blockStride;
    halvesToF32(D, block, scales);
    halvesToF32(D, block + (<usize>D << 1), zeros);
    unpackPlanarF32(rowBytes * D, bits, block + (<usize>D << 2), codes);
    for (let m = 0; m < rows; m++) {
      const query = queries + <usize>m * queryBytes;
      mulF32(D, query, scales, work);
      const offset = dotF32(D, query, zeros);
      const scoreRow = scores + <usize>m * scoreRowBytes + (<usize>(b * G) << 2);
      for (let t = 0; t < G; t++) {
        store<f32>(scoreRow + (<usize>t << 2), dotF32(D, work, codes + <usize>t * queryBytes) + offset);
      }
    }
  }
}

/** Codes of the first `tokens` tokens of a value block as f32 [tokens][D] (for the ablations). */
function unpackValueBlockF32(tokens: i32, D: i32, bits: i32, codes: usize, dst: usize): void {
  const mask: u32 = (1 << bits) - 1;
  for (let t = 0; t < tokens; t++) {
    const shift = valueCodeShift(t, bits);
    const row = dst + (<usize>(t * D) << 2);
    for (let c = 0; c < D; c++) {
      store<f32>(row + (<usize>c << 2), <f32>((<u32>load<u8>(codes + <usize>valueCodeByte(c, t, bits)) >> shift) & mask));
    }
  }
}

/** Scores against keys quantized per token in value blocks (the `keyGrouping: 'token'` ablation).
 *  score = Σ_g s_g·(q_g · code_g) + z_g·Σ q_g.  scratch: 4·(VB·D + rows·D/gv + 2·VB·D/gv) bytes. */
export function qtoken_f32_scores(
  rows: i32, tokens: i32, D: i32, gv: i32, bits: i32,
  queries: usize, keys: usize, blockStride: usize, scores: usize, scoreStride: i32, scratch: usize,
): void {
  const groups = D / gv;
  const queryBytes = <usize>D << 2;
  const scoreRowBytes = <usize>scoreStride << 2;
  const codes = scratch;
  const querySums = codes + (<usize>(VALUE_BLOCK * D) << 2);
  const scales = querySums + (<usize>(rows * groups) << 2);
  const zeros = scales + (<usize>(VALUE_BLOCK * groups) << 2);
  for (let m = 0; m < rows; m++) {
    for (let g = 0; g < groups; g++) {
      let sum: f32 = 0;
      const query = queries + <usize>m * queryBytes + (<usize>(g * gv) << 2);
      for (let c = 0; c < gv; c++) sum += load<f32>(query + (<usize>c << 2));
      store<f32>(querySums + (<usize>(m * groups + g) << 2), sum);
    }
  }
  for (let first = 0; first < tokens; first += VALUE_BLOCK) {
    const block = keys + <usize>(first / VALUE_BLOCK) * blockStride;
    const valid = min(VALUE_BLOCK, tokens - first);
    halvesToF32(valid * groups, block, scales);
    halvesToF32(valid * groups, block + (<usize>(VALUE_BLOCK * groups) << 1), zeros);
    unpackValueBlockF32(valid, D, bits, block + <usize>(4 * VALUE_BLOCK * groups), codes);
    for (let t = 0; t < valid; t++) {
      for (let m = 0; m < rows; m++) {
        const query = queries + <usize>m * queryBytes;
        let score: f32 = 0;
        for (let g = 0; g < groups; g++) {
          const groupOffset = <usize>(g * gv) << 2;
          score += load<f32>(scales + (<usize>(t * groups + g) << 2)) * dotF32(gv, query + groupOffset, codes + (<usize>(t * D) << 2) + groupOffset)
            + load<f32>(zeros + (<usize>(t * groups + g) << 2)) * load<f32>(querySums + (<usize>(m * groups + g) << 2));
        }
        store<f32>(scores + <usize>m * scoreRowBytes + (<usize>(first + t) << 2), score);
      }
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

/** Tokens of f32 values read from memory at once: every row and channel chunk then re-reads them
 *  from L1 (64 × D·4 bytes), so each value is fetched from memory once per call. */
// @ts-ignore: decorator
@inline const F32_TILE = 64;

/** out[m] += Σ_t w[m][t]·v_t over f32 values, `valueStride` bytes apart. */
export function f32_f32_accumulate(
  rows: i32, tokens: i32, D: i32, weights: usize, weightStride: i32, values: usize, valueStride: usize, out: usize,
): void {
  const outBytes = <usize>D << 2;
  const weightRowBytes = <usize>weightStride << 2;
  for (let first = 0; first < tokens; first += F32_TILE) {
    const count = min(F32_TILE, tokens - first);
    const tile = values + <usize>first * valueStride;
    for (let m = 0; m < rows; m++) {
      const w = weights + <usize>m * weightRowBytes + (<usize>first << 2);
      const acc = out + <usize>m * outBytes;
      let c = 0;
      if (ASC_FEATURE_SIMD) {
        for (; c + 16 <= D; c += 16) {
          const offset = <usize>c << 2;
          let vacc0 = v128.load(acc + offset), vacc1 = v128.load(acc + offset, 16);
          let vacc2 = v128.load(acc + offset, 32), vacc3 = v128.load(acc + offset, 48);
          for (let t = 0; t < count; t++) {
            const vw = f32x4.splat(load<f32>(w + (<usize>t << 2)));
            const v = tile + <usize>t * valueStride + offset;
            vacc0 = madd(vw, v128.load(v), vacc0);
            vacc1 = madd(vw, v128.load(v, 16), vacc1);
            vacc2 = madd(vw, v128.load(v, 32), vacc2);
            vacc3 = madd(vw, v128.load(v, 48), vacc3);
          }
          v128.store(acc + offset, vacc0);
          v128.store(acc + offset, vacc1, 16);
          v128.store(acc + offset, vacc2, 32);
          v128.store(acc + offset, vacc3, 48);
        }
        for (; c + 4 <= D; c += 4) {
          const offset = <usize>c << 2;
          let vacc = v128.load(acc + offset);
          for (let t = 0; t < count; t++) {
            vacc = madd(f32x4.splat(load<f32>(w + (<usize>t << 2))), v128.load(tile + <usize>t * valueStride + offset), vacc);
          }
          v128.store(acc + offset, vacc);
        }
      }
      for (; c < D; c++) {
        const offset = <usize>c << 2;
        let sum = load<f32>(acc + offset);
        for (let t = 0; t < count; t++) sum += load<f32>(w + (<usize>t << 2)) * load<f32>(tile + <usize>t * valueStride + offset);
        store<f32>(acc + offset, sum);
      }
    }
  }
}

/**
 * Per-block weight preparation for the integer value kernels (SIMD builds). For row m and group g:
 * â_t = round(w_t·s_{t,g} / γ), γ = max_t w_t·s_{t,g} / 32639, laid out per token quad as the
 * operand of the dot over tokens: i16 [â0 â1 â2 â3 â0 â1 â2 â3] (16 bytes), or for the relaxed dot
 * its high and low signed bytes as i8 [â0..â3 ×4] (2 × 16 bytes). Also adds Σ_t w_t·z_{t,g} to zeroSums.
 *   prepared: rows × groups × (VB/4) × 32 bytes;  gammas: rows × groups f32
 */
function prepareValueWeights(
  rows: i32, valid: i32, groups: i32, relaxed: bool, weights: usize, weightRowBytes: usize,
  scales: usize, zeros: usize, prepared: usize, gammas: usize, zeroSums: usize,
): void {
  const quads = VALUE_BLOCK >> 2;
  for (let m = 0; m < rows; m++) {
    const w = weights + <usize>m * weightRowBytes;
    for (let g = 0; g < groups; g++) {
      let amax: f32 = 0;
      let zeroSum: f32 = 0;
      for (let t = 0; t < valid; t++) {
        const wt = load<f32>(w + (<usize>t << 2));
        amax = max(amax, wt * load<f32>(scales + (<usize>(t * groups + g) << 2)));
        zeroSum += wt * load<f32>(zeros + (<usize>(t * groups + g) << 2));
      }
      const zs = zeroSums + (<usize>(m * groups + g) << 2);
      store<f32>(zs, load<f32>(zs) + zeroSum);
      store<f32>(gammas + (<usize>(m * groups + g) << 2), amax / QMAX);
      const inverse: f32 = amax > 0 ? QMAX / amax : 0;
      const out = prepared + (<usize>((m * groups + g) * quads) << 5);
      for (let quad = 0; quad < quads; quad++) {
        let packed: u64 = 0;
        for (let k = 0; k < 4; k++) {
          const t = quad * 4 + k;
          const a: u64 = t < valid
            ? <u64><u32>(<i32>nearest(load<f32>(w + (<usize>t << 2)) * load<f32>(scales + (<usize>(t * groups + g) << 2)) * inverse))
            : 0;
          packed |= a << (16 * k);
        }
        const at = out + (<usize>quad << 5);
        if (relaxed) {
          // â = 256·high + low in signed bytes, the 4 tokens repeated for the 4 channels of a chunk.
          const vq = i64x2.splat(packed);
          const vhigh = splitHigh(vq);
          const vlow = splitLow(vq);
          v128.store(at, i32x4.splat(i32x4.extract_lane(i8x16.narrow_i16x8_s(vhigh, vhigh), 0)));
          v128.store(at, i32x4.splat(i32x4.extract_lane(i8x16.narrow_i16x8_s(vlow, vlow), 0)), 16);
        } else {
          v128.store(at, i64x2.splat(packed));
        }
      }
    }
  }
}

/** out[m][4Q..4Q+3] += γ·[Σ_t â_t·code_{t,c}] over one channel quad of a value block, for one row. */
// @ts-ignore: decorator
@inline function valueQuad1(chunks: i32, planes: i32, bits: i32, relaxed: bool, vmask: v128, codes: usize, weights: usize): v128 {
  let vacc0 = i32x4.splat(0), vacc1 = i32x4.splat(0);
  for (let r = 0; r < chunks; r++) {
    const vbytes = v128.load(codes + (<usize>r << 4));
    for (let s = 0; s < planes; s++) {
      const vcodes = v128.and(i8x16.shr_u(vbytes, s * bits), vmask);
      const w = weights + (<usize>(r * planes + s) << 5);
      if (relaxed) {
        vacc0 = dotAddI8I7(v128.load(w), vcodes, vacc0);
        vacc1 = dotAddI8I7(v128.load(w, 16), vcodes, vacc1);
      } else {
        const vw = v128.load(w);
        vacc0 = i32x4.add(vacc0, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(vcodes), vw));
        vacc1 = i32x4.add(vacc1, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(vcodes), vw));
      }
    }
  }
  // relaxed: lanes are channels, high and low halves of â; i16: lanes are (channel, token pair).
  return relaxed
    ? i32x4.add(i32x4.shl(vacc0, 8), vacc1)
    : i32x4.add(i32x4.shuffle(vacc0, vacc1, 0, 2, 4, 6), i32x4.shuffle(vacc0, vacc1, 1, 3, 5, 7));
}

/** out[m] += Σ_t w[m][t]·(code·s_{t,g} + z_{t,g}) over value blocks (the KIVI default for values);
 *  `tokens` may end inside the last block.
 *  scratch: 4·(2·VB·D/gv + 2·rows·D/gv) + rows·D/gv·(VB/4)·32 bytes. */
export function qtoken_f32_accumulate(
  rows: i32, tokens: i32, D: i32, gv: i32, bits: i32,
  weights: usize, weightStride: i32, values: usize, blockStride: usize, out: usize, scratch: usize,
): void {
  const groups = D / gv;
  const outBytes = <usize>D << 2;
  const weightRowBytes = <usize>weightStride << 2;
  const scales = scratch;
  const zeros = scales + (<usize>(VALUE_BLOCK * groups) << 2);
  const zeroSums = zeros + (<usize>(VALUE_BLOCK * groups) << 2);
  const gammas = zeroSums + (<usize>(rows * groups) << 2);
  const prepared = gammas + (<usize>(rows * groups) << 2);
  const codeOffset = <usize>(4 * VALUE_BLOCK * groups);
  const planes = 8 / bits;
  const chunks = (VALUE_BLOCK * bits) >> 5;
  memory.fill(zeroSums, 0, <usize>(rows * groups) << 2);
  for (let first = 0; first < tokens; first += VALUE_BLOCK) {
    const block = values + <usize>(first / VALUE_BLOCK) * blockStride;
    const valid = min(VALUE_BLOCK, tokens - first);
    halvesToF32(valid * groups, block, scales);
    halvesToF32(valid * groups, block + (<usize>(VALUE_BLOCK * groups) << 1), zeros);
    const w0 = weights + (<usize>first << 2);
    if (ASC_FEATURE_SIMD) {
      const relaxed = useRelaxedDot(bits);
      const vmask = i8x16.splat(<i8>((<i32>1 << bits) - 1));
      prepareValueWeights(rows, valid, groups, relaxed, w0, weightRowBytes, scales, zeros, prepared, gammas, zeroSums);
      const quadStride = <usize>(chunks << 4);
      const groupWeights = <usize>((VALUE_BLOCK >> 2) << 5);
      for (let m = 0; m < rows; m++) {
        const acc = out + <usize>m * outBytes;
        for (let g = 0; g < groups; g++) {
          const gamma = load<f32>(gammas + (<usize>(m * groups + g) << 2));
          if (gamma == 0) continue; // every weight of this row is 0 here (causal mask)
          const vgamma = f32x4.splat(gamma);
          const w = prepared + <usize>(m * groups + g) * groupWeights;
          for (let c = g * gv; c < (g + 1) * gv; c += 4) {
            const vsum = valueQuad1(chunks, planes, bits, relaxed, vmask, block + codeOffset + <usize>(c >> 2) * quadStride, w);
            const at = acc + (<usize>c << 2);
            v128.store(at, madd(vgamma, f32x4.convert_i32x4_s(vsum), v128.load(at)));
          }
        }
      }
      continue;
    }
    // Scalar build: per token, the weight folded into each group's scale and zero.
    const mask: u32 = (1 << bits) - 1;
    const codes = block + codeOffset;
    for (let t = 0; t < valid; t++) {
      const shift = valueCodeShift(t, bits);
      for (let m = 0; m < rows; m++) {
        const wt = load<f32>(w0 + <usize>m * weightRowBytes + (<usize>t << 2));
        if (wt == 0) continue;
        const acc = out + <usize>m * outBytes;
        for (let g = 0; g < groups; g++) {
          const ws = wt * load<f32>(scales + (<usize>(t * groups + g) << 2));
          const wz = wt * load<f32>(zeros + (<usize>(t * groups + g) << 2));
          for (let c = g * gv; c < (g + 1) * gv; c++) {
            const code = <f32>((<u32>load<u8>(codes + <usize>valueCodeByte(c, t, bits)) >> shift) & mask);
            const at = acc + (<usize>c << 2);
            store<f32>(at, load<f32>(at) + ws * code + wz);
          }
        }
      }
    }
  }
  if (ASC_FEATURE_SIMD) {
    for (let m = 0; m < rows; m++) {
      for (let g = 0; g < groups; g++) {
        const zeroSum = load<f32>(zeroSums + (<usize>(m * groups + g) << 2));
        const acc = out + <usize>m * outBytes + (<usize>(g * gv) << 2);
        for (let c = 0; c < gv; c++) store<f32>(acc + (<usize>c << 2), load<f32>(acc + (<usize>c << 2)) + zeroSum);
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

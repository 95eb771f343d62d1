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
// Codes are unpacked with i16x8.shr_u and a byte mask: shifting 16-bit lanes by at most 8 - b bits
// never moves a neighbour's bits into the b bits kept, and x64 has a 16-bit shift but no 8-bit one.
//
// The SIMD builds compute the quantized parts with integer dot products:
//   keys    score_t = α·Σ_c q̂_c·code_{c,t} + Σ_c q_c·z_c, where q̂ = round(q∘s / α) is the query with
//           the block's channel scales folded in, quantized to 16 bits (α = max|q∘s| / 32639), so
//           one i32x4.dot_i16x8_s multiplies 8 channels (in the relaxed build, for up to three
//           rows, two i16x8.relaxed_dot_i8x16_i7x16_s on q̂'s high and low signed bytes multiply 16);
//   values  out_c += γ_g·Σ_t â_{t,g}·code_{t,c} + Σ_t w_t·z_{t,g}, where â = round(w_t·s_{t,g} / γ_g)
//           is the softmax weight with the token's group scale folded in, quantized per block to
//           16 bits, and the value block's layout puts 4 tokens of a channel in each 32-bit lane.
// SPEC.md allows fast kernels to quantize the query to int16 and fold scales into it (its tolerance
// is 2e-3 relative); the tests measure what this costs against float64. Query rows are processed
// four at a time where possible, so the query heads of a GQA group share each unpacked vector of
// codes. The scalar build computes the same in f32.
//
// Each (bits, mode, tail) instance is its own wasm function (keyScoresRelaxed2 and the like), and
// the SIMD constants come from a table (simd.ts): both for V8's sake, each measured on the decode
// step (README, "How attention runs").

import { scaleHalvesToF32, scalesZerosToF32, zeroHalvesToF32 } from './half';
import { unpackPlanarF32 } from './pack';
import { VALUE_BLOCK, valueCodeByte, valueCodeShift } from './layout';
import { byteMask, constant, Constant, pickBytes, roundWith, shortMask } from './simd';

/** Largest magnitude of a quantized query or weight: 16 bits, less 128 so that it splits into a
 *  high and a low signed byte (q = 256·high + low, both in -128..127) for the relaxed dot product. */
// @ts-ignore: decorator
@inline const QMAX: f32 = 32639;

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

/** Loads one word from every 64-byte line of a block before the kernel reads it, so that all its
 *  cache misses are in flight at once instead of one after another as the kernel walks the block
 *  (wasm has no prefetch instruction). Measured on Zen 5, Llama-2-7B layer at 32K tokens (relaxed
 *  build, ns per token and kv head): 4-bit 19.4 → 13.6 and 8-bit 30.8 → 21.4 when touching the
 *  block about to be read, where touching the block two ahead gave 19.4 and four ahead 22; at 2
 *  bits, where the work per byte is highest, every distance costs more than it saves, so it is off. */
// @ts-ignore: decorator
@inline function touchBlock(block: usize, bytes: usize): u32 {
  let sum: u32 = 0;
  for (let offset: usize = 0; offset < bytes; offset += 64) sum |= load<u32>(block + offset);
  return sum;
}

// @ts-ignore: decorator
@inline function minLane(v: v128): f32 {
  const v2 = f32x4.pmin(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
  return f32x4.extract_lane(f32x4.pmin(v2, i32x4.shuffle(v2, v2, 1, 0, 3, 2)), 0);
}

// @ts-ignore: decorator
@inline function maxLane(v: v128): f32 {
  const v2 = f32x4.pmax(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
  return f32x4.extract_lane(f32x4.pmax(v2, i32x4.shuffle(v2, v2, 1, 0, 3, 2)), 0);
}

/** i32 sums of the RELAXED accumulators: the i16 sums of the high and low signed bytes of each
 *  operand, widened pairwise, recombined as 256·high + low. */
// @ts-ignore: decorator
@inline function highLowSums(vhigh: v128, vlow: v128): v128 {
  return i32x4.add(i32x4.shl(i32x4.extadd_pairwise_i16x8_s(vhigh), 8), i32x4.extadd_pairwise_i16x8_s(vlow));
}

/** i16x8.relaxed_dot_i8x16_i7x16_s (pairs of i8·i7 products summed into i16 lanes) in the relaxed build. */
// @ts-ignore: decorator
@inline function dotI8I7(a: v128, b: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return i16x8.relaxed_dot_i8x16_i7x16_s(a, b);
  return a;
}

/** How the integer kernels multiply codes (SIMD builds):
 *  WIDE    i32x4.dot_i16x8_s on 16-bit operands; codes taken from 16-bit lanes as even and odd bytes
 *          (the query or weights are stored de-interleaved to match), any bits and D;
 *  RELAXED i16x8.relaxed_dot_i8x16_i7x16_s on the high and low signed bytes of the operand, summed
 *          in i16 lanes, which must not overflow: bits <= 4 and, for keys, few enough channels. */
// @ts-ignore: decorator
@inline const WIDE = 0;
// @ts-ignore: decorator
@inline const RELAXED = 1;

/** RELAXED sums up to this many 16-channel chunks of b-bit codes per i16 lane without overflow. */
// @ts-ignore: decorator
@inline function relaxedChunks(bits: i32): i32 {
  return 32767 / (2 * 128 * ((1 << bits) - 1));
}

/**
 * Per-block query preparation for the integer key kernels: for each row, q̂ = round(q∘s · qmax /
 * max|q∘s|) and (α, β) = (max|q∘s| / qmax, q·z). q̂ is stored per 16-channel chunk as
 * WIDE: i16 [even channels 8][odd channels 8]; RELAXED: i8 high bytes [D] then low bytes [D].
 * A last chunk of 8 channels stores 4 + 4 (WIDE; RELAXED needs D % 16 == 0).
 * The scales and zeros are read as the block's halves (HALVES: one row, converted as they are
 * used) or as f32 [D] scales then [D] zeros at `scalesZeros` (several rows, converted once).
 *   prepared: rows × 2·D bytes;  alphaBeta: rows × 2 f32;  work: D f32
 */
// @ts-ignore: decorator
@inline function prepareKeyQueries(
  mode: i32, HALVES: bool, rows: i32, D: i32, qmax: f32, queries: usize, scalesZeros: usize, prepared: usize, alphaBeta: usize, work: usize,
): void {
  const queryBytes = <usize>D << 2;
  const vrescale = constant(Constant.TWO_POW_112);
  const vkeep = constant(Constant.ZERO_HALF_KEEP);
  const vmagic = constant(Constant.ROUND_MAGIC);
  const v128s = constant(Constant.SHORTS_128);
  for (let m = 0; m < rows; m++) {
    const query = queries + <usize>m * queryBytes;
    // max|q∘s| as max(max, -min): two instructions a vector where abs takes three more
    let vmax = f32x4.splat(0);
    let vmin = f32x4.splat(0);
    let vbeta = f32x4.splat(0);
    for (let c = 0; c < D; c += 8) {
      const offset = <usize>c << 2;
      let vs0: v128, vs1: v128, vz0: v128, vz1: v128;
      if (HALVES) {
        const vh = v128.load(scalesZeros + (<usize>c << 1));
        const vz = v128.load(scalesZeros + (<usize>(D + c) << 1));
        vs0 = scaleHalvesToF32(vh, false, vrescale);
        vs1 = scaleHalvesToF32(vh, true, vrescale);
        vz0 = zeroHalvesToF32(vz, false, vrescale, vkeep);
        vz1 = zeroHalvesToF32(vz, true, vrescale, vkeep);
      } else {
        vs0 = v128.load(scalesZeros + offset);
        vs1 = v128.load(scalesZeros + offset, 16);
        vz0 = v128.load(scalesZeros + queryBytes + offset);
        vz1 = v128.load(scalesZeros + queryBytes + offset, 16);
      }
      const vq0 = v128.load(query + offset);
      const vq1 = v128.load(query + offset, 16);
      const vqs0 = f32x4.mul(vq0, vs0);
      const vqs1 = f32x4.mul(vq1, vs1);
      v128.store(work + offset, vqs0);
      v128.store(work + offset, vqs1, 16);
      vmax = f32x4.pmax(vmax, f32x4.pmax(vqs0, vqs1));
      vmin = f32x4.pmin(vmin, f32x4.pmin(vqs0, vqs1));
      vbeta = madd(vq1, vz1, madd(vq0, vz0, vbeta));
    }
    const amax = max(maxLane(vmax), -minLane(vmin));
    const vinverse = f32x4.splat(amax > 0 ? qmax / amax : 0);
    const out = prepared + <usize>(m * 2 * D);
    for (let c = 0; c < D; c += 16) {
      const offset = <usize>c << 2;
      const full = c + 16 <= D;
      const va = i16x8.narrow_i32x4_s(roundWith(f32x4.mul(v128.load(work + offset), vinverse), vmagic), roundWith(f32x4.mul(v128.load(work + offset, 16), vinverse), vmagic));
      const vb = full
        ? i16x8.narrow_i32x4_s(roundWith(f32x4.mul(v128.load(work + offset, 32), vinverse), vmagic), roundWith(f32x4.mul(v128.load(work + offset, 48), vinverse), vmagic))
        : i16x8.splat(0);
      if (mode == RELAXED) {
        // q̂ = 256·high + low: low is q̂'s low byte (signed), high the high byte of q̂ + 128.
        v128.store(out + <usize>c, i8x16.narrow_i16x8_s(i16x8.shr_s(i16x8.add(va, v128s), 8), i16x8.shr_s(i16x8.add(vb, v128s), 8)));
        v128.store(out + <usize>(D + c), i8x16.shuffle(va, vb, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30));
      } else if (full) {
        v128.store(out + (<usize>c << 1), v128.shuffle<i16>(va, vb, 0, 2, 4, 6, 8, 10, 12, 14));
        v128.store(out + (<usize>c << 1), v128.shuffle<i16>(va, vb, 1, 3, 5, 7, 9, 11, 13, 15), 16);
      } else {
        v128.store64_lane(out + (<usize>c << 1), v128.shuffle<i16>(va, va, 0, 2, 4, 6, 0, 2, 4, 6), 0);
        v128.store64_lane(out + (<usize>c << 1), v128.shuffle<i16>(va, va, 1, 3, 5, 7, 1, 3, 5, 7), 0, 8);
      }
    }
    store<f32>(alphaBeta + (<usize>m << 3), amax / qmax);
    store<f32>(alphaBeta + (<usize>m << 3), hsum(vbeta), 4);
  }
}

// One function per instance (see keyScoresRelaxed2).
function prepareKeyQueriesRelaxedHalves(rows: i32, D: i32, qmax: f32, queries: usize, scalesZeros: usize, prepared: usize, alphaBeta: usize, work: usize): void {
  prepareKeyQueries(RELAXED, true, rows, D, qmax, queries, scalesZeros, prepared, alphaBeta, work);
}
function prepareKeyQueriesRelaxedF32(rows: i32, D: i32, qmax: f32, queries: usize, scalesZeros: usize, prepared: usize, alphaBeta: usize, work: usize): void {
  prepareKeyQueries(RELAXED, false, rows, D, qmax, queries, scalesZeros, prepared, alphaBeta, work);
}
function prepareKeyQueriesWideHalves(rows: i32, D: i32, qmax: f32, queries: usize, scalesZeros: usize, prepared: usize, alphaBeta: usize, work: usize): void {
  prepareKeyQueries(WIDE, true, rows, D, qmax, queries, scalesZeros, prepared, alphaBeta, work);
}
function prepareKeyQueriesWideF32(rows: i32, D: i32, qmax: f32, queries: usize, scalesZeros: usize, prepared: usize, alphaBeta: usize, work: usize): void {
  prepareKeyQueries(WIDE, false, rows, D, qmax, queries, scalesZeros, prepared, alphaBeta, work);
}

/** Even and odd bytes of 16-bit lanes, shifted by `shift` and masked: the codes of the even and the
 *  odd channels (keys) or tokens (values) of a plane, as i16 lanes. */
// @ts-ignore: decorator
@inline function evenCodes(v: v128, shift: i32, vmask16: v128): v128 {
  return v128.and(shift == 0 ? v : i16x8.shr_u(v, shift), vmask16);
}
// @ts-ignore: decorator
@inline function oddCodes(v: v128, shift: i32, vmask16: v128, bits: i32): v128 {
  // The top plane's odd codes are the lane's top bits: nothing above them to mask.
  return shift + bits == 8 ? i16x8.shr_u(v, 8 + shift) : v128.and(i16x8.shr_u(v, 8 + shift), vmask16);
}

/** [Σ q̂·code for the token of plane 0, 1, 2, 3] of one code row (plane s = token j + s·W), one query
 *  row. BITS, mode and TAIL are compile-time constants at every call, so shifts are immediates and
 *  the loop holds no branches; TAIL (D % 16 == 8) adds a last chunk of 8 channels. */
// @ts-ignore: decorator
@inline function keyRowDot1(BITS: i32, mode: i32, TAIL: bool, D: i32, row: usize, q: usize, vmask8: v128, vmask16: v128): v128 {
  const planes = 8 / BITS;
  let vacc0 = i32x4.splat(0), vacc1 = i32x4.splat(0), vacc2 = i32x4.splat(0), vacc3 = i32x4.splat(0);
  let vlow0 = i32x4.splat(0), vlow1 = i32x4.splat(0), vlow2 = i32x4.splat(0), vlow3 = i32x4.splat(0);
  for (let c = 0; TAIL ? c < D : c + 16 <= D; c += 16) {
    const full = !TAIL || c + 16 <= D;
    const v = full ? v128.load(row + <usize>c) : v128.load64_zero(row + <usize>c);
    if (mode == RELAXED) {
      const qh = full ? v128.load(q + <usize>c) : v128.load64_zero(q + <usize>c);
      const ql = full ? v128.load(q + <usize>(D + c)) : v128.load64_zero(q + <usize>(D + c));
      const k0 = v128.and(v, vmask8);
      vacc0 = i16x8.add(vacc0, dotI8I7(qh, k0));
      vlow0 = i16x8.add(vlow0, dotI8I7(ql, k0));
      if (planes > 1) {
        const k1 = v128.and(i16x8.shr_u(v, BITS), vmask8);
        vacc1 = i16x8.add(vacc1, dotI8I7(qh, k1));
        vlow1 = i16x8.add(vlow1, dotI8I7(ql, k1));
      }
      if (planes > 2) {
        const k2 = v128.and(i16x8.shr_u(v, 2 * BITS), vmask8);
        vacc2 = i16x8.add(vacc2, dotI8I7(qh, k2));
        vlow2 = i16x8.add(vlow2, dotI8I7(ql, k2));
        const k3 = v128.and(i16x8.shr_u(v, 3 * BITS), vmask8);
        vacc3 = i16x8.add(vacc3, dotI8I7(qh, k3));
        vlow3 = i16x8.add(vlow3, dotI8I7(ql, k3));
      }
    } else {
      const qa = q + (<usize>c << 1);
      const qe = full ? v128.load(qa) : v128.load64_zero(qa);
      const qo = full ? v128.load(qa, 16) : v128.load64_zero(qa, 8);
      vacc0 = i32x4.add(vacc0, i32x4.add(i32x4.dot_i16x8_s(evenCodes(v, 0, vmask16), qe), i32x4.dot_i16x8_s(oddCodes(v, 0, vmask16, BITS), qo)));
      if (planes > 1) {
        vacc1 = i32x4.add(vacc1, i32x4.add(i32x4.dot_i16x8_s(evenCodes(v, BITS, vmask16), qe), i32x4.dot_i16x8_s(oddCodes(v, BITS, vmask16, BITS), qo)));
      }
      if (planes > 2) {
        vacc2 = i32x4.add(vacc2, i32x4.add(i32x4.dot_i16x8_s(evenCodes(v, 2 * BITS, vmask16), qe), i32x4.dot_i16x8_s(oddCodes(v, 2 * BITS, vmask16, BITS), qo)));
        vacc3 = i32x4.add(vacc3, i32x4.add(i32x4.dot_i16x8_s(evenCodes(v, 3 * BITS, vmask16), qe), i32x4.dot_i16x8_s(oddCodes(v, 3 * BITS, vmask16, BITS), qo)));
      }
    }
  }
  if (mode == RELAXED) {
    // i16 sums of the high and low bytes to i32: q̂ = 256·high + low.
    vacc0 = highLowSums(vacc0, vlow0);
    vacc1 = highLowSums(vacc1, vlow1);
    vacc2 = highLowSums(vacc2, vlow2);
    vacc3 = highLowSums(vacc3, vlow3);
  }
  return transposeSum(vacc0, vacc1, vacc2, vacc3, false);
}

/** [Σ q̂_m·code for m = 0..3] for the token of one plane (`shift` = s·BITS, a constant) of one code
 *  row, four query rows (prepared 2·D bytes apart, WIDE) sharing each unpacked vector of codes. */
// @ts-ignore: decorator
@inline function keyPlaneDot4(BITS: i32, TAIL: bool, D: i32, row: usize, shift: i32, q: usize, vmask16: v128): v128 {
  const stride = <usize>(2 * D);
  let vacc0 = i32x4.splat(0), vacc1 = i32x4.splat(0), vacc2 = i32x4.splat(0), vacc3 = i32x4.splat(0);
  for (let c = 0; TAIL ? c < D : c + 16 <= D; c += 16) {
    const full = !TAIL || c + 16 <= D;
    const v = full ? v128.load(row + <usize>c) : v128.load64_zero(row + <usize>c);
    const e = evenCodes(v, shift, vmask16);
    const o = oddCodes(v, shift, vmask16, BITS);
    const a = q + (<usize>c << 1);
    const half: usize = full ? 16 : 8;
    vacc0 = i32x4.add(vacc0, i32x4.add(i32x4.dot_i16x8_s(e, v128.load(a)), i32x4.dot_i16x8_s(o, v128.load(a + half))));
    vacc1 = i32x4.add(vacc1, i32x4.add(i32x4.dot_i16x8_s(e, v128.load(a + stride)), i32x4.dot_i16x8_s(o, v128.load(a + stride + half))));
    vacc2 = i32x4.add(vacc2, i32x4.add(i32x4.dot_i16x8_s(e, v128.load(a + 2 * stride)), i32x4.dot_i16x8_s(o, v128.load(a + 2 * stride + half))));
    vacc3 = i32x4.add(vacc3, i32x4.add(i32x4.dot_i16x8_s(e, v128.load(a + 3 * stride)), i32x4.dot_i16x8_s(o, v128.load(a + 3 * stride + half))));
  }
  return transposeSum(vacc0, vacc1, vacc2, vacc3, false);
}

/** keyRowDot1 (WIDE, no tail) for two code rows at once (at row and row + D), sharing each load of
 *  the query; their scores (α·dot + β, lane s = token j + s·W) go to out and out + 4 bytes, lanes
 *  `laneBytes` apart. */
// @ts-ignore: decorator
@inline function keyRowPairScores1(BITS: i32, D: i32, row: usize, q: usize, vmask16: v128,
  valpha: v128, vbeta: v128, out: usize, laneBytes: usize, planes: i32): void {
  let a0 = i32x4.splat(0), a1 = i32x4.splat(0), a2 = i32x4.splat(0), a3 = i32x4.splat(0);
  let b0 = i32x4.splat(0), b1 = i32x4.splat(0), b2 = i32x4.splat(0), b3 = i32x4.splat(0);
  for (let c = 0; c + 16 <= D; c += 16) {
    const v = v128.load(row + <usize>c);
    const v2 = v128.load(row + <usize>(D + c));
    const qa = q + (<usize>c << 1);
    const qe = v128.load(qa), qo = v128.load(qa, 16);
    a0 = i32x4.add(a0, i32x4.add(i32x4.dot_i16x8_s(evenCodes(v, 0, vmask16), qe), i32x4.dot_i16x8_s(oddCodes(v, 0, vmask16, BITS), qo)));
    b0 = i32x4.add(b0, i32x4.add(i32x4.dot_i16x8_s(evenCodes(v2, 0, vmask16), qe), i32x4.dot_i16x8_s(oddCodes(v2, 0, vmask16, BITS), qo)));
    if (planes > 1) {
      a1 = i32x4.add(a1, i32x4.add(i32x4.dot_i16x8_s(evenCodes(v, BITS, vmask16), qe), i32x4.dot_i16x8_s(oddCodes(v, BITS, vmask16, BITS), qo)));
      b1 = i32x4.add(b1, i32x4.add(i32x4.dot_i16x8_s(evenCodes(v2, BITS, vmask16), qe), i32x4.dot_i16x8_s(oddCodes(v2, BITS, vmask16, BITS), qo)));
    }
    if (planes > 2) {
      a2 = i32x4.add(a2, i32x4.add(i32x4.dot_i16x8_s(evenCodes(v, 2 * BITS, vmask16), qe), i32x4.dot_i16x8_s(oddCodes(v, 2 * BITS, vmask16, BITS), qo)));
      b2 = i32x4.add(b2, i32x4.add(i32x4.dot_i16x8_s(evenCodes(v2, 2 * BITS, vmask16), qe), i32x4.dot_i16x8_s(oddCodes(v2, 2 * BITS, vmask16, BITS), qo)));
      a3 = i32x4.add(a3, i32x4.add(i32x4.dot_i16x8_s(evenCodes(v, 3 * BITS, vmask16), qe), i32x4.dot_i16x8_s(oddCodes(v, 3 * BITS, vmask16, BITS), qo)));
      b3 = i32x4.add(b3, i32x4.add(i32x4.dot_i16x8_s(evenCodes(v2, 3 * BITS, vmask16), qe), i32x4.dot_i16x8_s(oddCodes(v2, 3 * BITS, vmask16, BITS), qo)));
    }
  }
  storeLanes(madd(valpha, f32x4.convert_i32x4_s(transposeSum(a0, a1, a2, a3, false)), vbeta), out, laneBytes, planes);
  storeLanes(madd(valpha, f32x4.convert_i32x4_s(transposeSum(b0, b1, b2, b3, false)), vbeta), out + 4, laneBytes, planes);
}

/** Stores lanes of v at up to four rows `rowBytes` apart (lanes >= count are dropped). */
// @ts-ignore: decorator
@inline function storeLanes(v: v128, at: usize, rowBytes: usize, count: i32): void {
  store<f32>(at, f32x4.extract_lane(v, 0));
  if (count > 1) store<f32>(at + rowBytes, f32x4.extract_lane(v, 1));
  if (count > 2) {
    store<f32>(at + 2 * rowBytes, f32x4.extract_lane(v, 2));
    store<f32>(at + 3 * rowBytes, f32x4.extract_lane(v, 3));
  }
}

/** The integer key kernel for one block, for a compile-time BITS. */
// @ts-ignore: decorator
@inline function keyBlockScores(
  BITS: i32, mode: i32, TAIL: bool, rows: i32, D: i32, codes: usize, prepared: usize, alphaBeta: usize, blockScores: usize, scoreRowBytes: usize,
): void {
  const planes = 8 / BITS;
  const rowBytes = (32 * BITS) >> 3; // W = G·b/8 with G = 32 (other G use the generic loop below)
  const vmask8 = byteMask(BITS);
  const vmask16 = shortMask(BITS);
  let m = 0;
  // RELAXED serves fewer than four rows (see qchannel_f32_scores).
  for (; mode == WIDE && m + 4 <= rows; m += 4) {
    const ab = alphaBeta + (<usize>m << 3);
    const valpha = f32x4(load<f32>(ab), load<f32>(ab, 8), load<f32>(ab, 16), load<f32>(ab, 24));
    const vbeta = f32x4(load<f32>(ab, 4), load<f32>(ab, 12), load<f32>(ab, 20), load<f32>(ab, 28));
    const q = prepared + <usize>(m * 2 * D);
    const out = blockScores + <usize>m * scoreRowBytes;
    for (let j = 0; j < rowBytes; j++) {
      const row = codes + <usize>(j * D);
      storeLanes(madd(valpha, f32x4.convert_i32x4_s(keyPlaneDot4(BITS, TAIL, D, row, 0, q, vmask16)), vbeta), out + (<usize>j << 2), scoreRowBytes, 4);
      if (planes > 1) {
        const at = out + (<usize>(j + rowBytes) << 2);
        storeLanes(madd(valpha, f32x4.convert_i32x4_s(keyPlaneDot4(BITS, TAIL, D, row, BITS, q, vmask16)), vbeta), at, scoreRowBytes, 4);
      }
      if (planes > 2) {
        storeLanes(madd(valpha, f32x4.convert_i32x4_s(keyPlaneDot4(BITS, TAIL, D, row, 2 * BITS, q, vmask16)), vbeta), out + (<usize>(j + 2 * rowBytes) << 2), scoreRowBytes, 4);
        storeLanes(madd(valpha, f32x4.convert_i32x4_s(keyPlaneDot4(BITS, TAIL, D, row, 3 * BITS, q, vmask16)), vbeta), out + (<usize>(j + 3 * rowBytes) << 2), scoreRowBytes, 4);
      }
    }
  }
  for (; m < rows; m++) {
    const valpha = f32x4.splat(load<f32>(alphaBeta + (<usize>m << 3)));
    const vbeta = f32x4.splat(load<f32>(alphaBeta + (<usize>m << 3), 4));
    const q = prepared + <usize>(m * 2 * D);
    const out = blockScores + <usize>m * scoreRowBytes;
    let j = 0;
    if (mode == WIDE && !TAIL) {
      // Two code rows share each query load (rowBytes is even: W = 4·b).
      for (; j < rowBytes; j += 2) {
        keyRowPairScores1(BITS, D, codes + <usize>(j * D), q, vmask16, valpha, vbeta, out + (<usize>j << 2), <usize>rowBytes << 2, planes);
      }
    }
    for (; j < rowBytes; j++) {
      // Lane s is the token j + s·W.
      const vscores = madd(valpha, f32x4.convert_i32x4_s(keyRowDot1(BITS, mode, TAIL, D, codes + <usize>(j * D), q, vmask8, vmask16)), vbeta);
      storeLanes(vscores, out + (<usize>j << 2), <usize>rowBytes << 2, planes);
    }
  }
}

// One function per (bits, mode, tail) instance of the key kernel, so that every branch on them is
// resolved at compile time. (Branches around inlined bodies are not enough: the optimizer merges
// bodies that differ only in a constant back into one, with `bits` a variable again.)
function keyScoresRelaxed2(rows: i32, D: i32, codes: usize, prepared: usize, alphaBeta: usize, blockScores: usize, scoreRowBytes: usize): void {
  keyBlockScores(2, RELAXED, false, rows, D, codes, prepared, alphaBeta, blockScores, scoreRowBytes);
}
function keyScoresRelaxed4(rows: i32, D: i32, codes: usize, prepared: usize, alphaBeta: usize, blockScores: usize, scoreRowBytes: usize): void {
  keyBlockScores(4, RELAXED, false, rows, D, codes, prepared, alphaBeta, blockScores, scoreRowBytes);
}
function keyScoresWide2(rows: i32, D: i32, codes: usize, prepared: usize, alphaBeta: usize, blockScores: usize, scoreRowBytes: usize): void {
  keyBlockScores(2, WIDE, false, rows, D, codes, prepared, alphaBeta, blockScores, scoreRowBytes);
}
function keyScoresWide4(rows: i32, D: i32, codes: usize, prepared: usize, alphaBeta: usize, blockScores: usize, scoreRowBytes: usize): void {
  keyBlockScores(4, WIDE, false, rows, D, codes, prepared, alphaBeta, blockScores, scoreRowBytes);
}
function keyScoresWide8(rows: i32, D: i32, codes: usize, prepared: usize, alphaBeta: usize, blockScores: usize, scoreRowBytes: usize): void {
  keyBlockScores(8, WIDE, false, rows, D, codes, prepared, alphaBeta, blockScores, scoreRowBytes);
}
function keyScoresWideTail2(rows: i32, D: i32, codes: usize, prepared: usize, alphaBeta: usize, blockScores: usize, scoreRowBytes: usize): void {
  keyBlockScores(2, WIDE, true, rows, D, codes, prepared, alphaBeta, blockScores, scoreRowBytes);
}
function keyScoresWideTail4(rows: i32, D: i32, codes: usize, prepared: usize, alphaBeta: usize, blockScores: usize, scoreRowBytes: usize): void {
  keyBlockScores(4, WIDE, true, rows, D, codes, prepared, alphaBeta, blockScores, scoreRowBytes);
}
function keyScoresWideTail8(rows: i32, D: i32, codes: usize, prepared: usize, alphaBeta: usize, blockScores: usize, scoreRowBytes: usize): void {
  keyBlockScores(8, WIDE, true, rows, D, codes, prepared, alphaBeta, blockScores, scoreRowBytes);
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
  const prepared = work + queryBytes; // SIMD: rows × 2·D bytes and α, β; scalar: G·D f32 codes
  if (ASC_FEATURE_SIMD && G == 32) {
    // The relaxed path keeps two i16 accumulators per row; with four rows they no longer fit in
    // registers and the 16-bit path is faster (measured), so it serves GQA groups.
    const tail = D % 16 != 0;
    const mode = ASC_FEATURE_RELAXED_SIMD && bits <= 4 && rows < 4 && !tail && D / 16 <= relaxedChunks(bits) ? RELAXED : WIDE;
    // Σ_c q̂·code over D channels must fit in an i32: at 8 bits and D > 258 the range of q̂ shrinks.
    const qmax = min(QMAX, <f32>floor(<f64>i32.MAX_VALUE / <f64>(((1 << bits) - 1) * D)));
    const alphaBeta = prepared + <usize>(rows * 2 * D);
    let touched: u32 = 0;
    for (let b = 0; b < blocks; b++) {
      const block = keys + <usize>b * blockStride;
      if (bits >= 4) touched |= touchBlock(block, blockStride);
      if (rows == 1) {
        if (mode == RELAXED) prepareKeyQueriesRelaxedHalves(rows, D, qmax, queries, block, prepared, alphaBeta, work);
        else prepareKeyQueriesWideHalves(rows, D, qmax, queries, block, prepared, alphaBeta, work);
      } else {
        scalesZerosToF32(D, block, scales); // zeros follow the scales in the block and in scratch
        if (mode == RELAXED) prepareKeyQueriesRelaxedF32(rows, D, qmax, queries, scales, prepared, alphaBeta, work);
        else prepareKeyQueriesWideF32(rows, D, qmax, queries, scales, prepared, alphaBeta, work);
      }
      const codes = block + (<usize>D << 2);
      const blockScores = scores + (<usize>(b * G) << 2);
      if (mode == RELAXED) {
        if (bits == 2) keyScoresRelaxed2(rows, D, codes, prepared, alphaBeta, blockScores, scoreRowBytes);
        else keyScoresRelaxed4(rows, D, codes, prepared, alphaBeta, blockScores, scoreRowBytes);
      } else if (tail) {
        if (bits == 2) keyScoresWideTail2(rows, D, codes, prepared, alphaBeta, blockScores, scoreRowBytes);
        else if (bits == 4) keyScoresWideTail4(rows, D, codes, prepared, alphaBeta, blockScores, scoreRowBytes);
        else keyScoresWideTail8(rows, D, codes, prepared, alphaBeta, blockScores, scoreRowBytes);
      } else {
        if (bits == 2) keyScoresWide2(rows, D, codes, prepared, alphaBeta, blockScores, scoreRowBytes);
        else if (bits == 4) keyScoresWide4(rows, D, codes, prepared, alphaBeta, blockScores, scoreRowBytes);
        else keyScoresWide8(rows, D, codes, prepared, alphaBeta, blockScores, scoreRowBytes);
      }
    }
    store<u32>(work, touched); // keeps the early loads
    return;
  }
  // Scalar build, and group sizes other than 32: f32 codes, scales folded into the query.
  const codes = prepared;
  for (let b = 0; b < blocks; b++) {
    const block = keys + <usize>b * blockStride;
    scalesZerosToF32(D, block, scales);
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
    scalesZerosToF32(VALUE_BLOCK * groups, block, scales); // zeros follow the scales in the block and in scratch
    unpackValueBlockF32(valid, D, bits, block + <usize>(4 * VALUE_BLOCK * groups), codes);
    for (let t = 0; t < valid; t++) {
      for (let m = 0; m < rows; m++) {
        const query = queries + <usize>m * queryBytes;
        let score: f32 = 0;
        for (let g = 0; g < groups; g++) {
          const groupOffset = <usize>(g * gv) << 2;
          score += load<f32>(scales + (<usize>(g * VALUE_BLOCK + t) << 2)) * dotF32(gv, query + groupOffset, codes + (<usize>(t * D) << 2) + groupOffset)
            + load<f32>(zeros + (<usize>(g * VALUE_BLOCK + t) << 2)) * load<f32>(querySums + (<usize>(m * groups + g) << 2));
        }
        store<f32>(scores + <usize>m * scoreRowBytes + (<usize>(first + t) << 2), score);
      }
    }
  }
}

// ── softmax ────────────────────────────────────────────────────────────────────────────────────

// exp(x) for x <= 0 (scores minus their maximum) as 2^t, t = x·log2 e: n = round(t) by the
// 1.5·2^23 trick, f = t - n in [-0.5, 0.5], 2^f by its Taylor polynomial of degree 6 (relative
// error below 2e-7 on that range; the rounding of t adds about |t|·6e-8), and 2^n added to the
// exponent bits. Below t = -125 (x < -86.6, where the result would no longer be a normal f32) it is 0.
// Every constant comes in as a local (see simd.ts: V8 rebuilds v128 constants at every use).
// @ts-ignore: decorator
@inline function exp2Poly(t: v128, vmagic: v128, c1: v128, c2: v128, c3: v128, c4: v128, c5: v128, c6: v128, one: v128): v128 {
  const vshifted = f32x4.add(t, vmagic);
  const f = f32x4.sub(t, f32x4.sub(vshifted, vmagic));
  let p = madd(c6, f, c5);
  p = madd(p, f, c4);
  p = madd(p, f, c3);
  p = madd(p, f, c2);
  p = madd(p, f, c1);
  p = madd(p, f, one);
  // vshifted's bits are 0x4b400000 + n; shifted left by 23 they are n·2^23 (the constant's bits fall off).
  return i32x4.add(p, i32x4.shl(vshifted, 23));
}

/**
 * In place, the unnormalized softmax of each row: scores become exp(score − max) over the row's
 * first `visible` entries and 0 after them, and the row's max and Σ exp go to rowMax[m] and rowSum[m]
 * (−∞ and 0 for a row that sees none). Row m sees clamp(firstVisible + floor(m / rowsPerToken), 0,
 * length) tokens (the causal rule: rows are grouped by query token, newest last). Dividing by the sum
 * is left to the fold of the ranges (attend.ts).
 */
export function f32_softmax_partial(
  rows: i32, length: i32, firstVisible: i32, rowsPerToken: i32, scores: usize, scoreStride: i32, rowMax: usize, rowSum: usize,
): void {
  for (let m = 0; m < rows; m++) {
    const row = scores + (<usize>m * <usize>scoreStride << 2);
    const visible = max(0, min(length, firstVisible + m / rowsPerToken));
    let maximum: f32 = -Infinity;
    let i = 0;
    if (ASC_FEATURE_SIMD) {
      let vmax = f32x4.splat(-Infinity);
      for (; i + 4 <= visible; i += 4) vmax = f32x4.pmax(vmax, v128.load(row + (<usize>i << 2)));
      maximum = maxLane(vmax);
    }
    for (; i < visible; i++) maximum = max(maximum, load<f32>(row + (<usize>i << 2)));
    let sum: f32 = 0;
    i = 0;
    if (ASC_FEATURE_SIMD && visible > 0) {
      const vmax = f32x4.splat(maximum);
      const vlog2e = constant(Constant.LOG2E), vmin = constant(Constant.EXP2_MIN), vmagic = constant(Constant.ROUND_MAGIC);
      const c1 = constant(Constant.EXP2_C1), c2 = constant(Constant.EXP2_C2), c3 = constant(Constant.EXP2_C3);
      const c4 = constant(Constant.EXP2_C4), c5 = constant(Constant.EXP2_C5), c6 = constant(Constant.EXP2_C6);
      const one = constant(Constant.ONE);
      let vsum = f32x4.splat(0);
      for (; i + 4 <= visible; i += 4) {
        const t = f32x4.mul(f32x4.sub(v128.load(row + (<usize>i << 2)), vmax), vlog2e);
        const p = v128.andnot(exp2Poly(t, vmagic, c1, c2, c3, c4, c5, c6, one), f32x4.lt(t, vmin));
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
    if (visible < length) memory.fill(row + (<usize>visible << 2), 0, <usize>(length - visible) << 2);
    store<f32>(rowMax + (<usize>m << 2), maximum);
    store<f32>(rowSum + (<usize>m << 2), sum);
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
 * â_t = round(w_t·s_{t,g} / γ), γ = max_t w_t·s_{t,g} / 32639, stored per token quad (32 bytes) as
 * the operands of the dot over tokens: WIDE: i16 [â0 â2 ×4] then [â1 â3 ×4] (the even and odd
 * tokens of each channel's 32-bit lane); RELAXED: i8 [high bytes of â0..â3 ×4] then [low bytes ×4].
 * Also adds Σ_t w_t·z_{t,g} to zeroSums. scales, zeros: f32 [groups][VB] (0 for tokens not in the
 * block); weights: the first `valid` of [VB] belong to the block.
 *   prepared: rows × groups × (VB/4) × 32 bytes;  gammas: rows × groups f32;  work: VB f32
 * The bytes come straight from the rounding (Constant.ROUND_MAGIC, simd.ts) with one byte shuffle per operand.
 */
// @ts-ignore: decorator
@inline function prepareValueWeights(
  rows: i32, valid: i32, groups: i32, mode: i32, HALVES: bool, weights: usize, weightRowBytes: usize,
  scalesZeros: usize, prepared: usize, gammas: usize, zeroSums: usize, work: usize, products: usize,
): void {
  const quads = VALUE_BLOCK >> 2;
  const vmagic = constant(Constant.ROUND_MAGIC);
  const v128s = constant(Constant.INTS_128);
  const vfirst = constant(mode == RELAXED ? Constant.BYTE_1_OF_INTS : Constant.SHORTS_0_2_OF_INTS);
  const vsecond = constant(mode == RELAXED ? Constant.BYTE_0_OF_INTS : Constant.SHORTS_1_3_OF_INTS);
  const vrescale = constant(Constant.TWO_POW_112);
  const vkeep = constant(Constant.ZERO_HALF_KEEP);
  for (let m = 0; m < rows; m++) {
    let w = weights + <usize>m * weightRowBytes;
    if (valid < VALUE_BLOCK) {
      // The weights after the block's last token belong to the next segment: read zeros instead.
      memory.copy(work, w, <usize>valid << 2);
      memory.fill(work + (<usize>valid << 2), 0, <usize>(VALUE_BLOCK - valid) << 2);
      w = work;
    }
    for (let g = 0; g < groups; g++) {
      // Weights and scales are >= 0, so the largest product is the largest magnitude.
      let vmax = f32x4.splat(0);
      let vzero = f32x4.splat(0);
      const s = scalesZeros + (<usize>(g * VALUE_BLOCK) << (HALVES ? 1 : 2));
      const z = scalesZeros + (<usize>((groups + g) * VALUE_BLOCK) << (HALVES ? 1 : 2));
      const p = products + (<usize>(g * VALUE_BLOCK) << 2);
      if (HALVES) {
        // Eight tokens at a time: their products w·s are kept for the second pass.
        for (let h = 0; h < (VALUE_BLOCK >> 3); h++) {
          const vs = v128.load(s + (<usize>h << 4));
          const vz = v128.load(z + (<usize>h << 4));
          const vw0 = v128.load(w + (<usize>h << 5));
          const vw1 = v128.load(w + (<usize>h << 5), 16);
          const vp0 = f32x4.mul(vw0, scaleHalvesToF32(vs, false, vrescale));
          const vp1 = f32x4.mul(vw1, scaleHalvesToF32(vs, true, vrescale));
          v128.store(p + (<usize>h << 5), vp0);
          v128.store(p + (<usize>h << 5), vp1, 16);
          vmax = f32x4.pmax(vmax, f32x4.pmax(vp0, vp1));
          vzero = madd(vw1, zeroHalvesToF32(vz, true, vrescale, vkeep), madd(vw0, zeroHalvesToF32(vz, false, vrescale, vkeep), vzero));
        }
      } else {
        for (let q = 0; q < quads; q++) {
          const offset = <usize>q << 4;
          const vw = v128.load(w + offset);
          vmax = f32x4.pmax(vmax, f32x4.mul(vw, v128.load(s + offset)));
          vzero = madd(vw, v128.load(z + offset), vzero);
        }
      }
      const amax = maxLane(vmax);
      const zs = zeroSums + (<usize>(m * groups + g) << 2);
      store<f32>(zs, load<f32>(zs) + hsum(vzero));
      store<f32>(gammas + (<usize>(m * groups + g) << 2), amax / QMAX);
      const vinverse = f32x4.splat(amax > 0 ? QMAX / amax : 0);
      const out = prepared + (<usize>((m * groups + g) * quads) << 5);
      for (let q = 0; q < quads; q++) {
        const offset = <usize>q << 4;
        const vproduct = HALVES ? v128.load(p + offset) : f32x4.mul(v128.load(w + offset), v128.load(s + offset));
        const vrounded = f32x4.add(f32x4.mul(vproduct, vinverse), vmagic);
        const at = out + (<usize>q << 5);
        if (mode == RELAXED) {
          // â = 256·high + low: low is â's low byte (signed), high the second byte of â + 128.
          v128.store(at, pickBytes(i32x4.add(vrounded, v128s), vfirst, Constant.BYTE_1_OF_INTS));
          v128.store(at, pickBytes(vrounded, vsecond, Constant.BYTE_0_OF_INTS), 16);
        } else {
          v128.store(at, pickBytes(vrounded, vfirst, Constant.SHORTS_0_2_OF_INTS));
          v128.store(at, pickBytes(vrounded, vsecond, Constant.SHORTS_1_3_OF_INTS), 16);
        }
      }
    }
  }
}

// A value block's channel quad is read in VB/4 = 8 steps of 4 tokens: step i is plane i % P of the
// chunk i / P (P = 8/b planes), and its prepared weights are the 32 bytes at w + 32·i.

/** The codes of step i (a constant) as bytes: the RELAXED operand (4 tokens of each of 4 channels). */
// @ts-ignore: decorator
@inline function stepBytes(BITS: i32, codes: usize, i: i32, vmask8: v128): v128 {
  const planes = 8 / BITS;
  const v = v128.load(codes + <usize>((i / planes) << 4));
  const shift = (i % planes) * BITS;
  return v128.and(shift == 0 ? v : i16x8.shr_u(v, shift), vmask8);
}


/** Σ_t â·code per channel of two adjacent channel quads of a value block (at codes and codes +
 *  quadBytes) for ROWS (1 or 4, a constant) query rows (WIDE) whose prepared weights are
 *  `rowStride` bytes apart, added into out as γ·sum (γ of row m at gammas + m·gammaStride). The two
 *  quads share each load of a row's weights; each plane shifts the chunks right by BITS (a
 *  constant) and the weights advance 32 bytes a plane. */
// @ts-ignore: decorator
@inline function valueQuadPairRows(BITS: i32, ROWS: i32, codes: usize, quadBytes: usize, w: usize, rowStride: usize,
  out: usize, outRowBytes: usize, gammas: usize, gammaStride: usize, vmask16: v128): void {
  const planes = 8 / BITS;
  const chunks = (VALUE_BLOCK * BITS) >> 5;
  let a0 = i32x4.splat(0), a1 = i32x4.splat(0), a2 = i32x4.splat(0), a3 = i32x4.splat(0);
  let b0 = i32x4.splat(0), b1 = i32x4.splat(0), b2 = i32x4.splat(0), b3 = i32x4.splat(0);
  let wq = w;
  for (let r = 0; r < chunks; r++) {
    let v = v128.load(codes + (<usize>r << 4));
    let v2 = v128.load(codes + quadBytes + (<usize>r << 4));
    for (let s = 0; s < planes; s++) {
      const e = v128.and(v, vmask16), o = v128.and(i16x8.shr_u(v, 8), vmask16);
      const e2 = v128.and(v2, vmask16), o2 = v128.and(i16x8.shr_u(v2, 8), vmask16);
      let we = v128.load(wq), wo = v128.load(wq, 16);
      a0 = i32x4.add(a0, i32x4.add(i32x4.dot_i16x8_s(e, we), i32x4.dot_i16x8_s(o, wo)));
      b0 = i32x4.add(b0, i32x4.add(i32x4.dot_i16x8_s(e2, we), i32x4.dot_i16x8_s(o2, wo)));
      if (ROWS == 4) {
        we = v128.load(wq + rowStride); wo = v128.load(wq + rowStride, 16);
        a1 = i32x4.add(a1, i32x4.add(i32x4.dot_i16x8_s(e, we), i32x4.dot_i16x8_s(o, wo)));
        b1 = i32x4.add(b1, i32x4.add(i32x4.dot_i16x8_s(e2, we), i32x4.dot_i16x8_s(o2, wo)));
        we = v128.load(wq + 2 * rowStride); wo = v128.load(wq + 2 * rowStride, 16);
        a2 = i32x4.add(a2, i32x4.add(i32x4.dot_i16x8_s(e, we), i32x4.dot_i16x8_s(o, wo)));
        b2 = i32x4.add(b2, i32x4.add(i32x4.dot_i16x8_s(e2, we), i32x4.dot_i16x8_s(o2, wo)));
        we = v128.load(wq + 3 * rowStride); wo = v128.load(wq + 3 * rowStride, 16);
        a3 = i32x4.add(a3, i32x4.add(i32x4.dot_i16x8_s(e, we), i32x4.dot_i16x8_s(o, wo)));
        b3 = i32x4.add(b3, i32x4.add(i32x4.dot_i16x8_s(e2, we), i32x4.dot_i16x8_s(o2, wo)));
      }
      wq += 32;
      v = i16x8.shr_u(v, BITS);
      v2 = i16x8.shr_u(v2, BITS);
    }
  }
  addScaledPair(out, f32x4.splat(load<f32>(gammas)), a0, b0);
  if (ROWS == 4) {
    addScaledPair(out + outRowBytes, f32x4.splat(load<f32>(gammas + gammaStride)), a1, b1);
    addScaledPair(out + 2 * outRowBytes, f32x4.splat(load<f32>(gammas + 2 * gammaStride)), a2, b2);
    addScaledPair(out + 3 * outRowBytes, f32x4.splat(load<f32>(gammas + 3 * gammaStride)), a3, b3);
  }
}

/** out[0..7] += γ·(a, b) (two i32 vectors of channel sums). */
// @ts-ignore: decorator
@inline function addScaledPair(out: usize, vgamma: v128, a: v128, b: v128): void {
  v128.store(out, madd(vgamma, f32x4.convert_i32x4_s(a), v128.load(out)));
  v128.store(out, madd(vgamma, f32x4.convert_i32x4_s(b), v128.load(out, 16)), 16);
}

/** Σ_t â·code per channel of one channel quad for one query row (RELAXED), the eight steps unrolled
 *  (every shift and offset a constant; as a loop over chunks and planes the MHA decode step took
 *  10% longer): the loop of the MHA decode step in the relaxed build. The
 *  products of the high and of the low weight bytes are summed in i16 lanes: at most 8 steps × 2
 *  products × 128 × 15 = 30720 per lane. */
// @ts-ignore: decorator
@inline function valueQuadRow1Relaxed(BITS: i32, codes: usize, w: usize, out: usize, gamma: f32, vmask8: v128): void {
  let k = stepBytes(BITS, codes, 0, vmask8);
  let vhigh = dotI8I7(v128.load(w), k);
  let vlow = dotI8I7(v128.load(w, 16), k);
  k = stepBytes(BITS, codes, 1, vmask8);
  vhigh = i16x8.add(vhigh, dotI8I7(v128.load(w, 32), k));
  vlow = i16x8.add(vlow, dotI8I7(v128.load(w, 48), k));
  k = stepBytes(BITS, codes, 2, vmask8);
  vhigh = i16x8.add(vhigh, dotI8I7(v128.load(w, 64), k));
  vlow = i16x8.add(vlow, dotI8I7(v128.load(w, 80), k));
  k = stepBytes(BITS, codes, 3, vmask8);
  vhigh = i16x8.add(vhigh, dotI8I7(v128.load(w, 96), k));
  vlow = i16x8.add(vlow, dotI8I7(v128.load(w, 112), k));
  k = stepBytes(BITS, codes, 4, vmask8);
  vhigh = i16x8.add(vhigh, dotI8I7(v128.load(w, 128), k));
  vlow = i16x8.add(vlow, dotI8I7(v128.load(w, 144), k));
  k = stepBytes(BITS, codes, 5, vmask8);
  vhigh = i16x8.add(vhigh, dotI8I7(v128.load(w, 160), k));
  vlow = i16x8.add(vlow, dotI8I7(v128.load(w, 176), k));
  k = stepBytes(BITS, codes, 6, vmask8);
  vhigh = i16x8.add(vhigh, dotI8I7(v128.load(w, 192), k));
  vlow = i16x8.add(vlow, dotI8I7(v128.load(w, 208), k));
  k = stepBytes(BITS, codes, 7, vmask8);
  vhigh = i16x8.add(vhigh, dotI8I7(v128.load(w, 224), k));
  vlow = i16x8.add(vlow, dotI8I7(v128.load(w, 240), k));
  v128.store(out, madd(f32x4.splat(gamma), f32x4.convert_i32x4_s(highLowSums(vhigh, vlow)), v128.load(out)));
}

/** The integer value kernel over one block's channel quads, for a compile-time BITS. */
// @ts-ignore: decorator
@inline function valueBlockAccumulate(
  BITS: i32, mode: i32, rows: i32, D: i32, gv: i32, codes: usize, prepared: usize, gammas: usize, out: usize,
): void {
  const groups = D / gv;
  const quadBytes = <usize>((VALUE_BLOCK * BITS) >> 5) << 4;
  const groupWeights = <usize>((VALUE_BLOCK >> 2) << 5);
  const rowWeights = <usize>groups * groupWeights;
  const outRowBytes = <usize>D << 2;
  const vmask8 = byteMask(BITS);
  const vmask16 = shortMask(BITS);
  let m = 0;
  // RELAXED serves fewer than four rows (see qtoken_f32_accumulate).
  for (; mode == WIDE && m + 4 <= rows; m += 4) {
    // gv is a multiple of 8, so a group's channel quads come in pairs.
    for (let c = 0; c < D; c += 8) {
      const g = c / gv;
      valueQuadPairRows(BITS, 4, codes + <usize>(c >> 2) * quadBytes, quadBytes, prepared + <usize>m * rowWeights + <usize>g * groupWeights, rowWeights,
        out + <usize>m * outRowBytes + (<usize>c << 2), outRowBytes, gammas + (<usize>(m * groups + g) << 2), <usize>groups << 2, vmask16);
    }
  }
  for (; m < rows; m++) {
    for (let g = 0; g < groups; g++) {
      const gammaAt = gammas + (<usize>(m * groups + g) << 2);
      const gamma = load<f32>(gammaAt);
      if (gamma == 0) continue; // every weight of this row is 0 here (causal mask)
      const w = prepared + <usize>m * rowWeights + <usize>g * groupWeights;
      if (mode == WIDE) {
        // gv is a multiple of 8, so a group's channel quads come in pairs.
        for (let c = g * gv; c < (g + 1) * gv; c += 8) {
          valueQuadPairRows(BITS, 1, codes + <usize>(c >> 2) * quadBytes, quadBytes, w, 0, out + <usize>m * outRowBytes + (<usize>c << 2), 0, gammaAt, 0, vmask16);
        }
      } else {
        for (let c = g * gv; c < (g + 1) * gv; c += 4) {
          valueQuadRow1Relaxed(BITS, codes + <usize>(c >> 2) * quadBytes, w, out + <usize>m * outRowBytes + (<usize>c << 2), gamma, vmask8);
        }
      }
    }
  }
}

// One function per (bits, mode) instance of the value kernel (see keyScoresRelaxed2).
function prepareValueWeightsRelaxedHalves(valid: i32, groups: i32, weights: usize, block: usize,
  prepared: usize, gammas: usize, zeroSums: usize, work: usize, products: usize): void {
  prepareValueWeights(1, valid, groups, RELAXED, true, weights, 0, block, prepared, gammas, zeroSums, work, products);
}
function prepareValueWeightsWideHalves(valid: i32, groups: i32, weights: usize, block: usize,
  prepared: usize, gammas: usize, zeroSums: usize, work: usize, products: usize): void {
  prepareValueWeights(1, valid, groups, WIDE, true, weights, 0, block, prepared, gammas, zeroSums, work, products);
}
function prepareValueWeightsRelaxedF32(rows: i32, valid: i32, groups: i32, weights: usize, weightRowBytes: usize,
  scalesZeros: usize, prepared: usize, gammas: usize, zeroSums: usize, work: usize): void {
  prepareValueWeights(rows, valid, groups, RELAXED, false, weights, weightRowBytes, scalesZeros, prepared, gammas, zeroSums, work, 0);
}
function prepareValueWeightsWideF32(rows: i32, valid: i32, groups: i32, weights: usize, weightRowBytes: usize,
  scalesZeros: usize, prepared: usize, gammas: usize, zeroSums: usize, work: usize): void {
  prepareValueWeights(rows, valid, groups, WIDE, false, weights, weightRowBytes, scalesZeros, prepared, gammas, zeroSums, work, 0);
}
function valueSumsRelaxed2(rows: i32, D: i32, gv: i32, codes: usize, prepared: usize, gammas: usize, out: usize): void {
  valueBlockAccumulate(2, RELAXED, rows, D, gv, codes, prepared, gammas, out);
}
function valueSumsRelaxed4(rows: i32, D: i32, gv: i32, codes: usize, prepared: usize, gammas: usize, out: usize): void {
  valueBlockAccumulate(4, RELAXED, rows, D, gv, codes, prepared, gammas, out);
}
function valueSumsWide2(rows: i32, D: i32, gv: i32, codes: usize, prepared: usize, gammas: usize, out: usize): void {
  valueBlockAccumulate(2, WIDE, rows, D, gv, codes, prepared, gammas, out);
}
function valueSumsWide4(rows: i32, D: i32, gv: i32, codes: usize, prepared: usize, gammas: usize, out: usize): void {
  valueBlockAccumulate(4, WIDE, rows, D, gv, codes, prepared, gammas, out);
}
function valueSumsWide8(rows: i32, D: i32, gv: i32, codes: usize, prepared: usize, gammas: usize, out: usize): void {
  valueBlockAccumulate(8, WIDE, rows, D, gv, codes, prepared, gammas, out);
}

/** out[m] += Σ_t w[m][t]·(code·s_{t,g} + z_{t,g}) over value blocks (the KIVI default for values);
 *  `tokens` may end inside the last block.
 *  scratch: 4·(2·VB·D/gv + 2·rows·D/gv + VB) + rows·D/gv·(VB/4)·32 bytes. */
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
  const work = gammas + (<usize>(rows * groups) << 2);
  const prepared = work + (<usize>VALUE_BLOCK << 2);
  const codeOffset = <usize>(4 * VALUE_BLOCK * groups);
  memory.fill(zeroSums, 0, <usize>(rows * groups) << 2);
  let touched: u32 = 0;
  for (let first = 0; first < tokens; first += VALUE_BLOCK) {
    const block = values + <usize>(first / VALUE_BLOCK) * blockStride;
    const valid = min(VALUE_BLOCK, tokens - first);
    if (bits >= 4 && first + VALUE_BLOCK <= tokens) touched |= touchBlock(block, blockStride);
    // Halves of tokens not yet in the block are 0 (a block is zeroed when its first token arrives).
    const w0 = weights + (<usize>first << 2);
    if (ASC_FEATURE_SIMD) {
      const mode = ASC_FEATURE_RELAXED_SIMD && bits <= 4 && rows < 4 ? RELAXED : WIDE;
      const codes = block + codeOffset;
      // One row converts the halves as it reads them (the products go where the scales would);
      // several rows share one conversion.
      if (rows == 1) {
        if (mode == RELAXED) prepareValueWeightsRelaxedHalves(valid, groups, w0, block, prepared, gammas, zeroSums, work, scales);
        else prepareValueWeightsWideHalves(valid, groups, w0, block, prepared, gammas, zeroSums, work, scales);
      } else {
        scalesZerosToF32(VALUE_BLOCK * groups, block, scales); // zeros follow the scales in the block and in scratch
        if (mode == RELAXED) prepareValueWeightsRelaxedF32(rows, valid, groups, w0, weightRowBytes, scales, prepared, gammas, zeroSums, work);
        else prepareValueWeightsWideF32(rows, valid, groups, w0, weightRowBytes, scales, prepared, gammas, zeroSums, work);
      }
      if (mode == RELAXED) {
        if (bits == 2) valueSumsRelaxed2(rows, D, gv, codes, prepared, gammas, out);
        else valueSumsRelaxed4(rows, D, gv, codes, prepared, gammas, out);
      } else {
        if (bits == 2) valueSumsWide2(rows, D, gv, codes, prepared, gammas, out);
        else if (bits == 4) valueSumsWide4(rows, D, gv, codes, prepared, gammas, out);
        else valueSumsWide8(rows, D, gv, codes, prepared, gammas, out);
      }
      // Each block adds its own Σ w·z, so the result depends only on the blocks, not on how many
      // calls (stored chunks, attention ranges) they are read in.
      addZeroSums(rows, D, gv, zeroSums, out);
      continue;
    }
    // Scalar build: per token, the weight folded into each group's scale and zero.
    scalesZerosToF32(VALUE_BLOCK * groups, block, scales); // zeros follow the scales in the block and in scratch
    const mask: u32 = (1 << bits) - 1;
    const codes = block + codeOffset;
    for (let t = 0; t < valid; t++) {
      const shift = valueCodeShift(t, bits);
      for (let m = 0; m < rows; m++) {
        const wt = load<f32>(w0 + <usize>m * weightRowBytes + (<usize>t << 2));
        if (wt == 0) continue;
        const acc = out + <usize>m * outBytes;
        for (let g = 0; g < groups; g++) {
          const ws = wt * load<f32>(scales + (<usize>(g * VALUE_BLOCK + t) << 2));
          const wz = wt * load<f32>(zeros + (<usize>(g * VALUE_BLOCK + t) << 2));
          for (let c = g * gv; c < (g + 1) * gv; c++) {
            const code = <f32>((<u32>load<u8>(codes + <usize>valueCodeByte(c, t, bits)) >> shift) & mask);
            const at = acc + (<usize>c << 2);
            store<f32>(at, load<f32>(at) + ws * code + wz);
          }
        }
      }
    }
  }
  store<u32>(work, touched); // keeps the early loads
}

/** out[m][c] += zeroSums[m][group of c], then the sums are cleared (SIMD builds). */
function addZeroSums(rows: i32, D: i32, gv: i32, zeroSums: usize, out: usize): void {
  const groups = D / gv;
  const outBytes = <usize>D << 2;
  for (let m = 0; m < rows; m++) {
    for (let g = 0; g < groups; g++) {
      const at = zeroSums + (<usize>(m * groups + g) << 2);
      const vzero = f32x4.splat(load<f32>(at));
      store<f32>(at, 0);
      const acc = out + <usize>m * outBytes + (<usize>(g * gv) << 2);
      for (let c = 0; c < gv; c += 4) v128.store(acc + (<usize>c << 2), f32x4.add(v128.load(acc + (<usize>c << 2)), vzero));
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
    scalesZerosToF32(D, block, scales);
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

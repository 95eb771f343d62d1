// Weight matrix × vector for GGUF models: y = W·x with W in ggml's Q8_0, Q4_0 or F16 encoding and x,
// y in f32. Row-major W [rows][cols], rows = outputs, as llama2.c and ggml (ne[0] = cols).
//
// Q8_0 and Q4_0 multiply in integers, as ggml's vec_dot_q8_0_q8_0 / vec_dot_q4_0_q8_0 do: x is
// quantized per 32-element block to int8 (d_x = amax/127, codes rounded to nearest even), each
// block's integer dot product is exact, and the row's sum is taken in f32 block after block:
//
//   acc = 0;  for b in blocks:  acc = acc + (d_w[b]·d_x[b])·isum[b]        (each operation an f32)
//
// in the same order in every build and in the TypeScript reference (src/gguf/matvec-reference.ts),
// so every build gives the same bits. Q4_0's isum is Σ x̂·(q − 8) = Σ x̂·q − 8·Σ x̂.
// F16 converts the halves to f32 and sums products in f32 in 8 interleaved partial sums, also the
// same in every build (no fused multiply-add), then a fixed tree and a sequential tail.
//
// Layouts (written by the facade, src/gguf/weights.ts; R = rows rounded up to a multiple of 4, the
// extra rows zero; B = cols / 32):
//
//   Q8_0 codes   i8  [R][cols]           element j of row r at codes + r·cols + j
//   Q4_0 codes   u8  [R][cols / 2]       block b of row r: 16 bytes at codes + r·cols/2 + 16·b; byte j
//                                        holds element 32b + j (low nibble) and 32b + 16 + j (high),
//                                        ggml's block_q4_0 without its d
//   scales       f32 [R/4][B][4]         d of rows 4g..4g+3 in block b at scales + 16·(g·B + b)
//   F16 halves   u16 [rows][cols]
//
// Scratch (the quantized x, written here; SCRATCH_BYTES(cols) bytes):
//
//   | d_x f32 [B] | Σx̂ i32 [B] | x̂ i8 [cols] | |x̂| i8 [cols] | sign(x̂) i8 [cols] (0 or -1) | x̂ i16 [cols] |
//
// The relaxed build multiplies with i32x4.relaxed_dot_i8x16_i7x16_add_s, whose second operand must
// be in 0..127: Q4_0's nibbles are; for Q8_0 the operands are |x̂| and w with x̂'s sign applied
// ((w ^ s) − s). The simd build widens the codes to i16 and uses i32x4.dot_i16x8_s. Four rows share
// each load of x̂; their four integer sums are transposed into one vector, so the f32 steps above
// run on the four rows' lanes at once.
//
// The kernels write R outputs (out needs room for R floats) and read, but never write, the padding
// rows. Their inputs are trusted: the facade checked the shapes and that every weight is finite.

import { f16ToF32 } from './half';

// V8 rebuilds a v128 constant at every use, inside loops too (simd.ts); i32x4.relaxed_dot_i8x16_i7x16_add_s
// hides one (the 16-bit ones of its pmaddwd on x64). The kernels read their constants from this
// table once per call into locals, and spell the dot as its two halves.
const MATVEC_CONSTANTS: usize = memory.data<u32>([
  0x00010001, 0x00010001, 0x00010001, 0x00010001, // SHORT_ONES
  0x0f0f0f0f, 0x0f0f0f0f, 0x0f0f0f0f, 0x0f0f0f0f, // LOW_NIBBLES
], 16);

/** Elements per block (ggml's QK8_0 = QK4_0). */
// @ts-ignore: decorator
@inline const QK: i32 = 32;

/** Bytes of scratch the Q8_0 and Q4_0 kernels need for `cols` (a multiple of 32) inputs. */
export function matvec_scratch_bytes(cols: i32): i32 {
  return (cols >> 5) * 8 + cols * 5;
}

// @ts-ignore: decorator
@inline function roundToI32Scalar(x: f32): i32 {
  // round to nearest even for |x| < 2^22 (the 1.5·2^23 trick of simd.ts), never traps (NaN gives garbage)
  return reinterpret<i32>(x + 12582912.0) - 0x4b400000;
}

/** Quantizes x [cols] per 32-block into the scratch (layout above). */
function quantizeActivation(cols: i32, x: usize, scratch: usize): void {
  const blocks = cols >> 5;
  const dx = scratch;
  const sx = scratch + (<usize>blocks << 2);
  const xq = scratch + (<usize>blocks << 3);
  const xa = xq + <usize>cols;
  const xs = xa + <usize>cols;
  const xw = xs + <usize>cols;
  for (let b = 0; b < blocks; b++) {
    const src = x + (<usize>b << 7);
    const at = <usize>b << 5;
    if (ASC_FEATURE_SIMD) {
      const v0 = v128.load(src), v1 = v128.load(src, 16), v2 = v128.load(src, 32), v3 = v128.load(src, 48);
      const v4 = v128.load(src, 64), v5 = v128.load(src, 80), v6 = v128.load(src, 96), v7 = v128.load(src, 112);
      const m = f32x4.max(
        f32x4.max(f32x4.max(f32x4.abs(v0), f32x4.abs(v1)), f32x4.max(f32x4.abs(v2), f32x4.abs(v3))),
        f32x4.max(f32x4.max(f32x4.abs(v4), f32x4.abs(v5)), f32x4.max(f32x4.abs(v6), f32x4.abs(v7))),
      );
      const m2 = f32x4.max(m, i32x4.shuffle(m, m, 2, 3, 0, 1));
      const amax = f32x4.extract_lane(f32x4.max(m2, i32x4.shuffle(m2, m2, 1, 0, 3, 2)), 0);
      const d: f32 = amax / 127;
      const id: f32 = d != 0 ? <f32>1 / d : 0;
      store<f32>(dx + (<usize>b << 2), d);
      const vid = f32x4.splat(id);
      const magic = f32x4.splat(12582912.0);
      const q0 = i32x4.sub(f32x4.add(f32x4.mul(v0, vid), magic), magic);
      const q1 = i32x4.sub(f32x4.add(f32x4.mul(v1, vid), magic), magic);
      const q2 = i32x4.sub(f32x4.add(f32x4.mul(v2, vid), magic), magic);
      const q3 = i32x4.sub(f32x4.add(f32x4.mul(v3, vid), magic), magic);
      const q4 = i32x4.sub(f32x4.add(f32x4.mul(v4, vid), magic), magic);
      const q5 = i32x4.sub(f32x4.add(f32x4.mul(v5, vid), magic), magic);
      const q6 = i32x4.sub(f32x4.add(f32x4.mul(v6, vid), magic), magic);
      const q7 = i32x4.sub(f32x4.add(f32x4.mul(v7, vid), magic), magic);
      const s = i32x4.add(i32x4.add(i32x4.add(q0, q1), i32x4.add(q2, q3)), i32x4.add(i32x4.add(q4, q5), i32x4.add(q6, q7)));
      const s2 = i32x4.add(s, i32x4.shuffle(s, s, 2, 3, 0, 1));
      store<i32>(sx + (<usize>b << 2), i32x4.extract_lane(i32x4.add(s2, i32x4.shuffle(s2, s2, 1, 0, 3, 2)), 0));
      const w0 = i16x8.narrow_i32x4_s(q0, q1), w1 = i16x8.narrow_i32x4_s(q2, q3);
      const w2 = i16x8.narrow_i32x4_s(q4, q5), w3 = i16x8.narrow_i32x4_s(q6, q7);
      v128.store(xw + (at << 1), w0);
      v128.store(xw + (at << 1), w1, 16);
      v128.store(xw + (at << 1), w2, 32);
      v128.store(xw + (at << 1), w3, 48);
      const b0 = i8x16.narrow_i16x8_s(w0, w1), b1 = i8x16.narrow_i16x8_s(w2, w3);
      v128.store(xq + at, b0);
      v128.store(xq + at, b1, 16);
      v128.store(xa + at, i8x16.abs(b0));
      v128.store(xa + at, i8x16.abs(b1), 16);
      v128.store(xs + at, i8x16.shr_s(b0, 7));
      v128.store(xs + at, i8x16.shr_s(b1, 7), 16);
    } else {
      let amax: f32 = 0;
      for (let j = 0; j < QK; j++) amax = max(amax, abs(load<f32>(src + (<usize>j << 2))));
      const d: f32 = amax / 127;
      const id: f32 = d != 0 ? <f32>1 / d : 0;
      store<f32>(dx + (<usize>b << 2), d);
      let sum = 0;
      for (let j = 0; j < QK; j++) {
        const q = min(127, max(-128, roundToI32Scalar(load<f32>(src + (<usize>j << 2)) * id)));
        sum += q;
        store<i8>(xq + at + j, <i8>q);
        store<i8>(xa + at + j, <i8>abs(q));
        store<i8>(xs + at + j, q < 0 ? -1 : 0);
        store<i16>(xw + ((at + j) << 1), <i16>q);
      }
      store<i32>(sx + (<usize>b << 2), sum);
    }
  }
}

/** [Σ lanes of a, of b, of c, of d]. */
// @ts-ignore: decorator
@inline function transposeSum(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = i32x4.add(i32x4.shuffle(a, b, 0, 4, 1, 5), i32x4.shuffle(a, b, 2, 6, 3, 7));
  const cd = i32x4.add(i32x4.shuffle(c, d, 0, 4, 1, 5), i32x4.shuffle(c, d, 2, 6, 3, 7));
  return i32x4.add(i32x4.shuffle(ab, cd, 0, 1, 4, 5), i32x4.shuffle(ab, cd, 2, 3, 6, 7));
}

/** Integer dot of one Q8_0 row's block (32 codes at w) with the quantized x block `at`, as 4 lanes to sum. */
// @ts-ignore: decorator
@inline function q8BlockDot(w: usize, xa: usize, xs: usize, xw: usize, vones: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    const s0 = v128.load(xs), s1 = v128.load(xs, 16);
    const w0 = i8x16.sub(v128.xor(v128.load(w), s0), s0);
    const w1 = i8x16.sub(v128.xor(v128.load(w, 16), s1), s1);
    // pairs of products (at most 2·127·127, no i16 overflow), then pairs of pairs into i32 lanes
    return i32x4.add(
      i32x4.dot_i16x8_s(i16x8.relaxed_dot_i8x16_i7x16_s(w0, v128.load(xa)), vones),
      i32x4.dot_i16x8_s(i16x8.relaxed_dot_i8x16_i7x16_s(w1, v128.load(xa, 16)), vones),
    );
  }
  const v0 = v128.load(w), v1 = v128.load(w, 16);
  return i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(v0), v128.load(xw)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(v0), v128.load(xw, 16))),
    i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(v1), v128.load(xw, 32)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(v1), v128.load(xw, 48))),
  );
}

/** Integer dot Σ x̂·q (q the raw nibbles 0..15) of one Q4_0 row's block (16 bytes at w), as 4 lanes to sum. */
// @ts-ignore: decorator
@inline function q4BlockDot(w: usize, xq: usize, xw: usize, vlow: v128, vones: v128): v128 {
  const v = v128.load(w);
  const lo = v128.and(v, vlow);
  const hi = v128.and(i16x8.shr_u(v, 4), vlow);
  if (ASC_FEATURE_RELAXED_SIMD) {
    // |pair sums| <= 2·128·15 and their sum over both halves <= 4·128·15: i16 holds both
    return i32x4.dot_i16x8_s(i16x8.add(i16x8.relaxed_dot_i8x16_i7x16_s(v128.load(xq), lo), i16x8.relaxed_dot_i8x16_i7x16_s(v128.load(xq, 16), hi)), vones);
  }
  return i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(lo), v128.load(xw)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(lo), v128.load(xw, 16))),
    i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(hi), v128.load(xw, 32)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(hi), v128.load(xw, 48))),
  );
}

/** y = W·x for a Q8_0 matrix (layouts above); writes ceil(rows/4)·4 outputs. */
export function q8_0_f32_matvec(rows: i32, cols: i32, x: usize, codes: usize, scales: usize, out: usize, scratch: usize): void {
  quantizeActivation(cols, x, scratch);
  const blocks = cols >> 5;
  const dx = scratch;
  const xq = scratch + (<usize>blocks << 3);
  const xa = xq + <usize>cols;
  const xs = xa + <usize>cols;
  const xw = xs + <usize>cols;
  const groups = (rows + 3) >> 2;
  const rowBytes = <usize>cols;
  for (let g = 0; g < groups; g++) {
    const w = codes + <usize>(g << 2) * rowBytes;
    const sc = scales + (<usize>g * <usize>blocks << 4);
    if (ASC_FEATURE_SIMD) {
      const vones = v128.load(MATVEC_CONSTANTS);
      let vacc = f32x4.splat(0);
      for (let b = 0; b < blocks; b++) {
        const at = <usize>b << 5;
        const t0 = q8BlockDot(w + at, xa + at, xs + at, xw + (at << 1), vones);
        const t1 = q8BlockDot(w + rowBytes + at, xa + at, xs + at, xw + (at << 1), vones);
        const t2 = q8BlockDot(w + 2 * rowBytes + at, xa + at, xs + at, xw + (at << 1), vones);
        const t3 = q8BlockDot(w + 3 * rowBytes + at, xa + at, xs + at, xw + (at << 1), vones);
        const visum = f32x4.convert_i32x4_s(transposeSum(t0, t1, t2, t3));
        const vd = f32x4.mul(v128.load(sc + (<usize>b << 4)), f32x4.splat(load<f32>(dx + (<usize>b << 2))));
        vacc = f32x4.add(vacc, f32x4.mul(vd, visum));
      }
      v128.store(out + (<usize>g << 4), vacc);
    } else {
      for (let k = 0; k < 4; k++) {
        const row = w + <usize>k * rowBytes;
        let acc: f32 = 0;
        for (let b = 0; b < blocks; b++) {
          let isum = 0;
          const at = <usize>b << 5;
          for (let j = 0; j < QK; j++) isum += <i32>load<i8>(row + at + j) * <i32>load<i8>(xq + at + j);
          const d: f32 = load<f32>(sc + (<usize>b << 4) + (<usize>k << 2)) * load<f32>(dx + (<usize>b << 2));
          acc += d * <f32>isum;
        }
        store<f32>(out + ((<usize>(g << 2) + k) << 2), acc);
      }
    }
  }
}

/** y = W·x for a Q4_0 matrix (layouts above); writes ceil(rows/4)·4 outputs. */
export function q4_0_f32_matvec(rows: i32, cols: i32, x: usize, codes: usize, scales: usize, out: usize, scratch: usize): void {
  quantizeActivation(cols, x, scratch);
  const blocks = cols >> 5;
  const dx = scratch;
  const sx = scratch + (<usize>blocks << 2);
  const xq = scratch + (<usize>blocks << 3);
  const xw = xq + 3 * <usize>cols;
  const groups = (rows + 3) >> 2;
  const rowBytes = <usize>(cols >> 1);
  for (let g = 0; g < groups; g++) {
    const w = codes + <usize>(g << 2) * rowBytes;
    const sc = scales + (<usize>g * <usize>blocks << 4);
    if (ASC_FEATURE_SIMD) {
      const vones = v128.load(MATVEC_CONSTANTS);
      const vlow = v128.load(MATVEC_CONSTANTS, 16);
      let vacc = f32x4.splat(0);
      for (let b = 0; b < blocks; b++) {
        const wat = <usize>b << 4;
        const at = <usize>b << 5;
        const t0 = q4BlockDot(w + wat, xq + at, xw + (at << 1), vlow, vones);
        const t1 = q4BlockDot(w + rowBytes + wat, xq + at, xw + (at << 1), vlow, vones);
        const t2 = q4BlockDot(w + 2 * rowBytes + wat, xq + at, xw + (at << 1), vlow, vones);
        const t3 = q4BlockDot(w + 3 * rowBytes + wat, xq + at, xw + (at << 1), vlow, vones);
        const offset = i32x4.splat(load<i32>(sx + (<usize>b << 2)) << 3);
        const visum = f32x4.convert_i32x4_s(i32x4.sub(transposeSum(t0, t1, t2, t3), offset));
        const vd = f32x4.mul(v128.load(sc + (<usize>b << 4)), f32x4.splat(load<f32>(dx + (<usize>b << 2))));
        vacc = f32x4.add(vacc, f32x4.mul(vd, visum));
      }
      v128.store(out + (<usize>g << 4), vacc);
    } else {
      for (let k = 0; k < 4; k++) {
        const row = w + <usize>k * rowBytes;
        let acc: f32 = 0;
        for (let b = 0; b < blocks; b++) {
          let isum = 0;
          const at = <usize>b << 5;
          for (let j = 0; j < 16; j++) {
            const q = <i32>load<u8>(row + (<usize>b << 4) + j);
            isum += (q & 15) * <i32>load<i8>(xq + at + j) + (q >> 4) * <i32>load<i8>(xq + at + 16 + j);
          }
          isum -= load<i32>(sx + (<usize>b << 2)) << 3;
          const d: f32 = load<f32>(sc + (<usize>b << 4) + (<usize>k << 2)) * load<f32>(dx + (<usize>b << 2));
          acc += d * <f32>isum;
        }
        store<f32>(out + ((<usize>(g << 2) + k) << 2), acc);
      }
    }
  }
}

/** Eight halves (u16 lanes of v, low or high four) as f32 lanes: exact for finite halves. */
// @ts-ignore: decorator
@inline function halvesToF32(h: v128, vmag: v128, vscale: v128): v128 {
  // magnitude << 13 is the half's bits in f32 position with exponent bias 15; × 2^112 rebiases
  // (subnormal halves included), then the sign is put back.
  const sign = i32x4.shl(v128.and(h, i32x4.splat(0x8000)), 16);
  return v128.or(f32x4.mul(i32x4.shl(v128.and(h, vmag), 13), vscale), sign);
}

/** y = W·x for an F16 matrix [rows][cols] of halves; writes `rows` outputs. */
export function f16_f32_matvec(rows: i32, cols: i32, x: usize, halves: usize, out: usize): void {
  const main = cols & ~7;
  const rowBytes = <usize>cols << 1;
  for (let r = 0; r < rows; r++) {
    const w = halves + <usize>r * rowBytes;
    let sum: f32;
    if (ASC_FEATURE_SIMD) {
      const vmag = i32x4.splat(0x7fff);
      const vscale = i32x4.splat(0x77800000); // f32 2^112
      let vlo = f32x4.splat(0), vhi = f32x4.splat(0);
      for (let j = 0; j < main; j += 8) {
        const h = v128.load(w + (<usize>j << 1));
        const xj = x + (<usize>j << 2);
        vlo = f32x4.add(vlo, f32x4.mul(halvesToF32(i32x4.extend_low_i16x8_u(h), vmag, vscale), v128.load(xj)));
        vhi = f32x4.add(vhi, f32x4.mul(halvesToF32(i32x4.extend_high_i16x8_u(h), vmag, vscale), v128.load(xj, 16)));
      }
      const v = f32x4.add(vlo, vhi);
      const v2 = f32x4.add(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
      sum = f32x4.extract_lane(f32x4.add(v2, i32x4.shuffle(v2, v2, 1, 0, 3, 2)), 0);
    } else {
      // the same eight partial sums, lane k of vlo (k < 4) or vhi (k >= 4), and the same tree
      let s0: f32 = 0, s1: f32 = 0, s2: f32 = 0, s3: f32 = 0, s4: f32 = 0, s5: f32 = 0, s6: f32 = 0, s7: f32 = 0;
      for (let j = 0; j < main; j += 8) {
        const wj = w + (<usize>j << 1);
        const xj = x + (<usize>j << 2);
        s0 += f16ToF32(load<u16>(wj)) * load<f32>(xj);
        s1 += f16ToF32(load<u16>(wj, 2)) * load<f32>(xj, 4);
        s2 += f16ToF32(load<u16>(wj, 4)) * load<f32>(xj, 8);
        s3 += f16ToF32(load<u16>(wj, 6)) * load<f32>(xj, 12);
        s4 += f16ToF32(load<u16>(wj, 8)) * load<f32>(xj, 16);
        s5 += f16ToF32(load<u16>(wj, 10)) * load<f32>(xj, 20);
        s6 += f16ToF32(load<u16>(wj, 12)) * load<f32>(xj, 24);
        s7 += f16ToF32(load<u16>(wj, 14)) * load<f32>(xj, 28);
      }
      const v0: f32 = s0 + s4, v1: f32 = s1 + s5, v2: f32 = s2 + s6, v3: f32 = s3 + s7;
      sum = (v0 + v2) + (v1 + v3);
    }
    for (let j = main; j < cols; j++) sum += f16ToF32(load<u16>(w + (<usize>j << 1))) * load<f32>(x + (<usize>j << 2));
    store<f32>(out + (<usize>r << 2), sum);
  }
}

// Known-answer check run once when a build is loaded. A runtime can validate a module and still
// compute some instructions wrongly (Node 20's baseline compiler, behind its relaxed-SIMD flag,
// gets i32x4.relaxed_dot_i8x16_i7x16_add_s wrong), so the loader only picks a build whose
// instructions give the answers below.

import { f32ToF16, f16ToF32, f32x4ToF16, f16x4ToF32, scalesZerosToF32 } from './half';
import { f32_qtoken_quantize } from './quantize';
import { dotF32 } from './attention';
import { VALUE_BLOCK } from './layout';

// Halves with known bits, covering normal, subnormal, tie-to-even and overflow cases.
const HALF_INPUTS: StaticArray<f32> = [1.0, 65504.0, 65520.0, 5.9604645e-8, 2.9802322e-8, 0.1, -2.0, 1.00048828125];
const HALF_BITS: StaticArray<u16> = [0x3c00, 0x7bff, 0x7c00, 0x0001, 0x0000, 0x2e66, 0xc000, 0x3c00];

/** 0 when every check passes, else the bit of the first group of checks that failed. */
export function selfTest(scratch: usize): i32 {
  for (let i = 0; i < HALF_INPUTS.length; i++) {
    if (f32ToF16(unchecked(HALF_INPUTS[i])) != unchecked(HALF_BITS[i])) return 1;
    if (i < 3 && f32ToF16(f16ToF32(unchecked(HALF_BITS[i]))) != unchecked(HALF_BITS[i])) return 1;
  }
  if (ASC_FEATURE_SIMD) {
    for (let i = 0; i + 4 <= HALF_INPUTS.length; i += 4) {
      const vbits = f32x4ToF16(v128.load(changetype<usize>(HALF_INPUTS) + (<usize>i << 2)));
      if (i32x4.extract_lane(vbits, 0) != unchecked(HALF_BITS[i])) return 2;
      if (i32x4.extract_lane(vbits, 1) != unchecked(HALF_BITS[i + 1])) return 2;
      if (i32x4.extract_lane(vbits, 2) != unchecked(HALF_BITS[i + 2])) return 2;
      if (i32x4.extract_lane(vbits, 3) != unchecked(HALF_BITS[i + 3])) return 2;
      const vback = f16x4ToF32(i32x4.splat(0x3555));
      if (f32x4.extract_lane(vback, 2) != f16ToF32(0x3555)) return 2;
    }
  }
  if (ASC_FEATURE_RELAXED_SIMD) {
    // a: signed bytes including -128; b: 7-bit unsigned; every lane sums 4 products plus c.
    const va = i8x16(-128, -1, 127, 5, -77, 3, 100, -9, 1, 2, -3, 4, -100, 50, -25, 12);
    const vb = i8x16(127, 1, 2, 3, 64, 126, 0, 9, 7, 11, 13, 17, 99, 100, 101, 5);
    const vc = i32x4(1, -2, 3, -4);
    const vdot = i32x4.relaxed_dot_i8x16_i7x16_add_s(va, vb, vc);
    if (i32x4.extract_lane(vdot, 0) != -128 * 127 - 1 + 127 * 2 + 5 * 3 + 1) return 4;
    if (i32x4.extract_lane(vdot, 1) != -77 * 64 + 3 * 126 + 0 - 81 - 2) return 4;
    if (i32x4.extract_lane(vdot, 2) != 7 + 22 - 39 + 68 + 3) return 4;
    if (i32x4.extract_lane(vdot, 3) != -9900 + 5000 - 2525 + 60 - 4) return 4;
    const vmadd = f32x4.relaxed_madd(f32x4.splat(3), f32x4.splat(0.5), f32x4.splat(1));
    if (f32x4.extract_lane(vmadd, 3) != 2.5) return 4;
  }
  // A per-token group through the real quantizer: 8 numbers, 2 bits, known codes and halves, in a
  // value block (layout.ts): scale at 0, zero at 2·VB, codes of channels 0..3 at bytes 0, 4, 8, 12 and
  // of channels 4..7 at 32, 36, 40, 44 of the code area (4·VB).
  for (let i = 0; i < 8; i++) store<f32>(scratch + (<usize>i << 2), <f32>(i * i) * 0.25 - 3);
  const block = scratch + 512;
  f32_qtoken_quantize(1, 1, 0, 8, 8, 2, scratch, 0, block, 0, scratch + 768);
  // min -3, max 9.25: scale 12.25/3 = 4.0833.. -> half 0x4415 (4.08203125), zero -3 -> 0xc200; codes 0,0,0,1,1,2,2,3.
  if (load<u16>(block) != 0x4415 || load<u16>(block, 2 * VALUE_BLOCK) != 0xc200) return 8;
  const codes = block + 4 * VALUE_BLOCK;
  if (load<u8>(codes) != 0 || load<u8>(codes, 4) != 0 || load<u8>(codes, 8) != 0 || load<u8>(codes, 12) != 1) return 8;
  if (load<u8>(codes, 32) != 1 || load<u8>(codes, 36) != 2 || load<u8>(codes, 40) != 2 || load<u8>(codes, 44) != 3) return 8;
  // Scales and zeros of a block: 9 of each, so both the 8-wide path and the tail run; the zeros
  // include negative, subnormal and negative-subnormal halves.
  const SCALE_BITS: StaticArray<u16> = [0x3c00, 0x4415, 0x0001, 0x7bff, 0x0000, 0x3555, 0x2e66, 0x0400, 0x3c01];
  const ZERO_BITS: StaticArray<u16> = [0xc200, 0x8001, 0x0001, 0xfbff, 0x8000, 0x3c00, 0xb555, 0x8400, 0x4415];
  for (let i = 0; i < 9; i++) {
    store<u16>(scratch + (<usize>i << 1), unchecked(SCALE_BITS[i]));
    store<u16>(scratch + 18 + (<usize>i << 1), unchecked(ZERO_BITS[i]));
  }
  scalesZerosToF32(9, scratch, scratch + 64);
  for (let i = 0; i < 9; i++) {
    if (reinterpret<u32>(load<f32>(scratch + 64 + (<usize>i << 2))) != reinterpret<u32>(f16ToF32(unchecked(SCALE_BITS[i])))) return 32;
    if (reinterpret<u32>(load<f32>(scratch + 100 + (<usize>i << 2))) != reinterpret<u32>(f16ToF32(unchecked(ZERO_BITS[i])))) return 32;
  }
  // A dot product long enough to take every vector path.
  for (let i = 0; i < 37; i++) {
    store<f32>(scratch + (<usize>i << 2), <f32>(i - 18));
    store<f32>(scratch + 256 + (<usize>i << 2), <f32>(i % 5));
  }
  let expected: f32 = 0;
  for (let i = 0; i < 37; i++) expected += <f32>(i - 18) * <f32>(i % 5);
  if (dotF32(37, scratch, scratch + 256) != expected) return 16;
  return 0;
}

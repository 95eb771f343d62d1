// Throughput probes for the roofline in README.md: n iterations of 8 independent chains of one
// instruction, so that latency hides and the loop measures how many the core completes per ns.
// Built and run by bench/simd-throughput.mjs (`npm run bench:simd-throughput`); not part of the package.
/** i32x4.dot_i16x8_s: the simd build's multiply (8 codes). */
export function dotWide(n: i32, seed: i32): i32 {
  let a0 = i32x4.splat(seed), a1 = i32x4.splat(seed + 1), a2 = i32x4.splat(seed + 2), a3 = i32x4.splat(seed + 3);
  let a4 = i32x4.splat(seed + 4), a5 = i32x4.splat(seed + 5), a6 = i32x4.splat(seed + 6), a7 = i32x4.splat(seed + 7);
  const m = i16x8.splat(<i16>(seed | 1));
  for (let i = 0; i < n; i++) {
    a0 = i32x4.dot_i16x8_s(a0, m); a1 = i32x4.dot_i16x8_s(a1, m); a2 = i32x4.dot_i16x8_s(a2, m); a3 = i32x4.dot_i16x8_s(a3, m);
    a4 = i32x4.dot_i16x8_s(a4, m); a5 = i32x4.dot_i16x8_s(a5, m); a6 = i32x4.dot_i16x8_s(a6, m); a7 = i32x4.dot_i16x8_s(a7, m);
  }
  return i32x4.extract_lane(i32x4.add(i32x4.add(i32x4.add(a0, a1), i32x4.add(a2, a3)), i32x4.add(i32x4.add(a4, a5), i32x4.add(a6, a7))), 0);
}
/** i16x8.relaxed_dot_i8x16_i7x16_s: the relaxed build's multiply (16 bytes; two per 16-bit operand). */
export function dotRelaxed(n: i32, seed: i32): i32 {
  let a0 = i32x4.splat(seed), a1 = i32x4.splat(seed + 1), a2 = i32x4.splat(seed + 2), a3 = i32x4.splat(seed + 3);
  let a4 = i32x4.splat(seed + 4), a5 = i32x4.splat(seed + 5), a6 = i32x4.splat(seed + 6), a7 = i32x4.splat(seed + 7);
  const m = i8x16.splat(<i8>(seed & 63));
  for (let i = 0; i < n; i++) {
    a0 = i16x8.relaxed_dot_i8x16_i7x16_s(a0, m); a1 = i16x8.relaxed_dot_i8x16_i7x16_s(a1, m); a2 = i16x8.relaxed_dot_i8x16_i7x16_s(a2, m); a3 = i16x8.relaxed_dot_i8x16_i7x16_s(a3, m);
    a4 = i16x8.relaxed_dot_i8x16_i7x16_s(a4, m); a5 = i16x8.relaxed_dot_i8x16_i7x16_s(a5, m); a6 = i16x8.relaxed_dot_i8x16_i7x16_s(a6, m); a7 = i16x8.relaxed_dot_i8x16_i7x16_s(a7, m);
  }
  return i32x4.extract_lane(i32x4.add(i32x4.add(i32x4.add(a0, a1), i32x4.add(a2, a3)), i32x4.add(i32x4.add(a4, a5), i32x4.add(a6, a7))), 0);
}
/** i32x4.add: the accumulate. */
export function addOnly(n: i32, seed: i32): i32 {
  let a0 = i32x4.splat(seed), a1 = i32x4.splat(seed + 1), a2 = i32x4.splat(seed + 2), a3 = i32x4.splat(seed + 3);
  let a4 = i32x4.splat(seed + 4), a5 = i32x4.splat(seed + 5), a6 = i32x4.splat(seed + 6), a7 = i32x4.splat(seed + 7);
  const m = i32x4.splat(seed | 1);
  for (let i = 0; i < n; i++) {
    a0 = i32x4.add(a0, m); a1 = i32x4.add(a1, m); a2 = i32x4.add(a2, m); a3 = i32x4.add(a3, m);
    a4 = i32x4.add(a4, m); a5 = i32x4.add(a5, m); a6 = i32x4.add(a6, m); a7 = i32x4.add(a7, m);
  }
  return i32x4.extract_lane(i32x4.add(i32x4.add(i32x4.add(a0, a1), i32x4.add(a2, a3)), i32x4.add(i32x4.add(a4, a5), i32x4.add(a6, a7))), 0);
}

// Probe (not part of the package): Q8_0 matrix × f32 vector by dequantizing the codes to f32 and
// multiplying with f32 (relaxed) madd, the alternative to assembly/matvec.ts's integer path.
// Same weight layout as q8_0_f32_matvec (codes i8 [R][cols], scales f32 [R/4][B][4]).
// Timed against it by bench/matvec-madd.mjs.

// @ts-ignore: decorator
@inline function widen(v: v128, x: usize, acc: v128): v128 {
  const lo = i16x8.extend_low_i8x16_s(v), hi = i16x8.extend_high_i8x16_s(v);
  let a = f32x4.relaxed_madd(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(lo)), v128.load(x), acc);
  a = f32x4.relaxed_madd(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(lo)), v128.load(x, 16), a);
  a = f32x4.relaxed_madd(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(hi)), v128.load(x, 32), a);
  return f32x4.relaxed_madd(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(hi)), v128.load(x, 48), a);
}

export function q8_0_f32_matvec_madd(rows: i32, cols: i32, x: usize, codes: usize, scales: usize, out: usize): void {
  const blocks = cols >> 5;
  const rowBytes = <usize>cols;
  for (let g = 0; g < (rows + 3) >> 2; g++) {
    const w = codes + <usize>(g << 2) * rowBytes;
    const sc = scales + (<usize>g * <usize>blocks << 4);
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
    for (let b = 0; b < blocks; b++) {
      const at = <usize>b << 5;
      const xb = x + (at << 2);
      const z = f32x4.splat(0);
      const d = v128.load(sc + (<usize>b << 4));
      const r0 = widen(v128.load(w + at, 16), xb + 64, widen(v128.load(w + at), xb, z));
      const r1 = widen(v128.load(w + rowBytes + at, 16), xb + 64, widen(v128.load(w + rowBytes + at), xb, z));
      const r2 = widen(v128.load(w + 2 * rowBytes + at, 16), xb + 64, widen(v128.load(w + 2 * rowBytes + at), xb, z));
      const r3 = widen(v128.load(w + 3 * rowBytes + at, 16), xb + 64, widen(v128.load(w + 3 * rowBytes + at), xb, z));
      a0 = f32x4.relaxed_madd(r0, f32x4.splat(f32x4.extract_lane(d, 0)), a0);
      a1 = f32x4.relaxed_madd(r1, f32x4.splat(f32x4.extract_lane(d, 1)), a1);
      a2 = f32x4.relaxed_madd(r2, f32x4.splat(f32x4.extract_lane(d, 2)), a2);
      a3 = f32x4.relaxed_madd(r3, f32x4.splat(f32x4.extract_lane(d, 3)), a3);
    }
    const ab = f32x4.add(i32x4.shuffle(a0, a1, 0, 4, 1, 5), i32x4.shuffle(a0, a1, 2, 6, 3, 7));
    const cd = f32x4.add(i32x4.shuffle(a2, a3, 0, 4, 1, 5), i32x4.shuffle(a2, a3, 2, 6, 3, 7));
    v128.store(out + (<usize>g << 4), f32x4.add(i32x4.shuffle(ab, cd, 0, 1, 4, 5), i32x4.shuffle(ab, cd, 2, 3, 6, 7)));
  }
}

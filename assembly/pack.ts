// Planar bit packing of key blocks (layout.ts).
//
// `count` bytes hold P = 8/b planes of `count` codes each: code k of plane s sits in byte k at
// bits s*b .. s*b+b-1. A byte therefore holds codes k, k+count, k+2*count, ... and a 16-byte load
// unpacks to 16 codes of consecutive k with one shift and one mask per plane.
//
//   b = 2, count = W:      byte k = | plane 3 : 2 | plane 2 : 2 | plane 1 : 2 | plane 0 : 2 |
//                                   | code k+3W  | code k+2W   | code k+W    | code k      |
//
// In a key block the code index is token * D + channel and count = (G*b/8) * D. (Value blocks
// interleave tokens instead; quantize.ts places their codes directly.)

/** Packs `count * (8/bits)` one-byte codes at `codes` into `count` bytes at `dst`. */
export function packPlanar(count: i32, bits: i32, codes: usize, dst: usize): void {
  const planes = 8 / bits;
  let k = 0;
  if (ASC_FEATURE_SIMD) {
    for (; k + 16 <= count; k += 16) {
      let vbytes = v128.load(codes + <usize>k);
      for (let s = 1; s < planes; s++) {
        const plane = v128.load(codes + <usize>(k + s * count));
        vbytes = v128.or(vbytes, i8x16.shl(plane, s * bits));
      }
      v128.store(dst + <usize>k, vbytes);
    }
  }
  for (; k < count; k++) {
    let byte: u32 = load<u8>(codes + <usize>k);
    for (let s = 1; s < planes; s++) byte |= <u32>load<u8>(codes + <usize>(k + s * count)) << (s * bits);
    store<u8>(dst + <usize>k, <u8>byte);
  }
}

/** Unpacks `count` packed bytes at `src` into `count * (8/bits)` codes as f32 at `dst` (plane-major order,
 *  which is the natural code order). */
export function unpackPlanarF32(count: i32, bits: i32, src: usize, dst: usize): void {
  const planes = 8 / bits;
  const mask: u32 = (1 << bits) - 1;
  let k = 0;
  if (ASC_FEATURE_SIMD) {
    const vmask = i8x16.splat(<i8>mask);
    for (; k + 16 <= count; k += 16) {
      const vbytes = v128.load(src + <usize>k);
      for (let s = 0; s < planes; s++) {
        const vcodes = v128.and(i8x16.shr_u(vbytes, s * bits), vmask);
        const vlo = i16x8.extend_low_i8x16_u(vcodes);
        const vhi = i16x8.extend_high_i8x16_u(vcodes);
        const out = dst + (<usize>(s * count + k) << 2);
        v128.store(out, f32x4.convert_i32x4_u(i32x4.extend_low_i16x8_u(vlo)));
        v128.store(out, f32x4.convert_i32x4_u(i32x4.extend_high_i16x8_u(vlo)), 16);
        v128.store(out, f32x4.convert_i32x4_u(i32x4.extend_low_i16x8_u(vhi)), 32);
        v128.store(out, f32x4.convert_i32x4_u(i32x4.extend_high_i16x8_u(vhi)), 48);
      }
    }
    for (; k + 4 <= count; k += 4) {
      const vbytes = v128.load32_zero(src + <usize>k);
      for (let s = 0; s < planes; s++) {
        const vcodes = v128.and(i8x16.shr_u(vbytes, s * bits), vmask);
        const v32 = i32x4.extend_low_i16x8_u(i16x8.extend_low_i8x16_u(vcodes));
        v128.store(dst + (<usize>(s * count + k) << 2), f32x4.convert_i32x4_u(v32));
      }
    }
  }
  for (; k < count; k++) {
    const byte: u32 = load<u8>(src + <usize>k);
    for (let s = 0; s < planes; s++) {
      store<f32>(dst + (<usize>(s * count + k) << 2), <f32>((byte >>> (s * bits)) & mask));
    }
  }
}

// Moving and checking f32 input on its way into the cache.

/** Index of the first of `count` f32 at `src` that is not finite or whose magnitude exceeds maxAbs,
 *  or -1. (NaN fails every comparison, so |x| <= maxAbs is false for it too.) */
export function f32_first_invalid(count: i32, src: usize, maxAbs: f32): i32 {
  let i = 0;
  if (ASC_FEATURE_SIMD) {
    const vlimit = f32x4.splat(maxAbs);
    for (; i + 16 <= count; i += 16) {
      const p = src + (<usize>i << 2);
      const ok = v128.and(
        v128.and(f32x4.le(f32x4.abs(v128.load(p)), vlimit), f32x4.le(f32x4.abs(v128.load(p, 16)), vlimit)),
        v128.and(f32x4.le(f32x4.abs(v128.load(p, 32)), vlimit), f32x4.le(f32x4.abs(v128.load(p, 48)), vlimit)),
      );
      if (!i32x4.all_true(ok)) break;
    }
  }
  for (; i < count; i++) {
    if (!(abs(load<f32>(src + (<usize>i << 2))) <= maxAbs)) return i;
  }
  return -1;
}

/** Copies tokens [tokens][heads][D] at `src` into per-head rows: token t of head h to
 *  dst + h·dstHeadStride + t·D·4. */
export function f32_scatter_heads(tokens: i32, heads: i32, D: i32, src: usize, dst: usize, dstHeadStride: usize): void {
  const rowBytes = <usize>D << 2;
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < heads; h++) {
      memory.copy(dst + <usize>h * dstHeadStride + <usize>t * rowBytes, src + <usize>(t * heads + h) * rowBytes, rowBytes);
    }
  }
}

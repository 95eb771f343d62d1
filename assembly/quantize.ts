// Quantize-and-pack kernels (SPEC.md "Quantizer" and "Grouping").
//
// Every variant must produce bit-identical codes and halves, so these kernels use only exact IEEE
// operations (min, max, sub, div, round-to-nearest-even) in the order SPEC.md gives them; SIMD only
// changes how many groups are computed at once, never the arithmetic.
//
// ── Key block: one kv head, one chunk of G tokens, quantized per channel ─────────────────────────
//
//   offset 0        2·D           4·D                                     4·D + W·D
//   ┌──────────────┬─────────────┬───────────────────────────────────────┐
//   │ scale f16 ×D │ zero f16 ×D │ codes: W rows of D bytes, W = G·b/8   │
//   └──────────────┴─────────────┴───────────────────────────────────────┘
//   codes byte (j, c) at 4·D + j·D + c holds, in plane s (bits s·b..s·b+b-1), the code of token
//   j + s·W of channel c: planar packing (pack.ts) of the token-major code array [t][c], so one
//   16-byte load unpacks 16 channels of one token.
//   bytes per block = D·(4 + G·b/8); bits per element = b + 32/G (2-bit, G=32: 3.0).
//
// ── Value row: one kv head, one token, quantized per token in groups of gv = min(G, D) channels ──
//
//   offset 0          2·ng          4·ng                                  4·ng + D·b/8
//   ┌───────────────┬──────────────┬─────────────────────────────────────┐
//   │ scale f16 ×ng │ zero f16 ×ng │ codes: ng groups of Wv = gv·b/8 bytes │   ng = D / gv
//   └───────────────┴──────────────┴─────────────────────────────────────┘
//   group g's byte k holds, in plane s, the code of channel g·gv + k + s·Wv.
//   bytes per row = 4·D/gv + D·b/8; bits per element = b + 32/gv.
//
// The ablations reuse the same two layouts with the roles swapped (values per channel use key
// blocks, keys per token use value rows).

import { f32ToF16, f16ToF32, f32x4ToF16, f16x4ToF32 } from './half';
import { packPlanar } from './pack';

/**
 * Quantizes `chunks` chunks of G tokens, per channel, for each of `heads` kv heads.
 *   src:  f32 [chunks·G tokens][heads][D]            (a run of the residual window)
 *   dst:  key blocks [chunks][heads], each D·(4 + G·b/8) bytes
 *   scratch: G·D bytes
 */
export function f32_qchannel_quantize(
  chunks: i32, heads: i32, D: i32, G: i32, bits: i32, src: usize, dst: usize, scratch: usize,
): void {
  const levels = <f32>((1 << bits) - 1);
  const tokenStride = <usize>(heads * D) << 2;
  const rowBytes = (G * bits) >> 3;
  const blockBytes = <usize>(D * (4 + rowBytes));
  for (let chunk = 0; chunk < chunks; chunk++) {
    for (let h = 0; h < heads; h++) {
      const base = src + <usize>(chunk * G) * tokenStride + (<usize>(h * D) << 2);
      const block = dst + <usize>(chunk * heads + h) * blockBytes;
      let c = 0;
      if (ASC_FEATURE_SIMD) {
        const vlevels = f32x4.splat(levels);
        for (; c + 4 <= D; c += 4) {
          const col = base + (<usize>c << 2);
          let vmin = v128.load(col);
          let vmax = vmin;
          for (let t = 1; t < G; t++) {
            const vx = v128.load(col + <usize>t * tokenStride);
            vmin = f32x4.min(vmin, vx);
            vmax = f32x4.max(vmax, vx);
          }
          const vscaleHalf = f32x4ToF16(f32x4.div(f32x4.sub(vmax, vmin), vlevels));
          const vzeroHalf = f32x4ToF16(vmin);
          v128.store64_lane(block + (<usize>c << 1), i16x8.narrow_i32x4_u(vscaleHalf, vscaleHalf), 0);
          v128.store64_lane(block + (<usize>(D + c) << 1), i16x8.narrow_i32x4_u(vzeroHalf, vzeroHalf), 0);
          const vs = f16x4ToF32(vscaleHalf);
          const vz = f16x4ToF32(vzeroHalf);
          const vconstant = f32x4.eq(vs, f32x4.splat(0));
          for (let t = 0; t < G; t++) {
            const vcodes = quantizeF32x4(v128.load(col + <usize>t * tokenStride), vs, vz, vlevels, vconstant);
            v128.store32_lane(scratch + <usize>(t * D + c), vcodes, 0);
          }
        }
      }
      for (; c < D; c++) {
        const col = base + (<usize>c << 2);
        let mn = load<f32>(col);
        let mx = mn;
        for (let t = 1; t < G; t++) {
          const x = load<f32>(col + <usize>t * tokenStride);
          mn = min(mn, x);
          mx = max(mx, x);
        }
        const scaleHalf = f32ToF16((mx - mn) / levels);
        const zeroHalf = f32ToF16(mn);
        store<u16>(block + (<usize>c << 1), scaleHalf);
        store<u16>(block + (<usize>(D + c) << 1), zeroHalf);
        const s = f16ToF32(scaleHalf);
        const z = f16ToF32(zeroHalf);
        for (let t = 0; t < G; t++) {
          store<u8>(scratch + <usize>(t * D + c), quantizeOne(load<f32>(col + <usize>t * tokenStride), s, z, levels));
        }
      }
      packPlanar(rowBytes * D, bits, scratch, block + (<usize>(4 * D)));
    }
  }
}

/**
 * Quantizes `rows` rows of D numbers, each per token in groups of gv channels.
 *   src:  f32 [rows][D]    (for the cache: [tokens][heads][D], one row per token and head)
 *   dst:  value rows [rows], each 4·D/gv + D·b/8 bytes
 *   scratch: gv bytes
 */
export function f32_qtoken_quantize(
  rows: i32, D: i32, gv: i32, bits: i32, src: usize, dst: usize, scratch: usize,
): void {
  const levels = <f32>((1 << bits) - 1);
  const groups = D / gv;
  const groupBytes = (gv * bits) >> 3;
  const rowBytes = <usize>(4 * groups + ((D * bits) >> 3));
  for (let r = 0; r < rows; r++) {
    const row = dst + <usize>r * rowBytes;
    for (let g = 0; g < groups; g++) {
      const x0 = src + (<usize>(r * D + g * gv) << 2);
      let mn: f32, mx: f32;
      let c = 0;
      if (ASC_FEATURE_SIMD && gv >= 4) {
        let vmin = v128.load(x0);
        let vmax = vmin;
        for (c = 4; c + 4 <= gv; c += 4) {
          const vx = v128.load(x0 + (<usize>c << 2));
          vmin = f32x4.min(vmin, vx);
          vmax = f32x4.max(vmax, vx);
        }
        mn = min(min(f32x4.extract_lane(vmin, 0), f32x4.extract_lane(vmin, 1)), min(f32x4.extract_lane(vmin, 2), f32x4.extract_lane(vmin, 3)));
        mx = max(max(f32x4.extract_lane(vmax, 0), f32x4.extract_lane(vmax, 1)), max(f32x4.extract_lane(vmax, 2), f32x4.extract_lane(vmax, 3)));
      } else {
        mn = load<f32>(x0);
        mx = mn;
        c = 1;
      }
      for (; c < gv; c++) {
        const x = load<f32>(x0 + (<usize>c << 2));
        mn = min(mn, x);
        mx = max(mx, x);
      }
      const scaleHalf = f32ToF16((mx - mn) / levels);
      const zeroHalf = f32ToF16(mn);
      store<u16>(row + (<usize>g << 1), scaleHalf);
      store<u16>(row + (<usize>(groups + g) << 1), zeroHalf);
      const s = f16ToF32(scaleHalf);
      const z = f16ToF32(zeroHalf);
      c = 0;
      if (ASC_FEATURE_SIMD) {
        const vs = f32x4.splat(s);
        const vz = f32x4.splat(z);
        const vlevels = f32x4.splat(levels);
        const vconstant = f32x4.eq(vs, f32x4.splat(0));
        for (; c + 4 <= gv; c += 4) {
          v128.store32_lane(scratch + <usize>c, quantizeF32x4(v128.load(x0 + (<usize>c << 2)), vs, vz, vlevels, vconstant), 0);
        }
      }
      for (; c < gv; c++) store<u8>(scratch + <usize>c, quantizeOne(load<f32>(x0 + (<usize>c << 2)), s, z, levels));
      packPlanar(groupBytes, bits, scratch, row + <usize>(4 * groups + g * groupBytes));
    }
  }
}

/** quantizeOne on four lanes (vconstant: lanes whose scale is 0); the codes land in the low 4 bytes. */
// @ts-ignore: decorator
@inline function quantizeF32x4(vx: v128, vs: v128, vz: v128, vlevels: v128, vconstant: v128): v128 {
  const vq = f32x4.nearest(f32x4.div(f32x4.sub(vx, vz), vs));
  const vclamped = f32x4.min(f32x4.max(vq, f32x4.splat(0)), vlevels);
  const vcode = v128.andnot(i32x4.trunc_sat_f32x4_u(vclamped), vconstant);
  const v16 = i16x8.narrow_i32x4_u(vcode, vcode);
  return i8x16.narrow_i16x8_u(v16, v16);
}

/** SPEC.md's code for one number: 0 for a constant group, else clamp(roundHalfEven((x - z) / s)). */
// @ts-ignore: decorator
@inline function quantizeOne(x: f32, s: f32, z: f32, levels: f32): u8 {
  if (s == 0) return 0;
  return <u8>(<i32>min(max(nearest((x - z) / s), <f32>0), levels));
}

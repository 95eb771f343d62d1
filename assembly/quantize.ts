// Quantize-and-pack kernels (SPEC.md "Quantizer" and "Grouping"). Layouts: layout.ts.
//
// Every variant must produce bit-identical codes and halves, so these kernels use only exact IEEE
// operations (min, max, sub, div, round-to-nearest-even) in the order SPEC.md gives them; SIMD only
// changes how many groups are computed at once, never the arithmetic.

import { f32ToF16, f16ToF32, f32x4ToF16, f16x4ToF32 } from './half';
import { packPlanar } from './pack';
import { keyBlockBytes, valueBlockBytes, valueCodeByte, valueCodeShift, VALUE_BLOCK } from './layout';
import { roundToI32 } from './simd';

/**
 * Quantizes `blocks` blocks of G tokens per channel, for each of `heads` kv heads.
 *   src:  f32 rows [blocks·G][D] of head 0; head h at src + h·srcHeadStride
 *   dst:  key blocks [blocks] of head 0; head h at dst + h·dstHeadStride
 *   scratch: G·D bytes
 */
export function f32_qchannel_quantize(
  heads: i32, blocks: i32, D: i32, G: i32, bits: i32,
  src: usize, srcHeadStride: usize, dst: usize, dstHeadStride: usize, scratch: usize,
): void {
  const levels = <f32>((1 << bits) - 1);
  const tokenStride = <usize>D << 2;
  const rowBytes = (G * bits) >> 3;
  const blockBytes = <usize>keyBlockBytes(D, G, bits);
  for (let h = 0; h < heads; h++) {
    for (let b = 0; b < blocks; b++) {
      const base = src + <usize>h * srcHeadStride + <usize>(b * G) * tokenStride;
      const block = dst + <usize>h * dstHeadStride + <usize>b * blockBytes;
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
 * Quantizes `tokens` tokens per token, in groups of gv channels, into value blocks, for each of
 * `heads` kv heads. The tokens take the value slots first .. first+tokens-1 of each head.
 *   src:  f32 rows [tokens][D] of head 0; head h at src + h·srcHeadStride
 *   dst:  value blocks of head 0 (slot i in block i / 32); head h at dst + h·dstHeadStride
 *   scratch: D bytes
 */
export function f32_qtoken_quantize(
  heads: i32, tokens: i32, first: i32, D: i32, gv: i32, bits: i32,
  src: usize, srcHeadStride: usize, dst: usize, dstHeadStride: usize, scratch: usize,
): void {
  const levels = <f32>((1 << bits) - 1);
  const groups = D / gv;
  const blockBytes = <usize>valueBlockBytes(D, gv, bits);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < tokens; i++) {
      const slot = first + i;
      const t = slot % VALUE_BLOCK;
      const block = dst + <usize>h * dstHeadStride + <usize>(slot / VALUE_BLOCK) * blockBytes;
      // A block's first token clears it: memory may be reused, and the halves of the tokens not yet
      // in it must read as finite numbers (attention multiplies them by a weight of 0).
      if (t == 0) memory.fill(block, 0, blockBytes);
      const row = src + <usize>h * srcHeadStride + (<usize>(i * D) << 2);
      for (let g = 0; g < groups; g++) {
        const x0 = row + (<usize>(g * gv) << 2);
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
        store<u16>(block + (<usize>(g * VALUE_BLOCK + t) << 1), scaleHalf);
        store<u16>(block + (<usize>((groups + g) * VALUE_BLOCK + t) << 1), zeroHalf);
        const s = f16ToF32(scaleHalf);
        const z = f16ToF32(zeroHalf);
        c = 0;
        if (ASC_FEATURE_SIMD) {
          const vs = f32x4.splat(s);
          const vz = f32x4.splat(z);
          const vlevels = f32x4.splat(levels);
          const vconstant = f32x4.eq(vs, f32x4.splat(0));
          for (; c + 4 <= gv; c += 4) {
            v128.store32_lane(scratch + <usize>(g * gv + c), quantizeF32x4(v128.load(x0 + (<usize>c << 2)), vs, vz, vlevels, vconstant), 0);
          }
        }
        for (; c < gv; c++) store<u8>(scratch + <usize>(g * gv + c), quantizeOne(load<f32>(x0 + (<usize>c << 2)), s, z, levels));
      }
      // Scatter the token's codes into the interleaved chunks (layout.ts): chunk (Q, r) byte
      // 4·i + t%4 takes channel 4·Q + i. With SIMD one swizzle places a quad's 4 codes.
      const codes = block + <usize>(4 * VALUE_BLOCK * groups);
      const shift = valueCodeShift(t, bits);
      const mask: u32 = (1 << bits) - 1;
      let c = 0;
      if (ASC_FEATURE_SIMD) {
        const chunksPerQuad = (VALUE_BLOCK * bits) >> 5;
        const chunkInQuad = <usize>(((t >> 2) / (8 / bits)) << 4);
        const lane = t & 3;
        // Byte 4·i + lane of the quad-q pattern takes code 4·q + i; every other byte a zero (index 16+).
        const vlane = i8x16(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3);
        const vpick = i8x16(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
        const vmine = i8x16.eq(vlane, i8x16.splat(<i8>lane));
        // This token's bits in the bytes it shares with 3 other tokens: cleared, then set, so that a
        // slot written before (a truncated or failed append) takes the new code.
        const vslot = v128.and(vmine, i8x16.splat(<i8>(mask << shift)));
        for (; c + 16 <= D; c += 16) {
          const vcodes = i8x16.shl(v128.load(scratch + <usize>c), shift);
          for (let q = 0; q < 4; q++) {
            const vindex = v128.or(i8x16.add(vpick, i8x16.splat(<i8>(4 * q))), v128.not(vmine));
            const at = codes + (<usize>(((c >> 2) + q) * chunksPerQuad) << 4) + chunkInQuad;
            v128.store(at, v128.or(v128.andnot(v128.load(at), vslot), i8x16.swizzle(vcodes, vindex)));
          }
        }
      }
      for (; c < D; c++) {
        const at = codes + <usize>valueCodeByte(c, t, bits);
        store<u8>(at, (<u32>load<u8>(at) & ~(mask << shift)) | (<u32>load<u8>(scratch + <usize>c) << shift));
      }
    }
  }
}

/** quantizeOne on four lanes (vconstant: lanes whose scale is 0); the codes land in the low 4 bytes. */
// @ts-ignore: decorator
@inline function quantizeF32x4(vx: v128, vs: v128, vz: v128, vlevels: v128, vconstant: v128): v128 {
  // Clamping before rounding gives the same integer (the bounds are integers); pmax/pmin differ
  // from max/min only on NaN and -0, which both end as code 0 (NaN lanes are the masked s == 0 ones).
  const vq = f32x4.div(f32x4.sub(vx, vz), vs);
  const vclamped = f32x4.pmin(f32x4.pmax(vq, f32x4.splat(0)), vlevels);
  const vcode = v128.andnot(roundToI32(vclamped), vconstant);
  const v16 = i16x8.narrow_i32x4_u(vcode, vcode);
  return i8x16.narrow_i16x8_u(v16, v16);
}

/** SPEC.md's code for one number: 0 for a constant group, else clamp(roundHalfEven((x - z) / s)). */
// @ts-ignore: decorator
@inline function quantizeOne(x: f32, s: f32, z: f32, levels: f32): u8 {
  if (s == 0) return 0;
  return <u8>(<i32>min(max(nearest((x - z) / s), <f32>0), levels));
}

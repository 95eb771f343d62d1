// Sizes of the stored layouts (drawn byte by byte in assembly/layout.ts), and a decoder from packed
// bytes to a canonical listing of groups, so that tests and users can compare stored codes and
// halves with the reference (src/reference.ts) without knowing the packing.
//
// Every stream is stored per kv head: head h's units start at base + h · capacity · headUnitBytes.

import type { ResolvedOptions } from './options';

export type StreamKind = 'channel' | 'token' | 'f32';

/** Tokens per value block (assembly/layout.ts VALUE_BLOCK). */
export const VALUE_BLOCK = 32;

export interface StreamLayout {
  readonly kind: StreamKind;
  /** Tokens in one stored unit: G per key block, 32 per value block, 1 per f32 row. */
  readonly unitTokens: number;
  /** Bytes of one unit of one kv head. */
  readonly headUnitBytes: number;
  /** Codes per group: G (per channel) or gv = min(G, D) (per token); 0 for f32. */
  readonly groupLength: number;
}

export function streamLayout(o: ResolvedOptions, grouping: 'channel' | 'token'): StreamLayout {
  const D = o.headDim;
  if (o.bits === 32) return { kind: 'f32', unitTokens: 1, headUnitBytes: D * 4, groupLength: 0 };
  if (grouping === 'channel') {
    // | scale f16 ×D | zero f16 ×D | codes D·G·b/8 |
    return { kind: 'channel', unitTokens: o.groupSize, headUnitBytes: D * (4 + (o.groupSize * o.bits) / 8), groupLength: o.groupSize };
  }
  // | scale f16 [ng][32] | zero f16 [ng][32] | codes 32·D·b/8 |
  const gv = Math.min(o.groupSize, D);
  return { kind: 'token', unitTokens: VALUE_BLOCK, headUnitBytes: VALUE_BLOCK * ((4 * D) / gv + (D * o.bits) / 8), groupLength: gv };
}

/** Bytes one stored token of one kv head costs (codes and halves, or f32). */
export function bytesPerToken(layout: StreamLayout): number {
  return layout.headUnitBytes / layout.unitTokens;
}

/** Quantized groups of one stream in canonical order, as the reference lists them:
 *  per-channel: for each chunk of G tokens, each kv head, each channel: G codes in token order;
 *  per-token: for each token, each kv head, each group of gv channels: gv codes in channel order. */
export interface GroupListing {
  grouping: 'channel' | 'token';
  groupLength: number;
  scales: Uint16Array;
  zeros: Uint16Array;
  codes: Uint8Array;
}

/** Decodes the `tokens` quantized tokens of a stream whose head h starts at base + h·headStride. */
export function decodeGroups(layout: StreamLayout, o: ResolvedOptions, memory: Uint8Array, base: number, headStride: number, tokens: number): GroupListing {
  if (layout.kind === 'f32') throw new Error('decodeGroups: an f32 stream has no groups');
  const D = o.headDim;
  const bits = o.bits;
  const mask = (1 << bits) - 1;
  const n = layout.groupLength;
  const half = (offset: number) => memory[offset]! | (memory[offset + 1]! << 8);
  if (layout.kind === 'channel') {
    const blocks = tokens / n;
    const total = blocks * o.kvHeads * D;
    const scales = new Uint16Array(total);
    const zeros = new Uint16Array(total);
    const codes = new Uint8Array(total * n);
    // Codes are [token][channel] packed planar over the block: byte k, plane s = code k + s·count.
    const count = ((n * bits) / 8) * D;
    let group = 0;
    for (let b = 0; b < blocks; b++) {
      for (let h = 0; h < o.kvHeads; h++) {
        const block = base + h * headStride + b * layout.headUnitBytes;
        for (let c = 0; c < D; c++, group++) {
          scales[group] = half(block + 2 * c);
          zeros[group] = half(block + 2 * (D + c));
          for (let t = 0; t < n; t++) {
            const index = t * D + c;
            codes[group * n + t] = (memory[block + 4 * D + (index % count)]! >> (Math.floor(index / count) * bits)) & mask;
          }
        }
      }
    }
    return { grouping: 'channel', groupLength: n, scales, zeros, codes };
  }
  const groups = D / n;
  const total = tokens * o.kvHeads * groups;
  const scales = new Uint16Array(total);
  const zeros = new Uint16Array(total);
  const codes = new Uint8Array(total * n);
  const planes = 8 / bits;
  const chunksPerQuad = (VALUE_BLOCK * bits) / 32;
  let group = 0;
  for (let slot = 0; slot < tokens; slot++) {
    const t = slot % VALUE_BLOCK;
    for (let h = 0; h < o.kvHeads; h++) {
      const block = base + h * headStride + Math.floor(slot / VALUE_BLOCK) * layout.headUnitBytes;
      const codeArea = block + 4 * VALUE_BLOCK * groups;
      for (let g = 0; g < groups; g++, group++) {
        scales[group] = half(block + 2 * (g * VALUE_BLOCK + t));
        zeros[group] = half(block + 2 * ((groups + g) * VALUE_BLOCK + t));
        for (let i = 0; i < n; i++) {
          // Chunk (c/4, quad/planes), byte 4·(c%4) + t%4, plane quad % planes (assembly/layout.ts).
          const c = g * n + i;
          const quad = t >> 2;
          const byte = ((c >> 2) * chunksPerQuad + Math.floor(quad / planes)) * 16 + (c & 3) * 4 + (t & 3);
          codes[group * n + i] = (memory[codeArea + byte]! >> ((quad % planes) * bits)) & mask;
        }
      }
    }
  }
  return { grouping: 'token', groupLength: n, scales, zeros, codes };
}

/** Clears the slots `from` .. 31 of a value block of one head at `offset` (their halves and code
 *  bits), so that a partly filled last block is stored the same whatever those slots held before
 *  (the tokens of a truncated append, or of a fork that shared the block). */
export function clearValueSlots(layout: StreamLayout, o: ResolvedOptions, bytes: Uint8Array, offset: number, from: number): void {
  if (layout.kind !== 'token' || from >= VALUE_BLOCK) return;
  const D = o.headDim;
  const bits = o.bits;
  const groups = D / layout.groupLength;
  for (let g = 0; g < 2 * groups; g++) bytes.fill(0, offset + 2 * (g * VALUE_BLOCK + from), offset + 2 * (g + 1) * VALUE_BLOCK);
  const codeArea = offset + 4 * VALUE_BLOCK * groups;
  const planes = 8 / bits;
  const mask = (1 << bits) - 1;
  for (let t = from; t < VALUE_BLOCK; t++) {
    const quad = t >> 2;
    const keep = ~(mask << ((quad % planes) * bits)) & 0xff;
    for (let c = 0; c < D; c++) {
      // Chunk (c/4, quad/planes), byte 4·(c%4) + t%4, plane quad % planes (assembly/layout.ts).
      const byte = ((c >> 2) * ((VALUE_BLOCK * bits) / 32) + Math.floor(quad / planes)) * 16 + (c & 3) * 4 + (t & 3);
      bytes[codeArea + byte]! &= keep;
    }
  }
}

/** The value of IEEE half bits (exact; the stored scales and zeros are always finite). */
export function halfToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  return exponent === 0 ? sign * mantissa * 2 ** -24 : sign * (1024 + mantissa) * 2 ** (exponent - 25);
}

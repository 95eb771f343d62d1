// Sizes of the stored layouts (drawn in assembly/quantize.ts), and a decoder from packed bytes to
// a canonical listing of groups, so that tests and users can compare stored codes and halves
// with the reference (src/reference.ts) without knowing the packing.

import type { ResolvedOptions } from './options';

export type StreamKind = 'channel' | 'token' | 'f32';

export interface StreamLayout {
  readonly kind: StreamKind;
  /** Tokens in one quantized unit: G for per-channel blocks, 1 for per-token rows, 0 for f32. */
  readonly unitTokens: number;
  /** Bytes of one unit of one kv head. */
  readonly headUnitBytes: number;
  /** Bytes of one unit of all kv heads ([unit][head] order). */
  readonly unitBytes: number;
  /** Codes per group: G (per channel) or gv = min(G, D) (per token). */
  readonly groupLength: number;
}

/** Bytes of one token of all kv heads in f32: [kvHeads][headDim]. */
export function f32TokenBytes(o: ResolvedOptions): number {
  return o.kvHeads * o.headDim * 4;
}

export function streamLayout(o: ResolvedOptions, grouping: 'channel' | 'token'): StreamLayout {
  const D = o.headDim;
  if (o.bits === 32) return { kind: 'f32', unitTokens: 0, headUnitBytes: 0, unitBytes: 0, groupLength: 0 };
  if (grouping === 'channel') {
    // | scale f16 ×D | zero f16 ×D | codes D·G·b/8 |
    const headUnitBytes = D * (4 + (o.groupSize * o.bits) / 8);
    return { kind: 'channel', unitTokens: o.groupSize, headUnitBytes, unitBytes: headUnitBytes * o.kvHeads, groupLength: o.groupSize };
  }
  // | scale f16 ×ng | zero f16 ×ng | codes D·b/8 |
  const gv = Math.min(o.groupSize, D);
  const headUnitBytes = (4 * D) / gv + (D * o.bits) / 8;
  return { kind: 'token', unitTokens: 1, headUnitBytes, unitBytes: headUnitBytes * o.kvHeads, groupLength: gv };
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

/** Decodes `units` stored units (bytes = their memory) into the canonical listing. */
export function decodeGroups(layout: StreamLayout, o: ResolvedOptions, bytes: Uint8Array, units: number): GroupListing {
  if (layout.kind === 'f32') throw new Error('decodeGroups: an f32 stream has no groups');
  const D = o.headDim;
  const bits = o.bits;
  const mask = (1 << bits) - 1;
  const n = layout.groupLength;
  const groupsPerHeadUnit = layout.kind === 'channel' ? D : D / n;
  const total = units * o.kvHeads * groupsPerHeadUnit;
  const scales = new Uint16Array(total);
  const zeros = new Uint16Array(total);
  const codes = new Uint8Array(total * n);
  const half = (offset: number) => bytes[offset]! | (bytes[offset + 1]! << 8);
  // Planar packing: code k of plane s is byte k % count, bits s·b (assembly/pack.ts).
  const code = (base: number, count: number, index: number) => (bytes[base + (index % count)]! >> (Math.floor(index / count) * bits)) & mask;
  let group = 0;
  for (let unit = 0; unit < units; unit++) {
    for (let h = 0; h < o.kvHeads; h++) {
      const base = (unit * o.kvHeads + h) * layout.headUnitBytes;
      for (let g = 0; g < groupsPerHeadUnit; g++, group++) {
        scales[group] = half(base + 2 * g);
        zeros[group] = half(base + 2 * (groupsPerHeadUnit + g));
        const codesBase = base + 4 * groupsPerHeadUnit;
        if (layout.kind === 'channel') {
          const count = ((n * bits) / 8) * D; // codes are [token][channel], packed over the block
          for (let t = 0; t < n; t++) codes[group * n + t] = code(codesBase, count, t * D + g);
        } else {
          const count = (n * bits) / 8;
          for (let c = 0; c < n; c++) codes[group * n + c] = code(codesBase + g * count, count, c);
        }
      }
    }
  }
  return { grouping: layout.kind, groupLength: n, scales, zeros, codes };
}

// Stored layouts. Every layout is per kv head: a head's tokens are contiguous, so attention over
// one head streams through memory.
//
// ── Key block: one kv head, G tokens, quantized per channel (keys, KIVI's default) ─────────────
//
//   offset 0        2·D           4·D                                     4·D + W·D
//   ┌──────────────┬─────────────┬───────────────────────────────────────┐
//   │ scale f16 ×D │ zero f16 ×D │ codes: W rows of D bytes, W = G·b/8   │
//   └──────────────┴─────────────┴───────────────────────────────────────┘
//   codes byte (j, c) at 4·D + j·D + c holds, in plane s (bits s·b .. s·b+b-1), the code of
//   token j + s·W of channel c. One 16-byte load at (j, c..c+15) unpacks, per plane, the codes of
//   16 channels of one token: the operand of a dot product over channels.
//   bytes = D·(4 + G·b/8); bits per element = b + 32/G (2-bit, G = 32: 3.0).
//
// ── Value block: one kv head, VB = 32 tokens, quantized per token in groups of gv = min(G, D) ──
//
//   offset 0               2·VB·ng           4·VB·ng                              4·VB·ng + VB·D·b/8
//   ┌─────────────────────┬─────────────────┬────────────────────────────────────┐
//   │ scale f16 [ng][VB]  │ zero f16 [ng][VB]│ codes: D/4 quads × VB·b/32 chunks │   ng = D / gv
//   └─────────────────────┴─────────────────┴────────────────────────────────────┘
//   scales and zeros are group-major, so a group's 32 halves convert with 4-lane loads.
//   chunk (Q, r) is 16 bytes at 4·VB·ng + (Q·VB·b/32 + r)·16; its byte 4·i + k holds, in plane s,
//   the code of channel 4·Q + i, token 4·(r·P + s) + k (P = 8/b planes). Unpacking a plane gives,
//   in each 32-bit lane, one channel's codes of 4 consecutive tokens: the operand of a dot product
//   over tokens, so the weighted sum needs no horizontal additions.
//   bytes = VB·(4·ng + D·b/8); bits per element = b + 32/gv.
//   Tokens are quantized one at a time into their block (SPEC.md's value schedule); a block is
//   zeroed when its first token arrives, and tokens not yet in it are never read.
//
// ── f32 rows (sinks, residual window, the whole `bits: 32` cache): [token][D] per head ─────────

/** Tokens per value block. */
// @ts-ignore: decorator
@inline export const VALUE_BLOCK = 32;

/** Bytes of one key block. */
// @ts-ignore: decorator
@inline export function keyBlockBytes(D: i32, G: i32, bits: i32): i32 {
  return D * (4 + ((G * bits) >> 3));
}

/** Bytes of one value block. */
// @ts-ignore: decorator
@inline export function valueBlockBytes(D: i32, gv: i32, bits: i32): i32 {
  return VALUE_BLOCK * (4 * (D / gv) + ((D * bits) >> 3));
}

/** Byte offset of the code of (channel c, token t) in a value block's code area, and its plane shift. */
// @ts-ignore: decorator
@inline export function valueCodeByte(c: i32, t: i32, bits: i32): i32 {
  const planes = 8 / bits;
  const chunksPerQuad = (VALUE_BLOCK * bits) >> 5;
  const quad = t >> 2;
  return (((c >> 2) * chunksPerQuad + quad / planes) << 4) + ((c & 3) << 2) + (t & 3);
}

// @ts-ignore: decorator
@inline export function valueCodeShift(t: i32, bits: i32): i32 {
  return ((t >> 2) % (8 / bits)) * bits;
}

// When tokens are quantized: the flush schedule of SPEC.md, written once. The cache (cache.ts) asks
// it at the start of every append; nothing else restates it.
//
//   keys per channel, 'chunked' (KIVI): while residual >= R: quantize the oldest R (R/G groups per channel)
//   keys per channel, R = 0:            quantize every whole G-token chunk
//   keys per channel, 'sliding':        while residual >= R: quantize the oldest G
//   per token (values; keys in the keyGrouping ablation): while residual > R: quantize the oldest token
//   per channel values (the valueGrouping ablation) follow the chunked rule; bits 32 quantizes nothing.

import type { ResolvedOptions } from './options';
import type { StreamKind } from './layout';

export type StreamRole = 'keys' | 'values';

/** Tokens the flush at the start of an append quantizes, oldest first, from a residual of `count`. */
export function tokensToFlush(o: ResolvedOptions, role: StreamRole, kind: StreamKind, count: number): number {
  const { residual: R, groupSize: G } = o;
  switch (kind) {
    case 'f32':
      return 0;
    case 'token':
      return Math.max(0, count - R);
    case 'channel':
      if (R === 0) return Math.floor(count / G) * G;
      if (role === 'keys' && o.keyWindow === 'sliding') return count >= R ? (Math.floor((count - R) / G) + 1) * G : 0;
      return Math.floor(count / R) * R;
  }
}

/**
 * Residual rows a stream keeps after its live window so that the flushes of the appends that a
 * truncate undoes can be undone too: a draft of up to R tokens, appended in one call or one token at
 * a time, triggers at most R + G tokens of key flushes (one chunk of R, or G at a time when sliding)
 * and R value flushes (one token per append). Undoing them restores those f32 rows exactly, so a
 * rejected draft leaves the cache bit-identical to one that never saw it (SPEC.md, truncate).
 */
export function undoRows(o: ResolvedOptions, kind: StreamKind): number {
  if (kind === 'f32' || o.residual === 0) return 0;
  return kind === 'channel' ? o.residual + o.groupSize : o.residual;
}

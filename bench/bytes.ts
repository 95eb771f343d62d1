// (3) Bytes held per token at N tokens (default 32K), one layer, decode state (N-1 tokens prefilled in
// appends of 512, then 1 token appended), cache created with maxTokens = N:
//  - byteLength: what the cache holds in wasm memory (allocated capacity, room not yet filled included)
//  - stats().bytes: what the stored tokens occupy (codes, halves, f32 residual)
//  - formula: kvHeads · D · [ (N − R) · (b + 32/G)/8 + (N − R − 1) · (b + 32/gv)/8 + 4·R + 4·(R + 1) ] / N
//    (keys per channel in groups of G tokens, values per token in groups of gv = min(G, D) channels, each
//    group with a half scale and zero; R keys and R + 1 values in f32); bits 32: 4 · 2 · kvHeads · D.

import type { Bits, Kivi, VariantName } from '../src/index';
import { tokenSlice, type BenchData } from './data';
import { GROUP_SIZE, RESIDUAL } from './options';
import { progress } from './progress';

const CHUNK = 512;

export interface BytesRow {
  shape: string;
  build: VariantName;
  bits: Bits;
  tokens: number;
  byteLength?: number;
  statsBytes?: number;
  byteLengthPerToken?: number;
  statsBytesPerToken?: number;
  formulaPerToken: number;
  statsOverFormula?: number;
  byteLengthOverFormula?: number;
  bitsPerElement?: number;
  residualKeys?: number;
  residualValues?: number;
  error?: string;
}

export function formulaBytesPerToken(bits: Bits, kvHeads: number, D: number, N: number): number {
  if (bits === 32) return 4 * 2 * kvHeads * D;
  const gv = Math.min(GROUP_SIZE, D);
  const R = RESIDUAL;
  const perHead = (N - R) * (bits + 32 / GROUP_SIZE) / 8 + (N - R - 1) * (bits + 32 / gv) / 8 + 4 * R + 4 * (R + 1);
  return (kvHeads * D * perHead) / N;
}

export function measureBytes(kivi: Kivi, data: BenchData, bits: Bits, N: number): BytesRow {
  const { queryHeads, kvHeads, headDim: D } = data.shape;
  const row: BytesRow = { shape: data.shape.name, build: kivi.variant, bits, tokens: N, formulaPerToken: formulaBytesPerToken(bits, kvHeads, D, N) };
  let cache;
  try {
    cache = kivi.createCache({ layers: 1, queryHeads, kvHeads, headDim: D, bits, groupSize: GROUP_SIZE, residual: RESIDUAL, maxTokens: N });
    for (let from = 0; from < N - 1; from += CHUNK) {
      const n = Math.min(N - 1, from + CHUNK) - from;
      cache.append(0, tokenSlice(data, data.keys, from, n), tokenSlice(data, data.values, from, n));
    }
    cache.append(0, tokenSlice(data, data.keys, N - 1, 1), tokenSlice(data, data.values, N - 1, 1));
    const s = cache.stats();
    Object.assign(row, {
      byteLength: cache.byteLength,
      statsBytes: s.bytes,
      byteLengthPerToken: cache.byteLength / N,
      statsBytesPerToken: s.bytes / N,
      statsOverFormula: s.bytes / N / row.formulaPerToken,
      byteLengthOverFormula: cache.byteLength / N / row.formulaPerToken,
      bitsPerElement: s.bitsPerElement,
      residualKeys: s.residualKeys,
      residualValues: s.residualValues,
    });
    progress(`bytes ${data.shape.name} bits ${bits} at ${N}: ${row.statsBytesPerToken!.toFixed(1)} B/token (formula ${row.formulaPerToken.toFixed(1)}), byteLength ${row.byteLengthPerToken!.toFixed(1)} B/token`);
  } catch (error) {
    row.error = error instanceof Error ? error.message : String(error);
    progress(`bytes ${data.shape.name} bits ${bits}: ERROR ${row.error}`);
  } finally {
    cache?.dispose();
  }
  return row;
}

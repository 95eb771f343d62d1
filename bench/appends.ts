// (2) Append (quantize) throughput, in GB/s of f32 input: bytes of the keys and values appended
// (tokens × kvHeads × headDim × 4 bytes × 2) divided by the time the appends took.
//
//  - prefill: into an empty cache, 8 appends of 512 tokens then one append of 1 token (4097 tokens). Each
//    append first quantizes what earlier appends left beyond the window; the 1-token append is there so
//    that the last chunk is flushed inside the timed region too: at the end all 4096 keys and 4096 - R values
//    are quantized (stats() is recorded in the JSON). Median of 5 runs, each on a new
//    cache (creation not timed), after 1 warm-up run.
//  - decode: after an untimed 4096-token prefill, 2048 appends of 1 token: every append quantizes the oldest
//    value token past R+1, every 128th also a chunk of 128 keys per channel. Median of 3 runs, after 1 warm-up.
// bits 32 appends only copy (no quantization): the baseline.

import type { Bits, Kivi, KiviCache, VariantName } from '../src/index';
import { tokenSlice, type BenchData } from './data';
import { medianOfRuns } from './measure';
import { GROUP_SIZE, RESIDUAL } from './options';
import { progress } from './progress';

export const PREFILL_TOKENS = 4096;
export const PREFILL_CHUNK = 512;
export const DECODE_APPENDS = 2048;
const PREFILL_RUNS = 5;
const DECODE_RUNS = 3;

export interface AppendRow {
  shape: string;
  build: VariantName;
  bits: Bits;
  prefill?: { tokens: number; appends: number; medianMs: number; gbPerS: number; runsMs: number[]; quantizedKeys: number; quantizedValues: number };
  decode?: { tokens: number; afterPrefill: number; medianMs: number; usPerToken: number; gbPerS: number; runsMs: number[] };
  error?: string;
}

export function measureAppends(kivi: Kivi, data: BenchData, bits: Bits): AppendRow {
  const { queryHeads, kvHeads, headDim: D } = data.shape;
  const row: AppendRow = { shape: data.shape.name, build: kivi.variant, bits };
  const tokenBytes = kvHeads * D * 4 * 2; // keys + values, f32
  const make = (maxTokens: number): KiviCache =>
    kivi.createCache({ layers: 1, queryHeads, kvHeads, headDim: D, bits, groupSize: GROUP_SIZE, residual: RESIDUAL, maxTokens });
  try {
    // prefill
    const chunks: [Float32Array, Float32Array][] = [];
    for (let from = 0; from < PREFILL_TOKENS; from += PREFILL_CHUNK) {
      chunks.push([tokenSlice(data, data.keys, from, PREFILL_CHUNK), tokenSlice(data, data.values, from, PREFILL_CHUNK)]);
    }
    chunks.push([tokenSlice(data, data.keys, PREFILL_TOKENS, 1), tokenSlice(data, data.values, PREFILL_TOKENS, 1)]);
    const prefillTokens = PREFILL_TOKENS + 1;
    let quantizedKeys = 0;
    let quantizedValues = 0;
    const prefill = medianOfRuns(PREFILL_RUNS, 1, () => {
      const cache = make(prefillTokens);
      try {
        const t0 = performance.now();
        for (const [k, v] of chunks) cache.append(0, k, v);
        const ms = performance.now() - t0;
        const s = cache.stats();
        quantizedKeys = s.quantizedKeys;
        quantizedValues = s.quantizedValues;
        return ms;
      } finally {
        cache.dispose();
      }
    });
    row.prefill = {
      tokens: prefillTokens, appends: chunks.length, medianMs: prefill.medianMs,
      gbPerS: (prefillTokens * tokenBytes) / (prefill.medianMs * 1e6), runsMs: prefill.allMs, quantizedKeys, quantizedValues,
    };

    // decode
    const singles: [Float32Array, Float32Array][] = [];
    for (let i = 0; i < DECODE_APPENDS; i++) {
      singles.push([tokenSlice(data, data.keys, PREFILL_TOKENS + i, 1), tokenSlice(data, data.values, PREFILL_TOKENS + i, 1)]);
    }
    const decode = medianOfRuns(DECODE_RUNS, 1, () => {
      const cache = make(PREFILL_TOKENS + DECODE_APPENDS);
      try {
        for (let i = 0; i < PREFILL_TOKENS / PREFILL_CHUNK; i++) cache.append(0, chunks[i]![0], chunks[i]![1]);
        const t0 = performance.now();
        for (const [k, v] of singles) cache.append(0, k, v);
        return performance.now() - t0;
      } finally {
        cache.dispose();
      }
    });
    row.decode = {
      tokens: DECODE_APPENDS, afterPrefill: PREFILL_TOKENS, medianMs: decode.medianMs, usPerToken: (decode.medianMs * 1e3) / DECODE_APPENDS,
      gbPerS: (DECODE_APPENDS * tokenBytes) / (decode.medianMs * 1e6), runsMs: decode.allMs,
    };
    progress(`appends ${data.shape.name} [${kivi.variant}] bits ${bits}: prefill ${row.prefill.gbPerS.toFixed(2)} GB/s, decode ${row.decode.gbPerS.toFixed(2)} GB/s (${row.decode.usPerToken.toFixed(1)} us/token)`);
  } catch (error) {
    row.error = error instanceof Error ? error.message : String(error);
    progress(`appends ${data.shape.name} [${kivi.variant}] bits ${bits}: ERROR ${row.error}`);
  }
  return row;
}

// The benchmark report's check of the performance targets (bench/report.ts targets()), on results
// whose numbers are chosen so that each target is met or missed by a known margin.

import { describe, expect, it } from 'vitest';
import type { AppendRow } from '../bench/appends';
import type { BytesRow } from '../bench/bytes';
import type { DecodeRow } from '../bench/decode';
import { markdown, targets, type Results } from '../bench/report';

const KV_HEADS: Record<string, number> = { 'llama2-7b': 32, 'llama3-8b': 8 };

/** A timed decode row; ratios are filled in by withRatios. */
function row(shape: string, context: number, impl: DecodeRow['impl'], ms: number, build?: 'simd' | 'relaxed-simd'): DecodeRow {
  return {
    shape, context, impl, label: impl, status: 'ok',
    ...(build === undefined ? {} : { build }),
    timing: { medianMs: ms, meanMs: ms, rme: 1, samples: 10, callsPerSample: 1 },
    nsPerTokenPerKvHead: (ms * 1e6) / (context * KV_HEADS[shape]!),
  };
}

/** ratioToF32 and ratioToOrtBest as bench/decode.ts computes them. */
function withRatios(rows: DecodeRow[]): DecodeRow[] {
  for (const r of rows) {
    const at = rows.filter((x) => x.shape === r.shape && x.context === r.context);
    const f32 = at.find((x) => x.impl === 'kivi-f32' && x.build === (r.build ?? 'relaxed-simd'));
    if (r.impl !== 'kivi-f32' && f32) r.ratioToF32 = r.timing!.medianMs / f32.timing!.medianMs;
    const ort = at.filter((x) => x.impl.startsWith('ort-')).sort((a, b) => a.timing!.medianMs - b.timing!.medianMs)[0];
    if (ort) {
      ort.ortBest = true;
      r.ratioToOrtBest = r.timing!.medianMs / ort.timing!.medianMs;
    }
  }
  return rows;
}

function results(decode: DecodeRow[], appends: AppendRow[], bytes: BytesRow[]): Results {
  return {
    meta: {
      date: '2026-11-24T00:00:00.000Z', node: 'v20.20.2', platform: 'linux', arch: 'x64', execArgv: [], cpu: { model: 'test', count: 2 }, memoryGiB: 24,
      builds: [{ name: 'relaxed-simd', loaded: true }, { name: 'simd', loaded: true }, { name: 'scalar', loaded: true }],
      kivi: { groupSize: 32, residual: 128 }, data: 'synthetic',
      options: {
        shapes: ['llama2-7b', 'llama3-8b'], contexts: [16384, 32768], scalarContexts: [], impls: [], builds: [], parts: ['decode', 'appends', 'bytes'],
        maxTime: 1, minSamples: 5, exactContexts: [], bytesContext: 32768, quick: false, out: undefined, argv: [],
      },
      runSeconds: 1,
    },
    decode, decodeSkipped: [], appends, bytes, failures: [],
  };
}

const appendRow = (build: 'simd' | 'relaxed-simd', prefill: number, decode: number): AppendRow => ({
  shape: 'llama2-7b', build, bits: 2,
  prefill: { tokens: 4097, appends: 9, medianMs: 1, gbPerS: prefill, runsMs: [1], quantizedKeys: 0, quantizedValues: 0 },
  decode: { tokens: 64, afterPrefill: 4096, medianMs: 1, usPerToken: 1, gbPerS: decode, runsMs: [1] },
});

const bytesRow = (over: number): BytesRow => ({
  shape: 'llama2-7b', build: 'relaxed-simd', bits: 2, tokens: 32768, formulaPerToken: 3188,
  statsOverFormula: 1, byteLengthOverFormula: over, statsBytesPerToken: 3188, byteLengthPerToken: 3188 * over,
  statsBytes: 3188 * 32768, byteLength: 3188 * 32768 * over, bitsPerElement: 3.11, residualKeys: 128, residualValues: 129,
});

describe('bench report: targets', () => {
  // relaxed-simd meets every decode target; simd misses each by a small margin.
  const decode = withRatios([
    // relaxed-simd: 11.9 ns at 32K; f32 4x; ort 25x; KIVI-4 1.4x; GQA 0.7x of MHA
    row('llama2-7b', 32768, 'kivi-2', (11.9 * 32768 * 32) / 1e6, 'relaxed-simd'),
    row('llama2-7b', 32768, 'kivi-4', (1.4 * 11.9 * 32768 * 32) / 1e6, 'relaxed-simd'),
    row('llama2-7b', 32768, 'kivi-f32', (4 * 11.9 * 32768 * 32) / 1e6, 'relaxed-simd'),
    row('llama3-8b', 32768, 'kivi-2', (0.7 * 11.9 * 32768 * 32) / 1e6, 'relaxed-simd'),
    row('llama3-8b', 32768, 'kivi-f32', (3.6 * 0.7 * 11.9 * 32768 * 32) / 1e6, 'relaxed-simd'),
    // simd: 12.5 ns; f32 3.4x; KIVI-4 1.6x; GQA 0.8x
    row('llama2-7b', 32768, 'kivi-2', (12.5 * 32768 * 32) / 1e6, 'simd'),
    row('llama2-7b', 32768, 'kivi-4', (1.6 * 12.5 * 32768 * 32) / 1e6, 'simd'),
    row('llama2-7b', 32768, 'kivi-f32', (3.4 * 12.5 * 32768 * 32) / 1e6, 'simd'),
    row('llama3-8b', 32768, 'kivi-2', (0.8 * 12.5 * 32768 * 32) / 1e6, 'simd'),
    row('llama3-8b', 32768, 'kivi-f32', (4 * 0.8 * 12.5 * 32768 * 32) / 1e6, 'simd'),
    // onnxruntime-web: 25x the relaxed KIVI-2 time (so 25 / (12.5 / 11.9) = 23.8x the simd one) and a slower graph
    row('llama2-7b', 32768, 'ort-matmul', (25 * 11.9 * 32768 * 32) / 1e6),
    row('llama2-7b', 32768, 'ort-mha', (30 * 11.9 * 32768 * 32) / 1e6),
  ]);
  const res = results(decode, [appendRow('relaxed-simd', 1.9, 1.3), appendRow('simd', 1.8, 0.9)], [bytesRow(1.014)]);
  const goals = targets(res);
  const find = (build: string, start: string) => goals.find((g) => g.build === build && g.target.startsWith(start));

  it('evaluates every target per SIMD build and skips the scalar build', () => {
    expect(goals.filter((g) => g.build === 'scalar')).toEqual([]);
    expect(goals.filter((g) => g.build === 'relaxed-simd').length).toBe(7); // 6 per build + bytes
    expect(goals.filter((g) => g.build === 'simd').length).toBe(6);
  });

  it('reads each target from the rows it names', () => {
    expect(find('relaxed-simd', 'KIVI-2, Llama-2-7B')).toMatchObject({ measured: '11.9 ns', met: true });
    expect(find('simd', 'KIVI-2, Llama-2-7B')).toMatchObject({ measured: '12.5 ns', met: false });
    expect(find('relaxed-simd', 'KIVI-2 ≥ 3.5×')?.met).toBe(true); // 4.0x and 3.6x
    expect(find('relaxed-simd', 'KIVI-2 ≥ 3.5×')?.measured).toMatch(/^3\.60× \(Llama-3-8B, 32K\)/);
    expect(find('simd', 'KIVI-2 ≥ 3.5×')?.measured).toMatch(/^3\.40× \(Llama-2-7B, 32K\)/);
    expect(find('simd', 'KIVI-2 ≥ 3.5×')?.met).toBe(false);
    expect(find('relaxed-simd', 'KIVI-2 ≥ 20×')).toMatchObject({ met: true });
    expect(find('relaxed-simd', 'KIVI-2 ≥ 20×')?.measured).toMatch(/^25\.0×/);
    expect(find('simd', 'KIVI-2 ≥ 20×')?.measured).toMatch(/^23\.8×/);
    expect(find('relaxed-simd', 'KIVI-4')).toMatchObject({ met: true });
    expect(find('relaxed-simd', 'KIVI-4')?.measured).toMatch(/^1\.40×/);
    expect(find('simd', 'KIVI-4')).toMatchObject({ met: false });
    expect(find('relaxed-simd', 'GQA')?.measured).toMatch(/^0\.70× of MHA/);
    expect(find('relaxed-simd', 'GQA')?.met).toBe(true);
    expect(find('simd', 'GQA')?.met).toBe(false); // 0.80 > 0.75
    expect(find('relaxed-simd', 'Appends')).toMatchObject({ measured: '1.30 GB/s (range 1.30–1.90)', met: true });
    expect(find('simd', 'Appends')).toMatchObject({ met: false });
    expect(find('relaxed-simd', 'Bytes')).toMatchObject({ met: true });
    expect(find('relaxed-simd', 'Bytes')?.measured).toMatch(/^largest deviation 1\.4%/);
  });

  it('marks a target it has no rows for as not measured, and the markdown report ends with the table', () => {
    const partial = targets(results(decode.filter((r) => r.shape !== 'llama2-7b' || r.impl.startsWith('ort')), [], [bytesRow(1.04)]));
    expect(partial.find((g) => g.target.startsWith('KIVI-2, Llama-2-7B'))).toMatchObject({ measured: '–', met: undefined });
    expect(partial.find((g) => g.target.startsWith('Bytes'))?.met).toBe(false);
    const text = markdown(res);
    expect(text).toContain('## Targets');
    expect(text).toMatch(/\| KIVI-2, Llama-2-7B layer, N = 32K: ≤ 12 ns per token per kv head +\| simd +\| 12\.5 ns +\| \*\*no\*\* +\|/);
  });
});

// (1) One decode step of attention: one query token, every head of one layer, over N cached tokens.
//
// Every implementation is checked against float64 attention (bench/check.ts) before it is timed; one
// that fails is reported and not timed.

import type { Bits, Kivi, VariantName } from '../src/index';
import { relativeL2 } from '../src/reference';
import { dequantizedAttention, exactAttention, F32_TOLERANCE, KERNEL_TOLERANCE, SANITY_BOUND } from './check';
import type { BenchData } from './data';
import { timeDeferred, timeSync, type Timing, type TimingOptions } from './measure';
import { GROUP_SIZE, inList, RESIDUAL, type BenchArgs, type Impl } from './options';
import { createOnnxPeers, onnxRuntimeInfo, type OnnxPeer } from './peers/onnx';
import { plainAttention } from './peers/plain-js';
import { progress } from './progress';

export const PREFILL_CHUNK = 512;

export interface DecodeCheck {
  /** relative L2 against float64 attention over the exact f32 keys and values */
  vsExact: number;
  /** the bound vsExact must stay under */
  exactBound: number;
  /** quantized caches at --exact-contexts: relative L2 against float64 attention over the cache's own dequantized keys/values */
  vsDequantized?: number;
  dequantizedBound?: number;
  ok: boolean;
}

export interface DecodeRow {
  shape: string;
  context: number;
  impl: Impl;
  label: string;
  /** wasm build (kivi rows) */
  build?: VariantName;
  bits?: Bits;
  status: 'ok' | 'check-failed' | 'error';
  error?: string;
  check?: DecodeCheck;
  timing?: Timing;
  nsPerTokenPerKvHead?: number;
  /** ms / ms of our f32 kernel (bits 32): same build for kivi rows, the preferred build for peers */
  ratioToF32?: number;
  ratioToF32Build?: VariantName;
  /** ms / ms of the fastest onnxruntime-web graph at this shape and context */
  ratioToOrtBest?: number;
  ortBest?: boolean;
}

export interface DecodeSkip {
  shape: string;
  context: number;
  build: VariantName;
  reason: string;
}

const KIVI_BITS: [Impl, Bits][] = [['kivi-2', 2], ['kivi-4', 4], ['kivi-8', 8], ['kivi-f32', 32]];
const KIVI_LABEL: Record<number, string> = { 2: 'KIVI-2', 4: 'KIVI-4', 8: 'KIVI-8', 32: 'f32 kernel (bits 32)' };
const ORT_IMPL: Record<string, Impl> = {
  'ort MatMul/Softmax/MatMul': 'ort-matmul',
  'ort MultiHeadAttention': 'ort-mha',
  'ort GroupQueryAttention': 'ort-gqa',
};

const fmtErr = (x: number): string => (x < 1e-3 ? x.toExponential(1) : x.toFixed(4));

/** Measures every selected implementation at one shape and context; `data` holds at least `context` tokens. */
export async function measureDecode(args: BenchArgs, kivis: Kivi[], data: BenchData, context: number, rows: DecodeRow[], skips: DecodeSkip[]): Promise<void> {
  const shape = data.shape;
  const { queryHeads, kvHeads, headDim: D } = shape;
  const timing: TimingOptions = { maxTime: args.maxTime, minSamples: args.minSamples };
  const exact = exactAttention(data, context);
  const exactCheck = inList(args.exactContexts, context);
  const query = data.query;
  const here: DecodeRow[] = [];
  const tag = `${shape.name} N=${context}`;

  const finish = (row: DecodeRow, t: Timing): void => {
    row.timing = t;
    row.nsPerTokenPerKvHead = (t.medianMs * 1e6) / (context * kvHeads);
    progress(`${tag} ${row.label}${row.build ? ` [${row.build}]` : ''}: ${t.medianMs.toFixed(3)} ms/step (${row.nsPerTokenPerKvHead.toFixed(2)} ns/token/kv head, ${t.samples} samples)`);
  };
  const fail = (row: DecodeRow, error: unknown): void => {
    row.status = 'error';
    row.error = error instanceof Error ? error.message : String(error);
    progress(`${tag} ${row.label}${row.build ? ` [${row.build}]` : ''}: ERROR ${row.error}`);
  };
  const checked = (row: DecodeRow, check: DecodeCheck): boolean => {
    row.check = check;
    if (!check.ok) {
      row.status = 'check-failed';
      progress(`${tag} ${row.label}${row.build ? ` [${row.build}]` : ''}: CHECK FAILED (vs exact ${fmtErr(check.vsExact)}, bound ${check.exactBound}` +
        `${check.vsDequantized !== undefined ? `; vs dequantized ${fmtErr(check.vsDequantized)}, bound ${check.dequantizedBound}` : ''}) — not timed`);
    }
    return check.ok;
  };

  // kivi-wasm: every loaded build, every selected bit width
  for (const kivi of kivis) {
    if (kivi.variant === 'scalar' && !inList(args.scalarContexts, context)) {
      skips.push({ shape: shape.name, context, build: kivi.variant, reason: 'not in --scalar-contexts' });
      continue;
    }
    for (const [impl, bits] of KIVI_BITS) {
      if (!args.impls.includes(impl)) continue;
      const row: DecodeRow = { shape: shape.name, context, impl, label: KIVI_LABEL[bits]!, build: kivi.variant, bits, status: 'ok' };
      here.push(row);
      let cache;
      try {
        cache = kivi.createCache({ layers: 1, queryHeads, kvHeads, headDim: D, bits, groupSize: GROUP_SIZE, residual: RESIDUAL, maxTokens: context });
        // Prefill N-1 tokens in chunks, then append the newest token alone: the flush it triggers leaves the
        // cache as in decode (1..R keys and R+1 values in f32, the rest quantized).
        const width = kvHeads * D;
        for (let from = 0; from < context - 1; from += PREFILL_CHUNK) {
          const to = Math.min(context - 1, from + PREFILL_CHUNK);
          cache.append(0, data.keys.subarray(from * width, to * width), data.values.subarray(from * width, to * width));
        }
        cache.append(0, data.keys.subarray((context - 1) * width, context * width), data.values.subarray((context - 1) * width, context * width));
        const out = new Float32Array(queryHeads * D);
        cache.attend(0, query, out);
        const vsExact = relativeL2(out, exact);
        let check: DecodeCheck;
        if (bits === 32) {
          check = { vsExact, exactBound: F32_TOLERANCE, ok: vsExact < F32_TOLERANCE };
        } else {
          const bound = SANITY_BOUND[bits as 2 | 4 | 8];
          check = { vsExact, exactBound: bound, ok: vsExact < bound };
          if (exactCheck) {
            const vsDequantized = relativeL2(out, dequantizedAttention(cache, data, context));
            Object.assign(check, { vsDequantized, dequantizedBound: KERNEL_TOLERANCE, ok: check.ok && vsDequantized < KERNEL_TOLERANCE });
          }
        }
        if (checked(row, check)) {
          const c = cache;
          finish(row, timeSync(`${tag} ${row.label} ${kivi.variant}`, () => c.attend(0, query, out), timing));
        }
      } catch (error) {
        fail(row, error);
      } finally {
        cache?.dispose();
      }
    }
  }

  // plain JavaScript f32
  if (args.impls.includes('plain-js')) {
    const row: DecodeRow = { shape: shape.name, context, impl: 'plain-js', label: 'plain JS f32', status: 'ok' };
    here.push(row);
    try {
      const out = new Float32Array(queryHeads * D);
      plainAttention(shape, context, data.keys, data.values, query, out);
      const vsExact = relativeL2(out, exact);
      if (checked(row, { vsExact, exactBound: F32_TOLERANCE, ok: vsExact < F32_TOLERANCE })) {
        finish(row, timeSync(`${tag} plain-js`, () => plainAttention(shape, context, data.keys, data.values, query, out), timing));
      }
    } catch (error) {
      fail(row, error);
    }
  }

  // onnxruntime-web
  const ortImpls = args.impls.filter((i) => i.startsWith('ort-'));
  if (ortImpls.length > 0) {
    const wanted = new Map<Impl, string>();
    for (const [name, impl] of Object.entries(ORT_IMPL)) {
      const applies = impl === 'ort-matmul' || (impl === 'ort-mha' ? queryHeads === kvHeads : true);
      if (applies && ortImpls.includes(impl)) wanted.set(impl, name);
    }
    let peers: OnnxPeer[] = [];
    let createError: unknown;
    try {
      progress(`${tag}: building onnxruntime-web sessions…`);
      peers = await createOnnxPeers(shape, context, data.keys, data.values, { gqaForMha: ortImpls.includes('ort-gqa') });
    } catch (error) {
      createError = error ?? new Error('createOnnxPeers failed');
    }
    for (const [impl, name] of wanted) {
      const row: DecodeRow = { shape: shape.name, context, impl, label: name, status: 'ok' };
      here.push(row);
      if (createError !== undefined) {
        fail(row, createError);
        continue;
      }
      const peer = peers.find((p) => p.name === name);
      if (!peer) {
        fail(row, new Error(onnxRuntimeInfo().notes.find((n) => n.startsWith(name)) ?? 'session not available'));
        continue;
      }
      try {
        const got = Float32Array.from(await peer.run(query));
        const vsExact = relativeL2(got, exact);
        if (checked(row, { vsExact, exactBound: F32_TOLERANCE, ok: vsExact < F32_TOLERANCE })) {
          finish(row, await timeDeferred(`${tag} ${name}`, () => peer.run(query), timing));
        }
      } catch (error) {
        fail(row, error);
      }
    }
    for (const peer of peers) await peer.dispose();
  }

  // ratios
  const timed = (r: DecodeRow): number | undefined => (r.status === 'ok' ? r.timing?.medianMs : undefined);
  const f32ByBuild = new Map<VariantName, number>();
  for (const r of here) if (r.bits === 32 && timed(r) !== undefined) f32ByBuild.set(r.build!, timed(r)!);
  const preferred = kivis.map((k) => k.variant).find((v) => f32ByBuild.has(v));
  let ortBest: DecodeRow | undefined;
  for (const r of here) if (r.impl.startsWith('ort-') && timed(r) !== undefined && (!ortBest || timed(r)! < timed(ortBest)!)) ortBest = r;
  if (ortBest) ortBest.ortBest = true;
  for (const r of here) {
    const ms = timed(r);
    if (ms === undefined) continue;
    const f32Build = r.build ?? preferred;
    const f32 = f32Build ? f32ByBuild.get(f32Build) : undefined;
    if (f32 !== undefined) {
      r.ratioToF32 = ms / f32;
      r.ratioToF32Build = f32Build;
    }
    if (ortBest) r.ratioToOrtBest = ms / timed(ortBest)!;
  }
  rows.push(...here);
}

// npm run bench — in one process: (1) one decode step of attention (one query token, every head of one
// layer) for KIVI 2/4/8-bit and f32 caches on every wasm build this runtime runs, a plain-JavaScript f32
// attention and onnxruntime-web, each checked against float64 attention before it is timed; (2) append
// (quantize) throughput; (3) bytes held per token; (4) threads: the decode step and a long prompt's append
// on 1..cores threads beside the ceiling of as many independent processes and onnxruntime-web's numThreads;
// (5) the memory of forks sharing a prompt against separate caches. Markdown report on stdout, progress on stderr, JSON in
// bench/results/. Options: npm run bench -- --help.
//
// Run it as package.json does: node --experimental-wasm-relaxed-simd --no-liftoff --import tsx bench/attention.bench.ts
// (the flags let Node 20 run the relaxed-SIMD build; without them it is reported as not run).

import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { Kivi, VARIANTS, type Bits } from '../src/index';
import { measureAppends, DECODE_APPENDS, PREFILL_TOKENS } from './appends';
import { measureBytes } from './bytes';
import { DATA_DESCRIPTION, generate, type BenchData } from './data';
import { measureDecode, type DecodeRow, type DecodeSkip } from './decode';
import { APPEND_SHAPES, GROUP_SIZE, parseArgs, RESIDUAL, USAGE, UsageError, type BenchArgs } from './options';
import { onnxRuntimeInfo } from './peers/onnx';
import { elapsedSeconds, formatDuration, progress } from './progress';
import { markdown, targets, type BuildInfo, type Results } from './report';
import { measureThreads, type ThreadResults } from './threads';
import { measureForks, type ForkResults } from './forks';
import type { AppendRow } from './appends';
import type { BytesRow } from './bytes';

const BITS: Bits[] = [2, 4, 8, 32];
const IMPL_OF_BITS: Record<number, string> = { 2: 'kivi-2', 4: 'kivi-4', 8: 'kivi-8', 32: 'kivi-f32' };

async function loadBuilds(args: BenchArgs): Promise<{ kivis: Kivi[]; builds: BuildInfo[] }> {
  const kivis: Kivi[] = [];
  const builds: BuildInfo[] = [];
  for (const v of VARIANTS) {
    if (!args.builds.includes(v.name)) {
      builds.push({ name: v.name, loaded: false, reason: 'not selected (--builds)' });
      continue;
    }
    try {
      // One thread: the tables of one core; the thread-scaling part loads its own instances.
      const kivi = await Kivi.load({ variant: v.name, threads: 1 });
      if (kivi.variant !== v.name) throw new Error(`asked for ${v.name}, got ${kivi.variant}`);
      kivis.push(kivi);
      builds.push({ name: v.name, loaded: true });
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      builds.push({ name: v.name, loaded: false, reason });
      progress(`build ${v.name}: NOT RUN — ${reason}`);
    }
  }
  return { kivis, builds };
}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`bench: ${error.message}\n`);
    return 2;
  }
  if (parsed === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const args = parsed;
  const date = new Date();
  const { kivis, builds } = await loadBuilds(args);
  progress(`builds: ${kivis.map((k) => k.variant).join(', ') || 'none'}`);
  const usesOrt = args.parts.includes('decode') && args.impls.some((i) => i.startsWith('ort-'));
  const bitsSelected = BITS.filter((b) => args.impls.includes(IMPL_OF_BITS[b] as never));

  const decode: DecodeRow[] = [];
  const decodeSkipped: DecodeSkip[] = [];
  const appends: AppendRow[] = [];
  const bytes: BytesRow[] = [];

  for (const shape of args.shapes) {
    const runsAppends = args.parts.includes('appends') && APPEND_SHAPES.includes(shape.name) && bitsSelected.length > 0;
    const needed = Math.max(
      1024,
      args.parts.includes('decode') ? Math.max(...args.contexts) : 0,
      runsAppends ? PREFILL_TOKENS + DECODE_APPENDS + 1 : 0,
    );
    progress(`${shape.name}: generating ${needed} tokens of keys and values…`);
    const t0 = performance.now();
    let data: BenchData | undefined = generate(shape, needed);
    progress(`${shape.name}: data in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    if (args.parts.includes('decode')) {
      for (const context of args.contexts) {
        await measureDecode(args, kivis, data, context, decode, decodeSkipped);
      }
    }
    if (runsAppends) {
      for (const kivi of kivis) for (const bits of bitsSelected) appends.push(measureAppends(kivi, data, bits));
    }
    if (args.parts.includes('bytes') && kivis.length > 0) {
      for (const bits of BITS) bytes.push(measureBytes(kivis[0]!, data, bits, args.bytesContext));
    }
    data = undefined;
  }

  let threads: ThreadResults | undefined;
  if (args.parts.includes('threads') && kivis.length > 0) {
    const best = kivis.find((k) => k.variant !== 'scalar')?.variant;
    if (best) threads = await measureThreads(args, best);
  }

  const forks: ForkResults | undefined = args.parts.includes('forks') && kivis.length > 0 ? measureForks(kivis[0]!) : undefined;

  const failures: string[] = [];
  for (const r of threads?.ort ?? []) if (r.error) failures.push(`threads: onnxruntime-web ${r.shape} N=${r.context} numThreads ${r.threads}: ${r.error}`);
  for (const r of decode) {
    const what = `decode ${r.shape} N=${r.context} ${r.label}${r.build ? ` [${r.build}]` : ''}`;
    if (r.status === 'check-failed') failures.push(`${what}: check failed (${JSON.stringify(r.check)})`);
    if (r.status === 'error') failures.push(`${what}: ${r.error}`);
  }
  for (const a of appends) if (a.error) failures.push(`appends ${a.shape} [${a.build}] bits ${a.bits}: ${a.error}`);
  for (const b of bytes) if (b.error) failures.push(`bytes ${b.shape} bits ${b.bits}: ${b.error}`);
  if (kivis.length === 0) failures.push('no wasm build could be loaded');

  const cpus = os.cpus();
  const { shapes, ...rest } = args;
  const results: Results = {
    meta: {
      date: date.toISOString(),
      node: process.version,
      platform: process.platform,
      arch: process.arch,
      execArgv: process.execArgv,
      cpu: { model: cpus[0]?.model.trim() ?? 'unknown', count: cpus.length },
      memoryGiB: os.totalmem() / 2 ** 30,
      builds,
      ...(usesOrt ? { ort: onnxRuntimeInfo() } : {}),
      kivi: { groupSize: GROUP_SIZE, residual: RESIDUAL },
      data: DATA_DESCRIPTION,
      options: { ...rest, shapes: shapes.map((s) => s.name) },
      runSeconds: elapsedSeconds(),
    },
    decode,
    decodeSkipped,
    appends,
    bytes,
    ...(threads ? { threads } : {}),
    ...(forks ? { forks } : {}),
    failures,
  };

  const report = `${markdown(results)}\n`;
  process.stdout.write(report);

  const json = `${JSON.stringify({ ...results, targets: targets(results) }, null, 1)}\n`;
  const files = args.out !== undefined
    ? [args.out]
    : (() => {
        const dir = new URL('./results/', import.meta.url);
        mkdirSync(dir, { recursive: true });
        // a --quick smoke run must not replace the results of a full run
        if (args.quick) return [new URL('quick.tmp.json', dir)];
        return [new URL('latest.json', dir), new URL(`${date.toISOString().slice(0, 10)}-${process.version}.json`, dir)];
      })();
  for (const f of files) writeFileSync(f, json);
  // The dated markdown report beside the dated JSON (a full run only).
  const dated = args.out === undefined && !args.quick ? files[1] : undefined;
  if (dated instanceof URL) writeFileSync(new URL(dated.href.replace(/\.json$/, '.md')), report);
  progress(`JSON written to ${files.map((f) => (f instanceof URL ? f.pathname : f)).join(', ')}${dated ? ' (and the report beside the dated one, .md)' : ''}; whole run ${formatDuration(elapsedSeconds())}`);
  if (failures.length) progress(`${failures.length} failure(s): see the end of the report`);
  return failures.length ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`bench: failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exitCode = 1;
  },
);

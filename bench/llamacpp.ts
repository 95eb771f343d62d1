// npm run bench:llamacpp — kivi-wasm beside llama.cpp (native and WebAssembly) on GGUF, in two parts.
//
// Part decode (decode attention, llama-bench style): one decode step of a random-weight GGUF model of
// each bench layer shape (bench/options.ts SHAPES; one layer, FFN 256, vocabulary 512, so that
// attention is most of what grows with depth), timed at context depth N and at a small depth N0;
// (t(N) − t(N0)) / ((N − N0) · kv heads) is attention's cost per token and kv head.
//   llama.cpp native  node-llama-cpp (bench/peers/llamacpp/decode.mjs): f16 (flash attention and the
//                     matrix-multiply path), q8_0, q4_0 caches; the cache filled from a synthesized state
//   wllama            llama.cpp in WebAssembly in headless Chromium (bench/peers/llamacpp/wllama.mjs):
//                     f16, q8_0, q4_0 caches, flash attention; the cache filled by prefill (wllama 3.8.1
//                     has no state or session loading: its wasm's only entry is wllama_action with load,
//                     completion, embedding, rerank, systemone, get_result, cancel, test_backend_ops),
//                     which in wasm takes minutes per few thousand tokens and grows with the square of
//                     the depth, so its depths are smaller (--wllama-depths, --wllama-depths-for)
//   kivi-wasm         KIVI-2 (G = 32, R = 128) and the f32 kernel through a KiviCache of an instance
//                     loaded with Kivi.load({ threads }), one attend of one query token over N tokens
//                     (as npm run bench), divided by N · kv heads
// each at every thread count of --threads (default 1 and all cores), every table at one count.
//
// Part e2e (end to end in the browser, bench/llamacpp-e2e.ts): one random-weight GGUF of a small
// attention-dominated shape (E2E_SHAPE) in kivi-wasm's runner (LlamaRunner on the GGUF, KIVI-2 cache,
// in a Worker of the same cross-origin-isolated page) and in wllama (f16 and q4_0 caches), each
// filling its cache to every depth of --e2e-depths and then generating --e2e-steps tokens greedily;
// tokens per second of the generation, and each cache's bytes.
//
// Results: bench/results/llamacpp-<date>.{md,json} and llamacpp-latest.json. A run of one part
// (--parts) keeps the other part of the same day's JSON, so the two may run apart (each part's
// ratios come from one run). Progress on stderr.
//
// Needs the peers installed (cd bench/peers/llamacpp && npm ci --omit=optional), /usr/bin/chromium,
// and the package built (npm run build: the e2e page imports dist/).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Kivi } from '../src/index';
import { randomGguf } from '../src/gguf/convert';
import { generate } from './data';
import { checkWllamaThreads, E2E_KIVI_CACHE, E2E_SHAPE, GGML_BYTES, msPerStep, runE2e, WORD, type E2eRow } from './llamacpp-e2e';
import { timeSync } from './measure';
import { SHAPES, type Shape } from './options';
import { elapsedSeconds, formatDuration, progress } from './progress';

const here = dirname(fileURLToPath(import.meta.url));
const PEERS = join(here, 'peers', 'llamacpp');
const RESULTS = join(here, 'results');
const LAYERS = 1;
const BASE_DEPTH = 256;
const PARTS = ['decode', 'e2e'] as const;
type Part = (typeof PARTS)[number];

interface Args {
  parts: Part[];
  shapes: Shape[];
  depths: number[];
  /** wllama's depths per shape name */
  wllamaDepths: Record<string, number[]>;
  wllamaCaches: string[];
  threads: number[];
  wllama: boolean;
  steps: number;
  wllamaSteps: number;
  e2eDepths: number[];
  e2eSteps: number;
  e2eThreads: number[];
  e2eCaches: string[];
}

const USAGE = 'options: --parts decode,e2e; decode: --shapes, --depths, --threads, --steps, --wllama-depths, --wllama-depths-for shape=d,d;shape=d, --wllama-caches, --wllama-steps, --no-wllama; e2e: --e2e-depths, --e2e-steps, --e2e-threads, --e2e-caches';

function parse(argv: string[]): Args {
  const list = (v: string) => v.split(',').map((x) => Number(x.replace(/k$/i, '')) * (/k$/i.test(x) ? 1024 : 1));
  const shapeNamed = (name: string) => {
    const s = SHAPES.find((x) => x.name === name);
    if (!s) throw new Error(`expected a shape from ${SHAPES.map((x) => x.name).join(', ')}, got ${name}`);
    return s;
  };
  const caches = (flag: string, v: string) => {
    const c = v.split(',');
    if (c.some((x) => !(x in GGML_BYTES))) throw new Error(`${flag} expects f16, q8_0, q4_0, got ${v}`);
    return c;
  };
  const cores = os.availableParallelism();
  let wllamaDefault = [2048, 4096];
  let wllamaFor: Record<string, number[]> = { 'llama3.2-1b': [2048, 4096, 8192] };
  const a: Args = {
    parts: [...PARTS], shapes: [...SHAPES], depths: [2048, 4096, 8192, 16384, 32768], wllamaDepths: {}, wllamaCaches: ['f16', 'q8_0', 'q4_0'],
    threads: [...new Set([1, cores])], wllama: true, steps: 9, wllamaSteps: 24,
    e2eDepths: [512, 8192, 32768], e2eSteps: 64, e2eThreads: [...new Set([1, cores])], e2eCaches: ['f16', 'q4_0'],
  };
  let e2eThreadsGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const value = () => { const v = argv[++i]; if (v === undefined) throw new Error(`${argv[i - 1]} expects a value`); return v; };
    switch (argv[i]) {
      case '--parts': { const p = value().split(','); if (p.some((x) => !PARTS.includes(x as Part))) throw new Error(`--parts expects ${PARTS.join(', ')}, got ${p.join(',')}`); a.parts = p as Part[]; break; }
      case '--shapes': a.shapes = value().split(',').map(shapeNamed); break;
      case '--depths': a.depths = list(value()); break;
      case '--wllama-depths': wllamaDefault = list(value()); wllamaFor = {}; break;
      case '--wllama-depths-for': for (const part of value().split(';')) { const [name, d] = part.split('='); wllamaFor[shapeNamed(name!).name] = list(d ?? ''); } break;
      case '--threads': a.threads = list(value()); if (!e2eThreadsGiven) a.e2eThreads = a.threads; break;
      case '--wllama-caches': a.wllamaCaches = caches('--wllama-caches', value()); break;
      case '--steps': a.steps = Number(value()); break;
      case '--wllama-steps': a.wllamaSteps = Number(value()); break;
      case '--no-wllama': a.wllama = false; break;
      case '--e2e-depths': a.e2eDepths = list(value()); break;
      case '--e2e-steps': a.e2eSteps = Number(value()); break;
      case '--e2e-threads': a.e2eThreads = list(value()); e2eThreadsGiven = true; break;
      case '--e2e-caches': a.e2eCaches = caches('--e2e-caches', value()); break;
      default: throw new Error(`unknown argument ${argv[i]} (${USAGE})`);
    }
  }
  for (const s of a.shapes) a.wllamaDepths[s.name] = wllamaFor[s.name] ?? wllamaDefault;
  for (const d of [...a.depths, ...Object.values(a.wllamaDepths).flat()]) if (!Number.isInteger(d) || d <= BASE_DEPTH) throw new Error(`depths must be integers > ${BASE_DEPTH}, got ${d}`);
  for (const t of [...a.threads, ...a.e2eThreads]) if (!Number.isInteger(t) || t < 1) throw new Error(`--threads expects positive integers, got ${t}`);
  for (const s of [a.steps, a.wllamaSteps, a.e2eSteps]) if (!Number.isInteger(s) || s < 2) throw new Error(`steps must be integers ≥ 2, got ${s}`);
  a.e2eDepths.sort((x, y) => x - y);
  a.e2eDepths.forEach((d, i) => {
    if (!Number.isInteger(d) || d < 2 || (i > 0 && d <= a.e2eDepths[i - 1]! + a.e2eSteps)) throw new Error(`--e2e-depths must be integers ≥ 2, each more than --e2e-steps (${a.e2eSteps}) above the one before, got ${a.e2eDepths.join(',')}`);
  });
  return a;
}

function runNode(script: string, request: object, scratch: string): Promise<any> {
  const path = join(scratch, 'request.json');
  writeFileSync(path, JSON.stringify(request));
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true' };
    delete env.NODE_OPTIONS;
    const child = spawn(process.execPath, [join(PEERS, script), path], { cwd: PEERS, env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`${script} exited with ${code}`))));
  });
}

export interface DecodeRow { engine: string; cache: string; threads: number; shape: string; depth: number; ms: number; nsPerTokenPerKvHead: number }
export interface WllamaRun { shape: string; cache: string; threads: number; multithread: boolean; cpuPerWall: number; prefillTokensPerSecond: number; wallSeconds: number; depths: number[] }

/** What ran, once per part. */
interface RunMeta {
  command: string; startedAt: string; minutes: number; loadBefore: number[]; node: string; cpu: string; cores: number;
  versions: Record<string, string>; wllama: string; browser: string; kiviVariant: string;
}
interface DecodePart { run: RunMeta; args: { shapes: string[]; depths: number[]; wllamaDepths: Record<string, number[]>; wllamaCaches: string[]; threads: number[]; steps: number; wllamaSteps: number; wllama: boolean }; rows: DecodeRow[]; wllamaRuns: WllamaRun[] }
interface E2ePart { run: RunMeta; args: { depths: number[]; steps: number; threads: number[]; caches: string[] }; shape: typeof E2E_SHAPE; kiviCache: typeof E2E_KIVI_CACHE; context: number; rows: E2eRow[] }
interface Results { date: string; decode?: DecodePart; e2e?: E2ePart }

async function main(): Promise<void> {
  const args = parse(process.argv.slice(2));
  if (!existsSync(join(PEERS, 'node_modules', 'node-llama-cpp'))) throw new Error(`the peers are not installed: cd ${PEERS} && npm ci --omit=optional --no-audit --no-fund`);
  const scratch = mkdtempSync(join(os.tmpdir(), 'kivi-bench-llamacpp-'));
  const date = new Date().toISOString().slice(0, 10);
  const run = (): RunMeta => ({
    command: `npm run bench:llamacpp -- ${process.argv.slice(2).join(' ')}`.trim(), startedAt: new Date().toISOString(), minutes: 0, loadBefore: os.loadavg(),
    node: process.version, cpu: os.cpus()[0]?.model ?? 'cpu', cores: os.availableParallelism(), versions: {}, wllama: '', browser: '', kiviVariant: '',
  });
  const results: Results = { date };
  // the other part of today's results, if it ran apart
  const previousPath = join(RESULTS, `llamacpp-${date}.json`);
  if (existsSync(previousPath)) {
    const previous = JSON.parse(readFileSync(previousPath, 'utf8')) as Results;
    for (const part of PARTS) if (!args.parts.includes(part) && previous[part]?.run) (results as any)[part] = previous[part];
  }
  let page: any = null;
  let wllamaVersion = '';
  try {
    const models: Record<string, string> = {};
    const wllamaDepthsAll = Object.values(args.wllamaDepths).flat();
    if (args.parts.includes('decode')) {
      const context = Math.max(...args.depths, ...wllamaDepthsAll) + 256;
      for (const shape of args.shapes) {
        const path = join(scratch, `${shape.name}.gguf`);
        writeFileSync(path, randomGguf({
          dim: shape.queryHeads * shape.headDim, heads: shape.queryHeads, kvHeads: shape.kvHeads, layers: LAYERS,
          context, hiddenDim: 256, vocabSize: 512, type: 'q8_0', name: `random-${shape.name}`,
        }));
        models[`${shape.name}.gguf`] = path;
      }
    }
    const e2eContext = Math.max(...args.e2eDepths) + args.e2eSteps + 64;
    if (args.parts.includes('e2e')) {
      const path = join(scratch, 'e2e.gguf');
      writeFileSync(path, randomGguf({ ...E2E_SHAPE, context: e2eContext, name: 'random-e2e' }));
      models['e2e.gguf'] = path;
    }
    if ((args.parts.includes('decode') && args.wllama) || args.parts.includes('e2e')) {
      const { openWllama, wllamaVersion: version } = await import(pathToFileURL(join(PEERS, 'wllama.mjs')).href);
      wllamaVersion = version();
      page = await openWllama(models, { timeoutSeconds: 6 * 3600 });
    }

    if (args.parts.includes('decode')) {
      const started = elapsedSeconds();
      const part: DecodePart = {
        run: { ...run(), wllama: args.wllama ? wllamaVersion : '', browser: args.wllama ? page.version : '' },
        args: { shapes: args.shapes.map((s) => s.name), depths: args.depths, wllamaDepths: args.wllamaDepths, wllamaCaches: args.wllamaCaches, threads: args.threads, steps: args.steps, wllamaSteps: args.wllamaSteps, wllama: args.wllama },
        rows: [], wllamaRuns: [],
      };
      await decodePart(args, part, models, page, scratch);
      part.run.minutes = (elapsedSeconds() - started) / 60;
      results.decode = part;
    }
    if (args.parts.includes('e2e')) {
      const started = elapsedSeconds();
      const part: E2ePart = {
        run: { ...run(), wllama: wllamaVersion, browser: page.version },
        args: { depths: args.e2eDepths, steps: args.e2eSteps, threads: args.e2eThreads, caches: args.e2eCaches },
        shape: E2E_SHAPE, kiviCache: E2E_KIVI_CACHE, context: e2eContext, rows: [],
      };
      const r = await runE2e(page, { model: '/models/e2e.gguf', shape: E2E_SHAPE, context: e2eContext, depths: args.e2eDepths, steps: args.e2eSteps, threads: args.e2eThreads, caches: args.e2eCaches, onProgress: progress });
      part.rows = r.rows;
      part.run.kiviVariant = r.variant;
      part.run.minutes = (elapsedSeconds() - started) / 60;
      results.e2e = part;
    }
  } finally {
    await page?.close();
    rmSync(scratch, { recursive: true, force: true });
  }

  const report = markdown(results);
  process.stdout.write(report);
  mkdirSync(RESULTS, { recursive: true });
  const json = JSON.stringify(results, null, 1);
  writeFileSync(join(RESULTS, 'llamacpp-latest.json'), json);
  writeFileSync(join(RESULTS, `llamacpp-${date}.json`), json);
  writeFileSync(join(RESULTS, `llamacpp-${date}.md`), report);
  progress(`bench:llamacpp: done in ${formatDuration(elapsedSeconds())}`);
}

async function decodePart(args: Args, part: DecodePart, models: Record<string, string>, page: any, scratch: string): Promise<void> {
  // llama.cpp native
  for (const shape of args.shapes) {
    const r = await runNode('decode.mjs', { model: models[`${shape.name}.gguf`], caches: ['F16', 'F16-noFA', 'Q8_0', 'Q4_0'], depths: args.depths, threads: args.threads, steps: args.steps, baseDepth: BASE_DEPTH }, scratch);
    part.run.versions = r.versions;
    for (const row of r.rows as { cache: string; threads: number; depth: number; medianMs: number }[]) {
      if (row.depth === BASE_DEPTH) continue;
      const base = (r.rows as typeof row[]).find((b) => b.cache === row.cache && b.threads === row.threads && b.depth === BASE_DEPTH)!;
      part.rows.push({ engine: 'llama.cpp', cache: row.cache.toLowerCase().replace('-nofa', ' (no FA)'), threads: row.threads, shape: shape.name, depth: row.depth, ms: row.medianMs,
        nsPerTokenPerKvHead: ((row.medianMs - base.medianMs) * 1e6) / ((row.depth - BASE_DEPTH) * shape.kvHeads * LAYERS) });
    }
    progress(`llama.cpp native ${shape.name}: done`);
  }

  // wllama in Chromium
  if (args.wllama) {
    for (const shape of args.shapes) {
      const wDepths = args.wllamaDepths[shape.name]!;
      for (const cache of args.wllamaCaches) {
        for (const threads of args.threads) {
          const depths = [BASE_DEPTH, ...wDepths];
          const r = await page.run({ kind: 'decode', model: `/models/${shape.name}.gguf`, nCtx: Math.max(...depths) + args.wllamaSteps + 16, threads, cacheK: cache, cacheV: cache, flashAttention: true, depths, steps: args.wllamaSteps, word: WORD });
          const cpuPerWall = checkWllamaThreads(r, threads);
          const ms = (d: number) => msPerStep(r.rows.find((x: { depth: number }) => x.depth === d).timings);
          for (const depth of wDepths) {
            part.rows.push({ engine: 'wllama', cache, threads: r.threads, shape: shape.name, depth, ms: ms(depth),
              nsPerTokenPerKvHead: ((ms(depth) - ms(BASE_DEPTH)) * 1e6) / ((depth - BASE_DEPTH) * shape.kvHeads * LAYERS) });
          }
          const promptMs = r.rows.reduce((s: number, x: { timings: { prompt_ms: number } }) => s + x.timings.prompt_ms, 0);
          const promptN = r.rows.reduce((s: number, x: { timings: { prompt_n: number } }) => s + x.timings.prompt_n, 0);
          part.wllamaRuns.push({ shape: shape.name, cache, threads: r.threads, multithread: r.multithread, cpuPerWall, prefillTokensPerSecond: (promptN * 1000) / promptMs, wallSeconds: r.wallSeconds, depths });
          progress(`wllama ${shape.name} ${cache} ${r.threads} thread(s): ${wDepths.map((d) => `${d}: ${ms(d).toFixed(2)} ms`).join(', ')} (base ${ms(BASE_DEPTH).toFixed(2)} ms); prefill ${((promptN * 1000) / promptMs).toFixed(0)} tokens/s; CPU/wall ${cpuPerWall.toFixed(2)}; ${r.wallSeconds.toFixed(0)} s`);
          if (threads > 1 && cpuPerWall < 1.3) progress(`warning: wllama at ${threads} threads used ${cpuPerWall.toFixed(2)} CPU seconds per second`);
        }
      }
    }
  }

  // kivi-wasm: one attend of one query token over N tokens, at each thread count
  for (const threads of args.threads) {
    const kivi = await Kivi.load({ threads });
    try {
      if (kivi.threads !== threads) throw new Error(`Kivi.load({ threads: ${threads} }) runs ${kivi.threads} thread(s): ${kivi.threadsReason}`);
      part.run.kiviVariant = kivi.variant;
      for (const shape of args.shapes) {
        const depths = shapeDepths(part, shape.name);
        const data = generate(shape, Math.max(...depths));
        const width = shape.kvHeads * shape.headDim;
        for (const [label, bits] of [['KIVI-2', 2], ['f32 kernel', 32]] as const) {
          for (const depth of depths) {
            const cache = kivi.createCache({ layers: 1, queryHeads: shape.queryHeads, kvHeads: shape.kvHeads, headDim: shape.headDim, bits, groupSize: 32, residual: 128, maxTokens: depth });
            try {
              for (let from = 0; from < depth - 1; from += 512) {
                const to = Math.min(depth - 1, from + 512);
                cache.append(0, data.keys.subarray(from * width, to * width), data.values.subarray(from * width, to * width));
              }
              cache.append(0, data.keys.subarray((depth - 1) * width, depth * width), data.values.subarray((depth - 1) * width, depth * width));
              const out = new Float32Array(shape.queryHeads * shape.headDim);
              const t = timeSync(`${shape.name} ${label} ${depth}`, () => cache.attend(0, data.query, out), { maxTime: 1, minSamples: 5 });
              part.rows.push({ engine: 'kivi-wasm', cache: label, threads, shape: shape.name, depth, ms: t.medianMs, nsPerTokenPerKvHead: (t.medianMs * 1e6) / (depth * shape.kvHeads) });
            } finally {
              cache.dispose();
            }
          }
        }
        progress(`kivi-wasm ${shape.name} ${threads} thread(s): done`);
      }
    } finally {
      kivi.close();
    }
  }
}

/** The depths a shape's rows are at: native's and wllama's. */
function shapeDepths(part: DecodePart, shape: string): number[] {
  return [...new Set([...part.args.depths, ...(part.args.wllama ? part.args.wllamaDepths[shape] ?? [] : [])])].sort((a, b) => a - b);
}

const kFormat = (depth: number) => (depth >= 1024 && depth % 1024 === 0 ? `${depth / 1024}K` : String(depth));
const f = (x: number | undefined) => (x === undefined ? '–' : Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(1));
const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined ? `${(a / b).toFixed(1)}×` : '–');

function runLines(r: RunMeta, what: string): string[] {
  const v = r.versions;
  return [
    `Run: \`${r.command}\`, ${r.startedAt.slice(0, 16).replace('T', ' ')} UTC, ${r.minutes.toFixed(0)} min (load average before it ${r.loadBefore.map((x) => x.toFixed(2)).join(', ')}).`,
    `Node ${r.node}, ${r.cpu} (${r.cores} threads).${v.nodeLlamaCpp ? ` llama.cpp native: node-llama-cpp ${v.nodeLlamaCpp} (${v.binary}), llama.cpp ${v.llamaCpp}, commit ${v.llamaCppCommit} (${v.cpu}).` : ''}`,
    `${r.wllama ? `wllama ${r.wllama} (its bundled llama.cpp; the package names no commit) in headless ${r.browser}.` : 'wllama not run.'} kivi-wasm: ${r.kiviVariant || '–'} build, ${what}.`,
    '',
  ];
}

function markdown(results: Results): string {
  const out: string[] = [`## kivi-wasm beside llama.cpp (${results.date})`, ''];
  const d = results.decode;
  if (d) {
    const shapes = d.args.shapes.map((n) => SHAPES.find((s) => s.name === n)!);
    const find = (engine: string, cache: string, threads: number, shape: string, depth: number) =>
      d.rows.find((r) => r.engine === engine && r.cache === cache && r.threads === threads && r.shape === shape && r.depth === depth)?.nsPerTokenPerKvHead;
    const wDeepest = (shape: string) => Math.max(...(d.args.wllamaDepths[shape] ?? [0]));
    out.push('### Decode attention', '', ...runLines(d.run, 'Kivi.load({ threads }) per thread count'));
    out.push(
      `Nanoseconds per token and kv head. llama.cpp and wllama: (t(N) − t(${BASE_DEPTH})) / ((N − ${BASE_DEPTH}) · kv heads) of a whole decode`,
      `step of a one-layer random-weight model of the shape (FFN 256, vocabulary 512); llama.cpp native: median of ${d.args.steps} steps, its`,
      `cache filled from a synthesized sequence state; wllama: the mean of ${d.args.wllamaSteps - 1} steps after a warm-up, its cache filled by prefill`,
      `(wllama has no state loading), so its depths stop at ${shapes.map((s) => `${kFormat(wDeepest(s.name))} (${s.model})`).join(', ')}. kivi-wasm: one attend`,
      `over N tokens / (N · kv heads), median (benchmark.js).`,
      '',
    );
    const caches: [string, string][] = [['llama.cpp', 'f16'], ['llama.cpp', 'f16 (no FA)'], ['llama.cpp', 'q8_0'], ['llama.cpp', 'q4_0'], ['wllama', 'f16'], ['wllama', 'q8_0'], ['wllama', 'q4_0']];
    for (const threads of d.args.threads) {
      out.push(`#### ${threads} thread${threads > 1 ? 's' : ''} (every engine)`, '');
      out.push(`| shape | N | ${caches.map(([e, c]) => `${e} ${c}`).join(' | ')} | KIVI-2 | f32 kernel | llama.cpp q4_0 / KIVI-2 | wllama q4_0 / KIVI-2 |`);
      out.push(`|---|---:|${caches.map(() => '---:').join('|')}|---:|---:|---:|---:|`);
      for (const shape of shapes) {
        for (const depth of shapeDepths(d, shape.name)) {
          const k2 = find('kivi-wasm', 'KIVI-2', threads, shape.name, depth);
          out.push(`| ${shape.model} (${shape.queryHeads}/${shape.kvHeads}/${shape.headDim}) | ${kFormat(depth)} | ${caches.map(([e, c]) => f(find(e, c, threads, shape.name, depth))).join(' | ')} | ${f(k2)} | ${f(find('kivi-wasm', 'f32 kernel', threads, shape.name, depth))} | ${ratio(find('llama.cpp', 'q4_0', threads, shape.name, depth), k2)} | ${ratio(find('wllama', 'q4_0', threads, shape.name, depth), k2)} |`);
        }
      }
      out.push('');
    }
    if (d.wllamaRuns.length) {
      out.push('wllama runs: prefill throughput, and the browser\'s CPU seconds per wall second over the run (above 1 only if more than one core worked):', '');
      out.push('| shape | cache | threads | multithread | prefill tokens/s | CPU/wall | wall s |', '|---|---|---:|---|---:|---:|---:|');
      for (const w of d.wllamaRuns) out.push(`| ${w.shape} | ${w.cache} | ${w.threads} | ${w.multithread} | ${w.prefillTokensPerSecond.toFixed(0)} | ${w.cpuPerWall.toFixed(2)} | ${w.wallSeconds.toFixed(0)} |`);
      out.push('');
    }
    const deepest = Math.max(...d.args.depths);
    out.push('#### Targets (one thread)', '', '| target | shape | measured | met |', '|---|---|---:|---|');
    for (const shape of shapes) {
      const k2 = find('kivi-wasm', 'KIVI-2', 1, shape.name, deepest);
      const q4 = find('llama.cpp', 'q4_0', 1, shape.name, deepest);
      if (k2 && q4) out.push(`| KIVI-2 ≥ 5× faster than llama.cpp q4_0 at ${kFormat(deepest)} | ${shape.model} | ${(q4 / k2).toFixed(1)}× | ${q4 / k2 >= 5 ? 'yes' : 'no'} |`);
    }
    for (const shape of shapes) {
      const at = wDeepest(shape.name);
      const wk2 = find('kivi-wasm', 'KIVI-2', 1, shape.name, at);
      const wq4 = find('wllama', 'q4_0', 1, shape.name, at);
      if (wk2 && wq4) out.push(`| KIVI-2 ≥ 10× faster than wllama q4_0 at ${kFormat(at)} (wllama's deepest here) | ${shape.model} | ${(wq4 / wk2).toFixed(1)}× | ${wq4 / wk2 >= 10 ? 'yes' : 'no'} |`);
    }
    out.push('');
  }
  const e = results.e2e;
  if (e) {
    const s = e.shape;
    out.push('### End to end in the browser', '', ...runLines(e.run, 'Kivi.load({ threads }) in a Worker of the page'));
    out.push(
      `One random-weight GGUF (\`convert --random\`: dim ${s.dim}, ${s.layers} layers, ${s.heads} heads, ${s.kvHeads} kv heads, head dim ${s.dim / s.heads}, FFN ${s.hiddenDim}, vocabulary ${s.vocabSize}, ${s.type.toUpperCase()} matrices,`,
      `context ${e.context}) in headless ${e.run.browser} on one cross-origin-isolated page: kivi-wasm's runner (LlamaRunner on the GGUF in a Worker,`,
      `KIVI-2 G = ${e.kiviCache.groupSize}, R = ${e.kiviCache.residual}) and wllama ${e.run.wllama} (flash attention, ${e.args.caches.join(' and ')} caches, one slot). Each fills its cache to N tokens`,
      `(BOS and "▁${WORD}" repeated, each depth continuing from the last; ours one token at a time, as its runner has no batched prefill;`,
      `wllama by its prefill), then generates ${e.args.steps} tokens greedily: tokens/s over the ${e.args.steps - 1} decode steps after the first sampled token`,
      `(as llama.cpp's server code times its generation). Cache MiB held at N tokens: ours \`stats().bytes\` (codes, halves and the f32 window),`,
      `llama.cpp's N · layers · kv dim · 2 · bytes per number (f16 2, q4_0 18/32) and, in parentheses, what its load log says it allocated`,
      `for its whole context.`,
      '',
    );
    const engines = [...new Set(e.rows.map((r) => `${r.engine} ${r.cache}`))];
    const peers = engines.filter((x) => !x.startsWith('kivi'));
    for (const threads of e.args.threads) {
      const at = (engine: string, depth: number) => e.rows.find((r) => `${r.engine} ${r.cache}` === engine && r.threads === threads && r.depth === depth);
      out.push(`#### ${threads} thread${threads > 1 ? 's' : ''}`, '');
      out.push(`| N | ${engines.map((x) => `${x} tokens/s`).join(' | ')} | ${peers.map((x) => `KIVI-2 / ${x}`).join(' | ')} | ${engines.map((x) => `${x} MiB`).join(' | ')} |`);
      out.push(`|---:|${engines.map(() => '---:').join('|')}|${peers.map(() => '---:').join('|')}|${engines.map(() => '---:').join('|')}|`);
      for (const depth of e.args.depths) {
        const ours = at('kivi-wasm KIVI-2', depth);
        const mib = (r: E2eRow | undefined) => (r === undefined ? '–' : `${(r.cacheBytes / 2 ** 20).toFixed(2)}${r.allocatedBytes !== r.cacheBytes ? ` (${(r.allocatedBytes / 2 ** 20).toFixed(1)})` : ''}`);
        out.push(`| ${kFormat(depth)} | ${engines.map((x) => f(at(x, depth)?.tokensPerSecond)).join(' | ')} | ${peers.map((x) => ratio(ours?.tokensPerSecond, at(x, depth)?.tokensPerSecond)).join(' | ')} | ${engines.map((x) => mib(at(x, depth))).join(' | ')} |`);
      }
      out.push('');
      out.push(`Filling, seconds from the previous depth: ${engines.map((x) => `${x} ${e.args.depths.map((dd) => at(x, dd)?.fillSeconds.toFixed(1) ?? '–').join(' / ')}`).join('; ')}.`);
      out.push(`The browser's CPU seconds per wall second over each engine's job: ${engines.map((x) => `${x} ${at(x, e.args.depths[0]!)?.cpuPerWall.toFixed(2) ?? '–'}`).join('; ')}.`, '');
    }
  }
  return out.join('\n');
}

main().catch((error) => {
  process.stderr.write(`bench:llamacpp: ${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});

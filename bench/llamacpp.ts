// npm run bench:llamacpp — decode attention beside llama.cpp, llama-bench style: one decode step of a
// random-weight GGUF model of each bench layer shape (bench/options.ts SHAPES; one layer, FFN 256,
// vocabulary 512, so that attention is most of what grows with depth), timed at context depth N and
// at a small depth N0; (t(N) − t(N0)) / ((N − N0) · kv heads) is attention's cost per token and kv head.
//
//   llama.cpp native  node-llama-cpp (bench/peers/llamacpp/decode.mjs): f16 (flash attention and the
//                     matrix-multiply path), q8_0, q4_0 caches; the cache filled from a synthesized state
//   wllama            llama.cpp in WebAssembly in headless Chromium (bench/peers/llamacpp/wllama.mjs):
//                     f16, q8_0, q4_0 caches, flash attention; the cache filled by prefill, which is slow
//                     in wasm, so its depths are smaller (--wllama-depths)
//   kivi-wasm         KIVI-2 (G = 32, R = 128) and the f32 kernel through a KiviCache, one attend of one
//                     query token over N tokens (as npm run bench), divided by N · kv heads
// at one thread and at every thread (--threads). Markdown on stdout and in bench/results/llamacpp-<date>.md,
// JSON beside it and in bench/results/llamacpp-latest.json (the main bench report includes it).
//
// Needs the peers installed: cd bench/peers/llamacpp && npm ci --omit=optional (and /usr/bin/chromium).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Kivi } from '../src/index';
import { randomGguf } from '../src/gguf/convert';
import { generate } from './data';
import { timeSync } from './measure';
import { SHAPES, type Shape } from './options';

const here = dirname(fileURLToPath(import.meta.url));
const PEERS = join(here, 'peers', 'llamacpp');
const LAYERS = 1;
const BASE_DEPTH = 256;

interface Args { shapes: Shape[]; depths: number[]; wllamaDepths: number[]; wllamaCaches: string[]; threads: number[]; wllama: boolean; steps: number }

function parse(argv: string[]): Args {
  const list = (v: string) => v.split(',').map((x) => Number(x.replace(/k$/i, '')) * (/k$/i.test(x) ? 1024 : 1));
  const a: Args = { shapes: [...SHAPES], depths: [2048, 4096, 8192, 16384, 32768], wllamaDepths: [1024, 2048], wllamaCaches: ['f16', 'q8_0', 'q4_0'], threads: [1, os.availableParallelism()], wllama: true, steps: 9 };
  for (let i = 0; i < argv.length; i++) {
    const value = () => { const v = argv[++i]; if (v === undefined) throw new Error(`${argv[i - 1]} expects a value`); return v; };
    switch (argv[i]) {
      case '--shapes': { const names = value().split(','); a.shapes = SHAPES.filter((s) => names.includes(s.name)); if (a.shapes.length !== names.length) throw new Error(`--shapes expects names from ${SHAPES.map((s) => s.name).join(', ')}, got ${names.join(',')}`); break; }
      case '--depths': a.depths = list(value()); break;
      case '--wllama-depths': a.wllamaDepths = list(value()); break;
      case '--threads': a.threads = list(value()); break;
      case '--wllama-caches': a.wllamaCaches = value().split(','); if (a.wllamaCaches.some((c) => !['f16', 'q8_0', 'q4_0'].includes(c))) throw new Error(`--wllama-caches expects f16, q8_0, q4_0, got ${a.wllamaCaches.join(',')}`); break;
      case '--steps': a.steps = Number(value()); break;
      case '--no-wllama': a.wllama = false; break;
      default: throw new Error(`unknown argument ${argv[i]} (options: --shapes, --depths, --wllama-depths, --wllama-caches, --threads, --steps, --no-wllama)`);
    }
  }
  for (const d of [...a.depths, ...a.wllamaDepths]) if (!Number.isInteger(d) || d <= BASE_DEPTH) throw new Error(`depths must be integers > ${BASE_DEPTH}, got ${d}`);
  for (const t of a.threads) if (!Number.isInteger(t) || t < 1) throw new Error(`--threads expects positive integers, got ${t}`);
  return a;
}

const progress = (m: string) => process.stderr.write(`${m}\n`);

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

interface Row { engine: string; cache: string; threads: number; shape: string; depth: number; ms: number; nsPerTokenPerKvHead: number }

async function main(): Promise<void> {
  const args = parse(process.argv.slice(2));
  if (!existsSync(join(PEERS, 'node_modules', 'node-llama-cpp'))) throw new Error(`the peers are not installed: cd ${PEERS} && npm ci --omit=optional --no-audit --no-fund`);
  const scratch = mkdtempSync(join(os.tmpdir(), 'kivi-bench-llamacpp-'));
  const rows: Row[] = [];
  const date = new Date().toISOString().slice(0, 10);
  let versions: Record<string, string> = {};
  let browser = '';
  let wllamaVersion = '';
  const kivi = await Kivi.load();
  try {
    const models: Record<string, string> = {};
    for (const shape of args.shapes) {
      const path = join(scratch, `${shape.name}.gguf`);
      writeFileSync(path, randomGguf({
        dim: shape.queryHeads * shape.headDim, heads: shape.queryHeads, kvHeads: shape.kvHeads, layers: LAYERS,
        context: Math.max(...args.depths, ...args.wllamaDepths) + 256, hiddenDim: 256, vocabSize: 512, type: 'q8_0', name: `random-${shape.name}`,
      }));
      models[`${shape.name}.gguf`] = path;
    }

    // llama.cpp native
    for (const shape of args.shapes) {
      const r = await runNode('decode.mjs', { model: models[`${shape.name}.gguf`], caches: ['F16', 'F16-noFA', 'Q8_0', 'Q4_0'], depths: args.depths, threads: args.threads, steps: args.steps, baseDepth: BASE_DEPTH }, scratch);
      versions = r.versions;
      for (const row of r.rows as { cache: string; threads: number; depth: number; medianMs: number }[]) {
        if (row.depth === BASE_DEPTH) continue;
        const base = (r.rows as typeof row[]).find((b) => b.cache === row.cache && b.threads === row.threads && b.depth === BASE_DEPTH)!;
        rows.push({ engine: 'llama.cpp', cache: row.cache.toLowerCase().replace('-nofa', ' (no FA)'), threads: row.threads, shape: shape.name, depth: row.depth, ms: row.medianMs,
          nsPerTokenPerKvHead: ((row.medianMs - base.medianMs) * 1e6) / ((row.depth - BASE_DEPTH) * shape.kvHeads * LAYERS) });
      }
    }

    // wllama in Chromium
    if (args.wllama) {
      // a plain .mjs of the peer folder (it resolves puppeteer-core and wllama from there)
      const { openWllama, wllamaVersion: version } = await import(pathToFileURL(join(PEERS, 'wllama.mjs')).href);
      wllamaVersion = version();
      const w = await openWllama(models);
      browser = w.version;
      try {
        for (const shape of args.shapes) {
          for (const cache of args.wllamaCaches) {
            for (const threads of args.threads) {
              const depths = [BASE_DEPTH, ...args.wllamaDepths];
              const r = await w.run({ kind: 'decode', model: `/models/${shape.name}.gguf`, nCtx: Math.max(...depths) + 64, threads, cacheK: cache, cacheV: cache, flashAttention: true, depths, steps: 16, word: 'aa' });
              const ms = (d: number) => r.rows.find((x: { depth: number }) => x.depth === d).timings.predicted_per_token_ms as number;
              for (const depth of args.wllamaDepths) {
                rows.push({ engine: 'wllama', cache, threads: r.threads, shape: shape.name, depth, ms: ms(depth),
                  nsPerTokenPerKvHead: ((ms(depth) - ms(BASE_DEPTH)) * 1e6) / ((depth - BASE_DEPTH) * shape.kvHeads * LAYERS) });
              }
              progress(`wllama ${shape.name} ${cache} ${r.threads} thread(s): ${args.wllamaDepths.map((d) => `${d}: ${ms(d).toFixed(2)} ms`).join(', ')} (base ${ms(BASE_DEPTH).toFixed(2)} ms)`);
            }
          }
        }
      } finally {
        await w.close();
      }
    }

    // kivi-wasm: one attend of one query token over N tokens, one thread
    for (const shape of args.shapes) {
      const maxDepth = Math.max(...args.depths, ...args.wllamaDepths);
      const data = generate(shape, maxDepth);
      const width = shape.kvHeads * shape.headDim;
      for (const [label, bits] of [['KIVI-2', 2], ['f32 kernel', 32]] as const) {
        for (const depth of [...new Set([...args.wllamaDepths, ...args.depths])].sort((a, b) => a - b)) {
          const cache = kivi.createCache({ layers: 1, queryHeads: shape.queryHeads, kvHeads: shape.kvHeads, headDim: shape.headDim, bits, groupSize: 32, residual: 128, maxTokens: depth });
          try {
            for (let from = 0; from < depth - 1; from += 512) {
              const to = Math.min(depth - 1, from + 512);
              cache.append(0, data.keys.subarray(from * width, to * width), data.values.subarray(from * width, to * width));
            }
            cache.append(0, data.keys.subarray((depth - 1) * width, depth * width), data.values.subarray((depth - 1) * width, depth * width));
            const out = new Float32Array(shape.queryHeads * shape.headDim);
            const t = timeSync(`${shape.name} ${label} ${depth}`, () => cache.attend(0, data.query, out), { maxTime: 1, minSamples: 5 });
            rows.push({ engine: 'kivi-wasm', cache: label, threads: 1, shape: shape.name, depth, ms: t.medianMs, nsPerTokenPerKvHead: (t.medianMs * 1e6) / (depth * shape.kvHeads) });
          } finally {
            cache.dispose();
          }
        }
      }
      progress(`kivi-wasm ${shape.name}: done`);
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }

  const report = markdown(rows, args, { versions, browser, wllamaVersion, variant: kivi.variant, date });
  process.stdout.write(report);
  const results = join(here, 'results');
  mkdirSync(results, { recursive: true });
  const json = JSON.stringify({ date, node: process.version, cpu: os.cpus()[0]?.model, versions, wllama: wllamaVersion, browser, kiviVariant: kivi.variant, args: { ...args, shapes: args.shapes.map((s) => s.name) }, rows }, null, 1);
  writeFileSync(join(results, 'llamacpp-latest.json'), json);
  writeFileSync(join(results, `llamacpp-${date}.json`), json);
  writeFileSync(join(results, `llamacpp-${date}.md`), report);
}

function markdown(rows: Row[], args: Args, meta: { versions: Record<string, string>; browser: string; wllamaVersion: string; variant: string; date: string }): string {
  const f = (x: number | undefined) => (x === undefined ? '–' : x >= 100 ? x.toFixed(0) : x.toFixed(1));
  const find = (engine: string, cache: string, threads: number, shape: string, depth: number) =>
    rows.find((r) => r.engine === engine && r.cache === cache && r.threads === threads && r.shape === shape && r.depth === depth)?.nsPerTokenPerKvHead;
  const v = meta.versions;
  const out: string[] = [
    `## Decode attention beside llama.cpp (${meta.date})`,
    '',
    `Node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} (${os.availableParallelism()} threads). llama.cpp native: node-llama-cpp ${v.nodeLlamaCpp} (${v.binary}),`,
    `llama.cpp ${v.llamaCpp}, commit ${v.llamaCppCommit} (${v.cpu}). wllama ${meta.wllamaVersion || 'not run'}${meta.browser ? ` in headless ${meta.browser}` : ''}.`,
    `kivi-wasm: ${meta.variant} build, one thread. Nanoseconds per token and kv head: llama.cpp and wllama (t(N) − t(${BASE_DEPTH})) / ((N − ${BASE_DEPTH}) · kv heads)`,
    `of a whole decode step of a one-layer random-weight model of the shape (FFN 256, vocabulary 512); kivi-wasm one attend over N tokens / (N · kv heads).`,
    '',
  ];
  const caches: [string, string][] = [['llama.cpp', 'f16'], ['llama.cpp', 'f16 (no FA)'], ['llama.cpp', 'q8_0'], ['llama.cpp', 'q4_0'], ['wllama', 'f16'], ['wllama', 'q8_0'], ['wllama', 'q4_0']];
  for (const threads of args.threads) {
    out.push(`### ${threads} thread${threads > 1 ? 's' : ''} (llama.cpp and wllama; kivi-wasm one thread)`, '');
    out.push(`| shape | N | ${caches.map(([e, c]) => `${e} ${c}`).join(' | ')} | KIVI-2 | f32 kernel | llama.cpp q4_0 / KIVI-2 | wllama q4_0 / KIVI-2 |`);
    out.push(`|---|---:|${caches.map(() => '---:').join('|')}|---:|---:|---:|---:|`);
    for (const shape of args.shapes) {
      for (const depth of [...new Set([...args.wllamaDepths, ...args.depths])].sort((a, b) => a - b)) {
        const k2 = find('kivi-wasm', 'KIVI-2', 1, shape.name, depth);
        const q4 = find('llama.cpp', 'q4_0', threads, shape.name, depth);
        const wq4 = find('wllama', 'q4_0', threads, shape.name, depth);
        out.push(`| ${shape.model} (${shape.queryHeads}/${shape.kvHeads}/${shape.headDim}) | ${depth >= 1024 ? `${depth / 1024}K` : depth} | ${caches.map(([e, c]) => f(find(e, c, threads, shape.name, depth))).join(' | ')} | ${f(k2)} | ${f(find('kivi-wasm', 'f32 kernel', 1, shape.name, depth))} | ${q4 && k2 ? `${(q4 / k2).toFixed(1)}×` : '–'} | ${wq4 && k2 ? `${(wq4 / k2).toFixed(1)}×` : '–'} |`);
      }
    }
    out.push('');
  }
  const deepest = Math.max(...args.depths);
  const wDeepest = Math.max(...args.wllamaDepths);
  out.push('### Targets (one thread)', '', '| target | shape | measured | met |', '|---|---|---:|---|');
  for (const shape of args.shapes) {
    const k2 = find('kivi-wasm', 'KIVI-2', 1, shape.name, deepest);
    const q4 = find('llama.cpp', 'q4_0', 1, shape.name, deepest);
    if (k2 && q4) out.push(`| KIVI-2 ≥ 5× faster than llama.cpp q4_0 at ${deepest / 1024}K | ${shape.model} | ${(q4 / k2).toFixed(1)}× | ${q4 / k2 >= 5 ? 'yes' : 'no'} |`);
    const wk2 = find('kivi-wasm', 'KIVI-2', 1, shape.name, wDeepest);
    const wq4 = find('wllama', 'q4_0', 1, shape.name, wDeepest);
    if (wk2 && wq4) out.push(`| KIVI-2 ≥ 10× faster than wllama q4_0 at ${wDeepest / 1024}K | ${shape.model} | ${(wq4 / wk2).toFixed(1)}× | ${wq4 / wk2 >= 10 ? 'yes' : 'no'} |`);
  }
  out.push('');
  return out.join('\n');
}

main().catch((error) => {
  process.stderr.write(`bench:llamacpp: ${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});

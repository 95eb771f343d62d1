// The `eval --matrix --llamacpp DIR` section: kivi-wasm beside llama.cpp on the same GGUF file and the
// same token ids, at the memory each cache really takes.
//
//   1. The llama2.c model is written as a GGUF file (f32 matrices: the exact weights) to a temporary
//      folder; its protocol-B windows are the token ids kivi-wasm scores (protocolSequences).
//   2. llama.cpp scores them (DIR/nll.mjs, node-llama-cpp, in a child process: its own token
//      probabilities, a fresh context per window, one token at a time) with f16, q8_0/q8_0, q8_0/q4_0
//      and q4_0/q4_0 caches.
//   3. kivi-wasm scores them with f32 and KIVI-8/4/2, chunked and sliding key windows, R = 128 and 32.
//   4. Bits per number all-in: llama.cpp's blocks (q8_0: 32 int8 + an f16 scale = 8.5 bits; q4_0:
//      32 nibbles + an f16 scale = 4.5); ours from stats() of a cache holding a 512-token window
//      (codes, half scales and zeros, and the f32 window, which at this length is a large share).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { CacheOptions, Kivi } from '../index';
import { convertToGguf } from '../gguf/convert';
import { evaluate, LlamaRunner, protocolSequences, type LlamaModel, type Tokenizer } from '../llama2c/index';
import { Rng } from '../reference';
import { describeCache } from './options';
import { ProgressBar } from './progress';

/** llama.cpp's cache types as node-llama-cpp names them, and their bits per number (ggml's blocks). */
const LLAMA_CACHES = [
  { key: 'F16', value: 'F16', label: 'f16', bits: 16 },
  { key: 'Q8_0', value: 'Q8_0', label: 'q8_0', bits: 8.5 },
  { key: 'Q8_0', value: 'Q4_0', label: 'q8_0 K / q4_0 V', bits: (8.5 + 4.5) / 2 },
  { key: 'Q4_0', value: 'Q4_0', label: 'q4_0', bits: 4.5 },
] as const;

/** Our rows: f32, then KIVI-8/4/2 with chunked and sliding key windows at R = 128 and 32 (G = 32). */
const KIVI_CONFIGS: Partial<CacheOptions>[] = [
  { bits: 32 },
  ...([8, 4, 2] as const).flatMap((bits) =>
    ([128, 32] as const).flatMap((residual) =>
      (['chunked', 'sliding'] as const).map((keyWindow) => ({ bits, groupSize: 32, residual, keyWindow })))),
  // Where the frontier is at q4_0's 4.5 bits per number all-in (at 512 tokens; R must be a multiple of
  // G, so R = 16 means G = 16): no f32 window (R = 0: 3.94 bits at G = 32), that with attention sinks
  // (each f32 sink token costs about 0.03 bits here), and G = 16 (4.47); then just above 4.5: G = 64
  // at R = 0 (4.62: up to 63 keys wait in f32 for their group), G = 16 with a 16-token window (4.90).
  { bits: 2, groupSize: 32, residual: 0 },
  { bits: 2, groupSize: 32, residual: 0, sinkTokens: 4 },
  { bits: 2, groupSize: 32, residual: 0, sinkTokens: 16 },
  { bits: 2, groupSize: 16, residual: 0 },
  { bits: 2, groupSize: 64, residual: 0 },
  { bits: 2, groupSize: 16, residual: 16, keyWindow: 'sliding' },
];

/** Tokens in the cache when its all-in bits per number are counted: a full protocol-B window. */
const BYTES_AT_TOKENS = 512;

interface LlamaCppResult {
  versions: Record<string, string>;
  caches: { key: string; value: string; tokens: number; meanNll: number }[];
}

export interface PeerRow {
  engine: 'llama.cpp' | 'kivi-wasm';
  cache: string;
  bits: number;
  tokens: number;
  meanNll: number;
  delta: number;
}

export interface LlamaCppComparison {
  rows: PeerRow[];
  versions: Record<string, string>;
  /** llama.cpp f16 minus kivi-wasm f32, mean NLL (the engines' agreement) */
  agreement: number;
  markdown: string;
  summary: Record<string, unknown>;
}

/** Runs `node DIR/nll.mjs request.json` and parses its JSON. */
function runNll(dir: string, request: object, scratch: string): Promise<LlamaCppResult> {
  const script = join(dir, 'nll.mjs');
  if (!existsSync(script) || !existsSync(join(dir, 'node_modules', 'node-llama-cpp'))) {
    throw new Error(`eval --matrix --llamacpp: expected ${script} with node-llama-cpp installed beside it (cd ${dir} && npm ci --omit=optional), got none`);
  }
  const requestPath = join(scratch, 'request.json');
  writeFileSync(requestPath, JSON.stringify(request));
  return new Promise((done, fail) => {
    const env: NodeJS.ProcessEnv = { ...process.env, NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true' };
    delete env.NODE_OPTIONS;
    const child = spawn(process.execPath, [script, requestPath], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => { err += d; process.stderr.write(d); });
    child.on('error', fail);
    child.on('close', (code) => {
      if (code !== 0) return fail(new Error(`llama.cpp (${script}) exited with ${code}: ${err.trim().slice(-2000)}`));
      try {
        done(JSON.parse(out) as LlamaCppResult);
      } catch (error) {
        fail(new Error(`llama.cpp (${script}) printed no JSON result: ${(error as Error).message}`));
      }
    });
  });
}

/** All-in bits per number of a cache of this model's shape holding `tokens` tokens, fed one at a time. */
function allInBits(kivi: Kivi, model: LlamaModel, options: Partial<CacheOptions>, tokens: number): number {
  const { layers, kvHeads, headDim, heads } = model.config;
  const cache = kivi.createCache({ layers, kvHeads, headDim, queryHeads: heads, ...options });
  try {
    const rng = new Rng(7);
    const row = new Float32Array(kvHeads * headDim);
    for (let t = 0; t < tokens; t++) {
      for (let l = 0; l < layers; l++) {
        for (let i = 0; i < row.length; i++) row[i] = rng.next() * 2 - 1;
        cache.append(l, row, row);
      }
    }
    return cache.stats().bitsPerElement;
  } finally {
    cache.dispose();
  }
}

const signed = (x: number, digits: number) => (x >= 0 ? '+' : '') + x.toFixed(digits);

export async function llamaCppComparison(
  peerDir: string, kivi: Kivi, name: string, model: LlamaModel, tokenizer: Tokenizer, text: string,
): Promise<LlamaCppComparison> {
  const dir = resolve(peerDir);
  const scratch = mkdtempSync(join(tmpdir(), 'kivi-matrix-llamacpp-'));
  try {
    const gguf = join(scratch, `${name}.f32.gguf`);
    writeFileSync(gguf, convertToGguf(model, tokenizer, { type: 'f32', name }));
    const sequences = protocolSequences(tokenizer, text, 'B', model.config.seqLen).map((s) => s.tokens);
    const peer = await runNll(dir, { model: gguf, sequences, caches: LLAMA_CACHES.map(({ key, value }) => ({ key, value })) }, scratch);

    const rows: PeerRow[] = [];
    const llamaBase = peer.caches[0]!.meanNll;
    LLAMA_CACHES.forEach((c, i) => {
      const r = peer.caches[i]!;
      if (r.key !== c.key || r.value !== c.value) throw new Error(`llama.cpp answered for ${r.key}/${r.value}, asked ${c.key}/${c.value}`);
      rows.push({ engine: 'llama.cpp', cache: c.label, bits: c.bits, tokens: r.tokens, meanNll: r.meanNll, delta: r.meanNll - llamaBase });
    });
    let oursBase = NaN;
    for (const config of KIVI_CONFIGS) {
      const label = describeCache(config);
      const runner = new LlamaRunner(model, kivi, config);
      const bar = new ProgressBar(`${name} ${label} (beside llama.cpp)`);
      try {
        const r = evaluate(runner, tokenizer, text, 'B', { onProgress: (done: number, total: number) => bar.update(done, total) });
        if (config.bits === 32) oursBase = r.meanNll;
        rows.push({ engine: 'kivi-wasm', cache: label, bits: allInBits(kivi, model, config, BYTES_AT_TOKENS), tokens: r.tokens, meanNll: r.meanNll, delta: r.meanNll - oursBase });
      } finally {
        bar.stop();
        runner.dispose();
      }
    }
    const tokens = new Set(rows.map((r) => r.tokens));
    if (tokens.size !== 1) throw new Error(`the engines scored different token counts: ${[...tokens].join(', ')}`);

    const agreement = llamaBase - oursBase;
    const q4 = rows.find((r) => r.engine === 'llama.cpp' && r.cache === 'q4_0')!;
    const kivi2 = rows.filter((r) => r.engine === 'kivi-wasm' && r.cache.startsWith('KIVI-2'));
    const fitting = kivi2.filter((r) => r.bits <= q4.bits + 1e-9).sort((a, b) => a.delta - b.delta);
    const best2 = [...kivi2].sort((a, b) => a.delta - b.delta)[0]!;
    const verdict = fitting.length
      ? `best KIVI-2 at ≤ ${q4.bits} bits: ${fitting[0]!.cache}, Δ ${signed(fitting[0]!.delta, 4)} against q4_0's ${signed(q4.delta, 4)}: ${fitting[0]!.delta <= q4.delta / 2 ? 'met' : 'not met'}`
      : `not met: no KIVI-2 row takes ≤ ${q4.bits} bits per number all-in at ${BYTES_AT_TOKENS} tokens (the fewest: ${[...kivi2].sort((a, b) => a.bits - b.bits)[0]!.cache} at ${[...kivi2].sort((a, b) => a.bits - b.bits)[0]!.bits.toFixed(2)}); the best KIVI-2, ${best2.cache}, has Δ ${signed(best2.delta, 4)} at ${best2.bits.toFixed(2)} bits against q4_0's ${signed(q4.delta, 4)} at ${q4.bits}`;
    const v = peer.versions;
    const markdown = [
      `### ${name} beside llama.cpp (the same GGUF file and token ids)`,
      '',
      `Protocol B, ${rows[0]!.tokens} tokens; the model written as GGUF with f32 matrices (\`convertToGguf\`, the exact`,
      `weights). llama.cpp: node-llama-cpp ${v.nodeLlamaCpp} (${v.binary}), llama.cpp ${v.llamaCpp}, commit ${v.llamaCppCommit};`,
      `mean NLL from its own token probabilities, a fresh context per window fed one token at a time, flash attention`,
      `on. Bits per number all-in: llama.cpp's blocks (f16 16, q8_0 8.5, q4_0 4.5); kivi-wasm's from \`stats()\` of a`,
      `cache holding ${BYTES_AT_TOKENS} tokens (codes, half scales and zeros, and the f32 window). Δ is against each engine's own`,
      `f16 / f32 cache.`,
      '',
      '| engine | cache | bits/number all-in | mean NLL | Δ vs own baseline (nats/token) |',
      '|---|---|---:|---:|---:|',
      ...rows.map((r) => `| ${r.engine} | ${r.cache} | ${r.bits === 32 || r.bits === 16 ? String(r.bits) : r.bits.toFixed(2)} | ${r.meanNll.toFixed(5)} | ${r.engine === 'llama.cpp' && r.cache === 'f16' || r.cache === 'f32' ? '–' : signed(r.delta, 4)} |`),
      '',
      `Agreement of the engines: llama.cpp f16 − kivi-wasm f32 = ${signed(agreement, 6)} nats/token (f16 rounding of the`,
      `cached keys and values, and llama.cpp's f32 arithmetic against our float64 log-softmax).`,
      '',
      `Target (KIVI-2's Δ at most half of q4_0's, at equal or fewer bits per number): ${verdict}.`,
      '',
    ].join('\n');
    return {
      rows, versions: v, agreement, markdown,
      summary: { model: name, llamaCpp: v, agreement, rows: rows.map(({ engine, cache, bits, meanNll, delta }) => ({ engine, cache, bits, meanNll, delta })) },
    };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

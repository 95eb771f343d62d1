// `kivi-wasm eval --matrix`: the evaluation of docs/EVAL.md on the real models, written as markdown.
//   1. protocol B for each model under f32, KIVI-2/4/8 and the paper's ablations;
//   2. the analogue of KIVI's Table 2 on the real keys, values and queries of one 512-token window;
//   3. variants that might beat plain KIVI-2 at the same bits per number (sliding key window,
//      sinks, group size, residual length).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Kivi, type CacheOptions, type KiviCache } from '../index';
import { bytesPerToken, streamLayout } from '../layout';
import { resolveOptions } from '../options';
import { evaluate, LlamaRunner, parseCheckpoint, Tokenizer, windowsOf, type LlamaModel } from '../llama2c/index';
import { f16BitsToF32, quantizeGroup } from '../reference';
import { llamaCppComparison } from './matrix-llamacpp';
import { describeCache, readBytes } from './options';
import { ProgressBar } from './progress';

interface ModelSpec {
  name: string;
  checkpoint: string;
  tokenizer: string;
}

const MODELS: ModelSpec[] = [
  { name: 'stories260K', checkpoint: 'stories260K.bin', tokenizer: 'tok512.bin' },
  { name: 'stories3M', checkpoint: 'stories3M.f32.bin', tokenizer: 'tok4096.bin' },
  { name: 'aidreams260K', checkpoint: 'aidreams260K.bin', tokenizer: 'aidreams_tok512.bin' },
];
const TEXT = 'tinystories_val.txt';

type Config = Partial<CacheOptions> & { label?: string };
const kivi2 = (more: Config = {}): Config => ({ bits: 2, groupSize: 32, residual: 128, ...more });

/** The comparison the issue and the paper ask for. */
const PAPER_CONFIGS: Config[] = [
  { bits: 32, label: 'f32' },
  kivi2({ label: 'KIVI-2 (G=32, R=128)' }),
  kivi2({ residual: 32, label: 'KIVI-2 (R=32)' }),
  kivi2({ residual: 0, label: 'KIVI-2 (R=0)' }),
  { bits: 4, groupSize: 32, residual: 128, label: 'KIVI-4' },
  { bits: 8, groupSize: 32, residual: 128, label: 'KIVI-8' },
  kivi2({ residual: 0, keyGrouping: 'token', label: '2-bit, R=0, keys per token' }),
  kivi2({ residual: 0, valueGrouping: 'channel', label: '2-bit, R=0, values per channel' }),
  kivi2({ residual: 0, keyGrouping: 'token', valueGrouping: 'channel', label: '2-bit, R=0, keys per token + values per channel' }),
];

/** Candidates against plain KIVI-2 at the same bits per number (and a few that change them). */
const SEARCH_CONFIGS: Config[] = [
  kivi2({ keyWindow: 'sliding', label: 'KIVI-2 R=128, sliding keys' }),
  kivi2({ sinkTokens: 4, label: 'KIVI-2 R=128, 4 sinks' }),
  kivi2({ keyWindow: 'sliding', sinkTokens: 4, label: 'KIVI-2 R=128, sliding keys + 4 sinks' }),
  kivi2({ residual: 32, keyWindow: 'sliding', label: 'KIVI-2 R=32, sliding keys' }),
  kivi2({ residual: 32, sinkTokens: 4, label: 'KIVI-2 R=32, 4 sinks' }),
  kivi2({ residual: 64, label: 'KIVI-2 R=64' }),
  kivi2({ residual: 256, label: 'KIVI-2 R=256' }),
  kivi2({ groupSize: 16, residual: 128, label: 'KIVI-2 G=16 (more halves)' }),
  kivi2({ groupSize: 64, residual: 128, label: 'KIVI-2 G=64 (fewer halves)' }),
];

interface Row {
  label: string;
  config: Config;
  tokens: number;
  meanNll: number;
  bitsPerNumber: number;
}

/** Bits per number of the quantized part (codes and half scale and zero), from the stored layout. */
function quantizedBits(config: Config, headDim: number): number {
  const { label: _label, ...cacheOptions } = config;
  const o = resolveOptions({ layers: 1, kvHeads: 1, headDim, ...cacheOptions });
  if (o.bits === 32) return 32;
  const keyBytes = bytesPerToken(streamLayout(o, o.keyGrouping));
  const valueBytes = bytesPerToken(streamLayout(o, o.valueGrouping));
  return ((keyBytes + valueBytes) * 8) / (2 * headDim);
}

function fixed(x: number, digits: number): string {
  return (x >= 0 ? '+' : '') + x.toFixed(digits);
}

// ── Table 2: 2-bit quantization error on real keys, values and queries ─────────────────────────

interface Window {
  tokens: number;
  keys: Float64Array[]; // per layer [T][Hkv][D]
  values: Float64Array[];
  queries: Float64Array[]; // per layer [T][Hq][D]
}

/** Runs one window through an f32 cache and records what the model appends and attends with: the
 *  cache's append and attend of this runner are wrapped to copy their inputs at the token's row. */
function captureWindow(model: LlamaModel, kivi: Kivi, tokens: number[]): Window {
  const { layers, kvHeads, heads, headDim } = model.config;
  const T = tokens.length;
  const keys = Array.from({ length: layers }, () => new Float64Array(T * kvHeads * headDim));
  const values = Array.from({ length: layers }, () => new Float64Array(T * kvHeads * headDim));
  const queries = Array.from({ length: layers }, () => new Float64Array(T * heads * headDim));
  const runner = new LlamaRunner(model, kivi, { bits: 32 });
  try {
    const cache: KiviCache = runner.cache;
    const append = cache.append.bind(cache);
    const attend = cache.attend.bind(cache);
    let t = 0; // the token being fed: one key/value row and one query row per layer
    cache.append = (layer: number, k: Float32Array, v: Float32Array) => {
      keys[layer]!.set(k, t * kvHeads * headDim);
      values[layer]!.set(v, t * kvHeads * headDim);
      append(layer, k, v);
    };
    cache.attend = (layer: number, q: Float32Array, out?: Float32Array, options?: { scale?: number }) => {
      queries[layer]!.set(q, t * heads * headDim);
      return attend(layer, q, out, options);
    };
    for (; t < T; t++) runner.advance(tokens[t]!); // advance: no logits needed
  } finally {
    runner.dispose();
  }
  return { tokens: T, keys, values, queries };
}

/** 2-bit fake quantization of one head's [T][D] matrix (in a [T][H][D] array) with SPEC's quantizer. */
function fakeQuantize(data: Float64Array, T: number, H: number, D: number, h: number, grouping: 'token' | 'channel', group: number): Float64Array {
  const out = new Float64Array(T * D);
  const at = (t: number, c: number) => (t * H + h) * D + c;
  if (grouping === 'token') {
    const n = Math.min(group, D);
    for (let t = 0; t < T; t++) {
      for (let c0 = 0; c0 < D; c0 += n) {
        const xs = Array.from({ length: n }, (_, i) => data[at(t, c0 + i)]!);
        const q = quantizeGroup(xs, 2);
        const s = f16BitsToF32(q.scaleBits), z = f16BitsToF32(q.zeroBits);
        for (let i = 0; i < n; i++) out[t * D + c0 + i] = q.codes[i]! * s + z;
      }
    }
  } else {
    for (let c = 0; c < D; c++) {
      for (let t0 = 0; t0 < T; t0 += group) {
        const n = Math.min(group, T - t0);
        const xs = Array.from({ length: n }, (_, i) => data[at(t0 + i, c)]!);
        const q = quantizeGroup(xs, 2);
        const s = f16BitsToF32(q.scaleBits), z = f16BitsToF32(q.zeroBits);
        for (let i = 0; i < n; i++) out[(t0 + i) * D + c] = q.codes[i]! * s + z;
      }
    }
  }
  return out;
}

interface ErrorSums { num: number; den: number }
const ratio = (e: ErrorSums) => Math.sqrt(e.num / e.den);

/** Relative errors summed over layers and heads (Frobenius norms): keys and values under each grouping,
 *  causal attention scores under each key grouping, attention outputs under each value grouping. */
function table2(window: Window, config: { heads: number; kvHeads: number; headDim: number }) {
  const { heads, kvHeads, headDim: D } = config;
  const T = window.tokens;
  const G = 32;
  const sums = () => ({ num: 0, den: 0 });
  const result = {
    keyToken: sums(), keyChannel: sums(), valueToken: sums(), valueChannel: sums(),
    scoreToken: sums(), scoreChannel: sums(), outputToken: sums(), outputChannel: sums(),
  };
  const add = (e: ErrorSums, exact: ArrayLike<number>, approx: ArrayLike<number>) => {
    for (let i = 0; i < exact.length; i++) {
      e.num += (approx[i]! - exact[i]!) ** 2;
      e.den += exact[i]! ** 2;
    }
  };
  for (let l = 0; l < window.keys.length; l++) {
    for (let h = 0; h < kvHeads; h++) {
      const exactK = new Float64Array(T * D);
      for (let t = 0; t < T; t++) for (let c = 0; c < D; c++) exactK[t * D + c] = window.keys[l]![(t * kvHeads + h) * D + c]!;
      const exactV = new Float64Array(T * D);
      for (let t = 0; t < T; t++) for (let c = 0; c < D; c++) exactV[t * D + c] = window.values[l]![(t * kvHeads + h) * D + c]!;
      const kToken = fakeQuantize(window.keys[l]!, T, kvHeads, D, h, 'token', G);
      const kChannel = fakeQuantize(window.keys[l]!, T, kvHeads, D, h, 'channel', G);
      const vToken = fakeQuantize(window.values[l]!, T, kvHeads, D, h, 'token', G);
      const vChannel = fakeQuantize(window.values[l]!, T, kvHeads, D, h, 'channel', G);
      add(result.keyToken, exactK, kToken);
      add(result.keyChannel, exactK, kChannel);
      add(result.valueToken, exactV, vToken);
      add(result.valueChannel, exactV, vChannel);
      for (let qh = h * (heads / kvHeads); qh < (h + 1) * (heads / kvHeads); qh++) {
        for (let i = 0; i < T; i++) {
          const q = window.queries[l]!.subarray((i * heads + qh) * D, (i * heads + qh + 1) * D);
          const exactScores = softmaxRow(q, exactK, i + 1, D);
          add(result.scoreToken, exactScores, softmaxRow(q, kToken, i + 1, D));
          add(result.scoreChannel, exactScores, softmaxRow(q, kChannel, i + 1, D));
          const exactOut = weighted(exactScores, exactV, D);
          add(result.outputToken, exactOut, weighted(exactScores, vToken, D));
          add(result.outputChannel, exactOut, weighted(exactScores, vChannel, D));
        }
      }
    }
  }
  return Object.fromEntries(Object.entries(result).map(([k, v]) => [k, ratio(v)])) as Record<keyof typeof result, number>;
}

function softmaxRow(q: ArrayLike<number>, keys: Float64Array, n: number, D: number): Float64Array {
  const p = new Float64Array(n);
  let max = -Infinity;
  for (let t = 0; t < n; t++) {
    let dot = 0;
    for (let c = 0; c < D; c++) dot += q[c]! * keys[t * D + c]!;
    p[t] = dot / Math.sqrt(D);
    max = Math.max(max, p[t]!);
  }
  let sum = 0;
  for (let t = 0; t < n; t++) sum += (p[t] = Math.exp(p[t]! - max));
  for (let t = 0; t < n; t++) p[t]! /= sum;
  return p;
}

function weighted(p: Float64Array, values: Float64Array, D: number): Float64Array {
  const out = new Float64Array(D);
  for (let t = 0; t < p.length; t++) for (let c = 0; c < D; c++) out[c]! += p[t]! * values[t * D + c]!;
  return out;
}

/** The generated tables go between these markers; text around them (the discussion) is kept when
 *  the matrix is run again. */
const BEGIN = '<!-- eval --matrix: begin -->';
const END = '<!-- eval --matrix: end -->';

function mergeReport(path: string, tables: string): string {
  const region = `${BEGIN}\n${tables}\n${END}`;
  const existing = existsSync(path) ? readFileSync(path, 'utf8') : '';
  const from = existing.indexOf(BEGIN);
  const to = existing.indexOf(END);
  if (from >= 0 && to > from) return existing.slice(0, from) + region + existing.slice(to + END.length);
  return `# Evaluation on real models\n\n${region}\n`;
}

// ── the run ────────────────────────────────────────────────────────────────────────────────────

export interface MatrixOptions {
  modelsDir: string;
  out: string;
  variant: 'auto' | 'relaxed-simd' | 'simd' | 'scalar';
  /** Model names to run (default all); used by the tests to keep the run short. */
  models?: string[];
  configs?: 'all' | 'paper';
  /** Folder of the llama.cpp peer (bench/peers/llamacpp, installed): adds kivi-wasm beside llama.cpp
   *  on each model whose head dim llama.cpp's quantized caches take (a multiple of 32). */
  llamacpp?: string;
}

export async function runMatrix(options: MatrixOptions): Promise<string> {
  const kivi = await Kivi.load({ variant: options.variant });
  const textPath = join(options.modelsDir, TEXT);
  if (!existsSync(textPath)) throw new Error(`eval --matrix: no ${TEXT} in ${options.modelsDir} (--models DIR)`);
  const text = readFileSync(textPath, 'utf8');
  const started = performance.now();
  const sections: string[] = [];
  const summary: string[] = [];
  for (const spec of MODELS.filter((m) => !options.models || options.models.includes(m.name))) {
    const model = parseCheckpoint(readBytes(join(options.modelsDir, spec.checkpoint), 'model'));
    const tokenizer = Tokenizer.fromBytes(readBytes(join(options.modelsDir, spec.tokenizer), 'tokenizer'), model.config.vocabSize);
    const { headDim } = model.config;
    const run = (config: Config): Row => {
      const { label, ...cacheOptions } = config;
      const runner = new LlamaRunner(model, kivi, cacheOptions);
      const bar = new ProgressBar(`${spec.name} ${label ?? describeCache(cacheOptions)}`);
      try {
        const r = evaluate(runner, tokenizer, text, 'B', { onProgress: (done: number, total: number) => bar.update(done, total) });
        return { label: label ?? describeCache(cacheOptions), config, tokens: r.tokens, meanNll: r.meanNll, bitsPerNumber: quantizedBits(config, headDim) };
      } finally {
        bar.stop();
        runner.dispose();
      }
    };
    const paper = PAPER_CONFIGS.map(run);
    const search = options.configs === 'paper' ? [] : SEARCH_CONFIGS.map(run);
    const f32 = paper[0]!;
    const plain = paper[1]!;
    const table = (rows: Row[], against: Row) => [
      '| cache | bits/number (quantized part) | mean NLL | Δ vs f32 (nats/token) | perplexity ratio | Δ vs KIVI-2 |',
      '|---|---:|---:|---:|---:|---:|',
      ...rows.map((r) => `| ${r.label} | ${r.bitsPerNumber === 32 ? '32' : r.bitsPerNumber.toFixed(2)} | ${r.meanNll.toFixed(5)} | ${fixed(r.meanNll - f32.meanNll, 4)} | ${Math.exp(r.meanNll - f32.meanNll).toFixed(4)} | ${r === f32 ? '–' : fixed(r.meanNll - against.meanNll, 4)} |`),
    ].join('\n');
    const c = model.config;
    const window = captureWindow(model, kivi, windowsOf(tokenizer, text, c.seqLen, 1)[0]!.slice(0, Math.min(512, c.seqLen)));
    const t2 = table2(window, { heads: c.heads, kvHeads: c.kvHeads, headDim });
    sections.push([
      `### ${spec.name} (dim ${c.dim}, ${c.layers} layers, ${c.heads} heads, ${c.kvHeads} kv heads, head dim ${headDim}, seq ${c.seqLen})`,
      '',
      `Protocol B: ${f32.tokens} tokens. Mean NLL in nats per token; perplexity ratio = exp(Δ). Bits per number count the`,
      `codes and the half scale and zero of the quantized part (keys b + 32/G, values b + 32/min(G, ${headDim}), averaged).`,
      '',
      table(paper, plain),
      '',
      ...(search.length ? ['Looking for better than plain KIVI-2:', '', table(search, plain), ''] : []),
      `Table 2 analogue: 2-bit fake quantization (groups of 32) of the real keys, values and queries of the first`,
      `protocol-B window (${window.tokens} tokens), relative Frobenius error over all layers and heads; attention`,
      `scores are the causal softmax rows of every query, attention outputs use the exact scores.`,
      '',
      '| | per token | per channel |',
      '|---|---:|---:|',
      `| key cache | ${t2.keyToken.toFixed(4)} | ${t2.keyChannel.toFixed(4)} |`,
      `| attention scores (keys quantized) | ${t2.scoreToken.toFixed(4)} | ${t2.scoreChannel.toFixed(4)} |`,
      `| value cache | ${t2.valueToken.toFixed(4)} | ${t2.valueChannel.toFixed(4)} |`,
      `| attention output (values quantized) | ${t2.outputToken.toFixed(4)} | ${t2.outputChannel.toFixed(4)} |`,
      '',
    ].join('\n'));
    if (options.llamacpp !== undefined && headDim % 32 === 0) {
      const peer = await llamaCppComparison(options.llamacpp, kivi, spec.name, model, tokenizer, text);
      sections.push(peer.markdown);
      summary.push(JSON.stringify(peer.summary));
    }
    const best = [...paper.slice(1, 4), ...search].filter((r) => r.config.bits === 2 && r.bitsPerNumber <= plain.bitsPerNumber + 1e-9)
      .sort((a, b) => a.meanNll - b.meanNll)[0]!;
    summary.push(JSON.stringify({
      model: spec.name, f32: f32.meanNll, kivi2: plain.meanNll,
      keysPerTokenMinusChannel: paper[6]!.meanNll - paper[3]!.meanNll,
      valuesPerChannelMinusToken: paper[7]!.meanNll - paper[3]!.meanNll,
      bestAtSameBits: { label: best.label, meanNll: best.meanNll },
      table2: t2,
    }));
  }
  const minutes = (performance.now() - started) / 60000;
  const report = [
    `<!-- generated by \`kivi-wasm eval --matrix\` (src/cli/matrix.ts) on ${new Date().toISOString().slice(0, 10)}, wasm build ${kivi.variant}, ${minutes.toFixed(1)} min -->`,
    ...sections,
    '<details><summary>machine-readable summary</summary>',
    '',
    '```json',
    `[${summary.join(',\n')}]`,
    '```',
    '',
    '</details>',
    '',
  ].join('\n');
  mkdirSync(dirname(options.out), { recursive: true });
  writeFileSync(options.out, mergeReport(options.out, report));
  process.stderr.write(`eval --matrix: wrote ${options.out} (${minutes.toFixed(1)} min)\n`);
  return report;
}

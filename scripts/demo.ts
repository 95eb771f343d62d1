// npm run demo — what the KIVI cache buys on one transformer layer, offline, in this runtime.
//
// For each context length: prefill an f32 cache, a KIVI-2 and a KIVI-4 cache (groupSize 32,
// residual 128) in appends of 512 tokens, then time decode steps (append one token, attend one
// query token over all query heads). Prints, per context, the bytes each cache stores, the relative
// L2 error of its attention output against float64 attention over the exact keys and values, and
// the median milliseconds per decode step. A second table checks the kernels and splits the error
// into its key and value parts.
//
// Usage: npx tsx scripts/demo.ts [--shape llama3-8b|llama2-7b] [--contexts 1024,4096,...]
//                                [--variant auto|relaxed-simd|simd|scalar] [--steps N]
//                                [--data demo|independent|reference] [--help]

import os from 'node:os';
import { Kivi, VARIANTS, type KiviCache } from '../src/index';
import { Rng, attentionF64, dequantizeListing, relativeL2, syntheticKv } from '../src/reference';

// ---------------------------------------------------------------------------------------------
// Settings

/** One attention layer of each model (post-RoPE shapes; GQA for Llama 3). */
const SHAPES = {
  'llama3-8b': { model: 'Llama-3-8B', queryHeads: 32, kvHeads: 8, headDim: 128 },
  'llama2-7b': { model: 'Llama-2-7B', queryHeads: 32, kvHeads: 32, headDim: 128 },
} as const;
type ShapeName = keyof typeof SHAPES;
const DEFAULT_SHAPE: ShapeName = 'llama3-8b';
const DEFAULT_CONTEXTS = [1024, 4096, 16384, 32768];
const GROUP_SIZE = 32; // KIVI's G
const RESIDUAL = 128; // KIVI's R
const PREFILL_CHUNK = 512; // tokens per append during prefill (chunked prefill)
/** Decode steps timed per cache (the median is reported); fewer for long contexts. */
const stepsFor = (context: number): number => (context <= 16384 ? 16 : 8);
const MAX_CONTEXT = 1 << 20;
const MAX_STEPS = 1024;
const SEED = 20240205; // arbitrary (KIVI appeared on arXiv in February 2024)
const TARGET_LOGIT_STD = 1.5; // std of q·k/sqrt(D) over tokens, for one query head

const CONFIGS = [
  { label: 'f32', bits: 32 },
  { label: 'KIVI-2', bits: 2 },
  { label: 'KIVI-4', bits: 4 },
] as const;
type Config = (typeof CONFIGS)[number];

// ---------------------------------------------------------------------------------------------
// Command line

const USAGE = `Usage: npx tsx scripts/demo.ts [options]      (or: npm run demo -- [options])

Measures the KIVI key/value cache on synthetic Llama-shaped data, one layer: bytes stored, attention
error against exact float64 attention, and milliseconds per decode step (append 1 token + attend 1
query token), for an f32 cache, KIVI-2 and KIVI-4 (groupSize ${GROUP_SIZE}, residual ${RESIDUAL}).

Options:
  --shape NAME        ${Object.entries(SHAPES).map(([k, s]) => `${k} (${s.queryHeads} query heads, ${s.kvHeads} kv heads, head dim ${s.headDim})`).join('\n                      or ')}
                      default ${DEFAULT_SHAPE}
  --contexts LIST     comma-separated context lengths in tokens; a k suffix means ×1024
                      default ${DEFAULT_CONTEXTS.join(',')}
  --variant NAME      wasm build: auto (default: the best this runtime runs), ${VARIANTS.map((v) => v.name).join(', ')}
  --steps N           decode steps timed per cache (default 16, 8 above 16K tokens)
  --data NAME         demo (default): per-channel means with outlier key channels, a low-rank part that
                        drifts over tokens, small noise; logits of std ${TARGET_LOGIT_STD}
                      independent: every number independent (the hard case for 2 bits)
                      reference: syntheticKv() of src/reference.ts (10-20x outliers, peaked softmax)
  --help, -h          show this help

Output: markdown tables on stdout; progress on stderr. Exit code 2 on a bad command line.`;

interface Args {
  shape: ShapeName;
  contexts: number[];
  variant: 'auto' | (typeof VARIANTS)[number]['name'];
  steps: number | undefined;
  data: DataKind;
}

type DataKind = 'demo' | 'independent' | 'reference';

class UsageError extends Error {}

function parseArgs(argv: string[]): Args | 'help' {
  const args: Args = { shape: DEFAULT_SHAPE, contexts: DEFAULT_CONTEXTS, variant: 'auto', steps: undefined, data: 'demo' };
  const seen = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') return 'help';
    if (!arg.startsWith('--')) throw new UsageError(`expected an option starting with --, got ${JSON.stringify(arg)}`);
    const eq = arg.indexOf('=');
    const name = eq < 0 ? arg : arg.slice(0, eq);
    if (!['--shape', '--contexts', '--variant', '--steps', '--data'].includes(name)) {
      throw new UsageError(`unknown option ${JSON.stringify(name)}; expected --shape, --contexts, --variant, --steps, --data or --help`);
    }
    if (seen.has(name)) throw new UsageError(`${name} was given twice`);
    seen.add(name);
    let value: string;
    if (eq >= 0) {
      value = arg.slice(eq + 1);
    } else {
      const next = argv[++i];
      if (next === undefined || next.startsWith('--')) throw new UsageError(`${name} expects a value, got ${next === undefined ? 'nothing' : JSON.stringify(next)}`);
      value = next;
    }
    switch (name) {
      case '--shape':
        if (!(value in SHAPES)) throw new UsageError(`--shape expects one of ${Object.keys(SHAPES).join(', ')}, got ${JSON.stringify(value)}`);
        args.shape = value as ShapeName;
        break;
      case '--contexts':
        args.contexts = value.split(',').map((item) => parseCount('--contexts', item.trim(), MAX_CONTEXT, true));
        break;
      case '--variant': {
        const choices = ['auto', ...VARIANTS.map((v) => v.name)];
        if (!choices.includes(value)) throw new UsageError(`--variant expects one of ${choices.join(', ')}, got ${JSON.stringify(value)}`);
        args.variant = value as Args['variant'];
        break;
      }
      case '--steps':
        args.steps = parseCount('--steps', value, MAX_STEPS, false);
        break;
      case '--data':
        if (value !== 'demo' && value !== 'independent' && value !== 'reference') {
          throw new UsageError(`--data expects demo, independent or reference, got ${JSON.stringify(value)}`);
        }
        args.data = value;
        break;
    }
  }
  return args;
}

function parseCount(option: string, text: string, max: number, allowK: boolean): number {
  const match = /^(\d+)([kK]?)$/.exec(text);
  const n = match && (allowK || match[2] === '') ? Number(match[1]) * (match[2] ? 1024 : 1) : NaN;
  if (!Number.isSafeInteger(n) || n < 1 || n > max) {
    const what = allowK ? 'a whole number of tokens (e.g. 4096 or 4k)' : 'a whole number';
    throw new UsageError(`${option} expects ${what} from 1 to ${max}, got ${JSON.stringify(text)}`);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Data
//
// What the data is. Real post-RoPE keys and values (KIVI Fig. 2) are far from independent numbers:
// each channel has its own mean (a few key channels a large one: the outliers), the rest varies
// over a few directions that drift slowly from token to token, and a small part is noise. That
// structure is what makes 2 bits enough: per-channel key groups absorb the channel means and
// outliers, and per-token value groups keep the shared direction of the values. So by default
// (--data demo) the demo makes, per kv head, token-major [tokens][heads][D]:
//   x_t = mean + loadings · f_t + 0.35 · noise_t
//   mean      N(0, 1) per channel; for keys, 2-4 outlier channels per head with mean ±(4..8)
//   f_t       RANK = 8 factors, each an AR(1) process over tokens (correlation 0.95, unit variance)
//   loadings  N(0, 1/RANK) per channel and factor (outlier key channels: 1.5..3 times larger)
//   queries   N(0,1) times a per-head factor that makes the logit std over tokens 1.5
//             (TARGET_LOGIT_STD), as in trained models, where attention is neither one-hot nor flat.
// `--data independent` makes every number independent N(0,1) (keys with the same outlier channels):
// the hard case for 2 bits, where a group of 32 numbers on 4 levels keeps a rounding error of ~0.4
// of its std and attention over many tokens averages signal and error alike. `--data reference`
// runs on syntheticKv() from src/reference.ts (the test suite's data, with 10-20x outlier spreads).

const RANK = 8;
const FACTOR_CORRELATION = 0.95;
const NOISE = 0.35;

interface Outlier {
  channel: number;
  offset: number;
  spread: number;
}

class Data {
  readonly keys: Float32Array;
  readonly values: Float32Array;
  /** One query token per decode step: [steps][queryHeads][D]. */
  readonly queries: Float32Array;

  constructor(readonly tokens: number, readonly steps: number, readonly shape: (typeof SHAPES)[ShapeName], readonly kind: DataKind, seed: number) {
    const { kvHeads, queryHeads, headDim: D } = shape;
    // One generator per array, so a context's data does not depend on which other contexts run.
    const keyRng = new Rng(seed);
    const valueRng = new Rng(seed + 1);
    const queryRng = new Rng(seed + 2);
    if (kind === 'reference') {
      this.keys = syntheticKv(keyRng, tokens, kvHeads, D, 'keys');
      this.values = syntheticKv(valueRng, tokens, kvHeads, D, 'values');
      this.queries = syntheticKv(queryRng, steps, queryHeads, D, 'queries');
      return;
    }
    const outliers: Outlier[][] = [];
    for (let h = 0; h < kvHeads; h++) {
      const count = 2 + Math.floor(keyRng.next() * 3);
      const channels = new Set<number>();
      while (channels.size < count) channels.add(Math.floor(keyRng.next() * D));
      outliers.push([...channels].map((channel) => ({
        channel,
        offset: (keyRng.next() < 0.5 ? -1 : 1) * (4 + 4 * keyRng.next()),
        spread: 1.5 + 1.5 * keyRng.next(),
      })));
    }
    if (kind === 'independent') {
      this.keys = normals(keyRng, tokens * kvHeads * D, () => 1);
      for (let t = 0; t < tokens; t++) {
        for (let h = 0; h < kvHeads; h++) {
          for (const { channel, offset, spread } of outliers[h]!) {
            const i = (t * kvHeads + h) * D + channel;
            this.keys[i] = offset + spread * this.keys[i]!;
          }
        }
      }
      this.values = normals(valueRng, tokens * kvHeads * D, () => 1);
    } else {
      this.keys = structured(keyRng, tokens, kvHeads, D, outliers);
      this.values = structured(valueRng, tokens, kvHeads, D, outliers.map(() => []));
    }
    // Var over tokens of q·k/sqrt(D) for q of scale a: a² · (sum over channels of their variance over tokens) / D.
    const qScale = Array.from({ length: kvHeads }, (_, h) => TARGET_LOGIT_STD / Math.sqrt(channelVarianceSum(this.keys, tokens, kvHeads, D, h) / D));
    const perKv = queryHeads / kvHeads;
    this.queries = normals(queryRng, steps * queryHeads * D, (i) => qScale[Math.floor((Math.floor(i / D) % queryHeads) / perKv)]!);
  }

  /** Tokens [from, to) of keys or values. */
  slice(array: Float32Array, from: number, to: number): Float32Array {
    const width = this.shape.kvHeads * this.shape.headDim;
    return array.subarray(from * width, to * width);
  }

  query(step: number): Float32Array {
    const width = this.shape.queryHeads * this.shape.headDim;
    return this.queries.subarray(step * width, (step + 1) * width);
  }
}

/** mean + loadings · f_t + NOISE · N(0,1) per kv head, f_t = RANK AR(1) factors (see the comment above). */
function structured(rng: Rng, tokens: number, kvHeads: number, D: number, outliers: Outlier[][]): Float32Array {
  const out = new Float32Array(tokens * kvHeads * D);
  const innovation = Math.sqrt(1 - FACTOR_CORRELATION ** 2);
  for (let h = 0; h < kvHeads; h++) {
    const mean = Float64Array.from({ length: D }, () => rng.normal());
    const loadings = Float64Array.from({ length: D * RANK }, () => rng.normal() / Math.sqrt(RANK));
    for (const { channel, offset, spread } of outliers[h]!) {
      mean[channel] = offset;
      for (let r = 0; r < RANK; r++) loadings[channel * RANK + r]! *= spread;
    }
    const factors = Float64Array.from({ length: RANK }, () => rng.normal());
    for (let t = 0; t < tokens; t++) {
      for (let r = 0; r < RANK; r++) factors[r] = FACTOR_CORRELATION * factors[r]! + innovation * rng.normal();
      const base = (t * kvHeads + h) * D;
      for (let c = 0; c < D; c++) {
        let x = mean[c]! + NOISE * rng.normal();
        for (let r = 0; r < RANK; r++) x += loadings[c * RANK + r]! * factors[r]!;
        out[base + c] = x;
      }
    }
  }
  return out;
}

/** Sum over the channels of kv head h of each channel's variance over tokens. */
function channelVarianceSum(data: Float32Array, tokens: number, kvHeads: number, D: number, h: number): number {
  let total = 0;
  for (let c = 0; c < D; c++) {
    let sum = 0;
    let sumSquares = 0;
    for (let t = 0; t < tokens; t++) {
      const x = data[(t * kvHeads + h) * D + c]!;
      sum += x;
      sumSquares += x * x;
    }
    const mean = sum / tokens;
    total += sumSquares / tokens - mean * mean;
  }
  return total;
}

function normals(rng: Rng, n: number, scale: (index: number) => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = scale(i) * rng.normal();
  return out;
}

// ---------------------------------------------------------------------------------------------
// Measurements

interface CacheResult {
  config: Config;
  bytes: number;
  bitsPerElement: number;
  msPerStep: number;
  /** vs float64 attention over the exact keys and values */
  error: number;
  /** quantized caches: vs float64 attention over this cache's own dequantized keys and values */
  kernelError?: number;
  /** quantized caches: float64 attention with only the keys (or values) dequantized, vs exact */
  keysOnlyError?: number;
  valuesOnlyError?: number;
}

interface ContextResult {
  context: number;
  steps: number;
  logitStd: number;
  effectiveTokens: number;
  caches: CacheResult[];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function progress(message: string): void {
  process.stderr.write(`${message}\n`);
}


/** Std of the logits over tokens and effective tokens 1/Σp² of the softmax, median over query heads. */
function softmaxShape(query: Float32Array, keys: Float32Array, tokens: number, shape: (typeof SHAPES)[ShapeName]): { logitStd: number; effectiveTokens: number } {
  const { queryHeads, kvHeads, headDim: D } = shape;
  const scale = 1 / Math.sqrt(D);
  const logits = new Float64Array(tokens);
  const stds: number[] = [];
  const effective: number[] = [];
  for (let h = 0; h < queryHeads; h++) {
    const kv = Math.floor(h / (queryHeads / kvHeads));
    let max = -Infinity;
    let sum = 0;
    let sumSq = 0;
    for (let t = 0; t < tokens; t++) {
      let dot = 0;
      const k = (t * kvHeads + kv) * D;
      for (let c = 0; c < D; c++) dot += query[h * D + c]! * keys[k + c]!;
      const x = dot * scale;
      logits[t] = x;
      sum += x;
      sumSq += x * x;
      if (x > max) max = x;
    }
    const mean = sum / tokens;
    stds.push(Math.sqrt(Math.max(0, sumSq / tokens - mean * mean)));
    let z = 0;
    let z2 = 0;
    for (let t = 0; t < tokens; t++) {
      const p = Math.exp(logits[t]! - max);
      z += p;
      z2 += p * p;
    }
    effective.push((z * z) / z2);
  }
  return { logitStd: median(stds), effectiveTokens: median(effective) };
}

function runContext(kivi: Kivi, data: Data, context: number, steps: number): ContextResult {
  const shape = data.shape;
  const { queryHeads, kvHeads, headDim: D } = shape;
  const total = context + steps; // tokens cached when the last query attends
  const lastQuery = data.query(steps - 1);
  const exact = attentionF64(lastQuery, data.keys, data.values, total, 1, queryHeads, kvHeads, D);
  const { logitStd, effectiveTokens } = softmaxShape(lastQuery, data.keys, total, shape);
  const caches: CacheResult[] = [];

  for (const config of CONFIGS) {
    const cache: KiviCache = kivi.createCache({
      layers: 1, queryHeads, kvHeads, headDim: D,
      bits: config.bits, groupSize: GROUP_SIZE, residual: RESIDUAL, maxTokens: total,
    });
    try {
      progress(`  prefilling ${context} tokens into ${config.label} (${Math.ceil(context / PREFILL_CHUNK)} appends of up to ${PREFILL_CHUNK})…`);
      for (let from = 0; from < context; from += PREFILL_CHUNK) {
        const to = Math.min(context, from + PREFILL_CHUNK);
        cache.append(0, data.slice(data.keys, from, to), data.slice(data.values, from, to));
      }
      const out = new Float32Array(queryHeads * D);
      const times: number[] = [];
      for (let step = 0; step < steps; step++) {
        const token = context + step;
        const keys = data.slice(data.keys, token, token + 1);
        const values = data.slice(data.values, token, token + 1);
        const query = data.query(step);
        const start = performance.now();
        cache.append(0, keys, values);
        cache.attend(0, query, out);
        times.push(performance.now() - start);
      }
      const stats = cache.stats();
      const result: CacheResult = {
        config, bytes: stats.bytes, bitsPerElement: stats.bitsPerElement,
        msPerStep: median(times), error: relativeL2(out, exact),
      };
      if (config.bits !== 32) {
        const listing = cache.inspect(0);
        const dk = dequantizeListing(listing.keys!, data.keys, total, kvHeads, D);
        const dv = dequantizeListing(listing.values!, data.values, total, kvHeads, D);
        const attend = (k: Float32Array | Float64Array, v: Float32Array | Float64Array) => attentionF64(lastQuery, k, v, total, 1, queryHeads, kvHeads, D);
        result.kernelError = relativeL2(out, attend(dk, dv));
        result.keysOnlyError = relativeL2(attend(dk, data.values), exact);
        result.valuesOnlyError = relativeL2(attend(data.keys, dv), exact);
      }
      caches.push(result);
    } finally {
      cache.dispose();
    }
  }
  return { context, steps, logitStd, effectiveTokens, caches };
}

// ---------------------------------------------------------------------------------------------
// Output

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(bytes < 10 * 2 ** 20 ? 2 : 1)} MiB`;
const err = (x: number | undefined): string => (x === undefined ? '–' : x < 1e-3 ? x.toExponential(1) : x.toFixed(3));
const ms = (x: number): string => x.toFixed(x < 10 ? 2 : 1);
const tokens = (n: number): string => (n % 1024 === 0 ? `${n / 1024}K` : String(n));

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

function mainTable(results: ContextResult[]): string {
  const rows = results.map((r) => {
    const [f32, k2, k4] = r.caches as [CacheResult, CacheResult, CacheResult];
    const size = (c: CacheResult) => `${mib(c.bytes)} (${(f32.bytes / c.bytes).toFixed(1)}×, ${c.bitsPerElement.toFixed(2)} bit)`;
    return [
      `${tokens(r.context)} (${r.context})`, `${mib(f32.bytes)}`, size(k2), size(k4),
      err(k2.error), err(k4.error), ms(f32.msPerStep), ms(k2.msPerStep), ms(k4.msPerStep),
    ];
  });
  return table(
    ['context', 'f32 bytes', 'KIVI-2 bytes (ratio, bits/elem)', 'KIVI-4 bytes (ratio, bits/elem)', 'KIVI-2 attn rel. error', 'KIVI-4 attn rel. error', 'f32 ms/step', 'KIVI-2 ms/step', 'KIVI-4 ms/step'],
    rows,
  );
}

function checkTable(results: ContextResult[]): string {
  const rows = results.map((r) => {
    const [f32, k2, k4] = r.caches as [CacheResult, CacheResult, CacheResult];
    return [
      tokens(r.context), r.logitStd.toFixed(2), r.effectiveTokens.toFixed(0), err(f32.error),
      err(k2.kernelError), err(k2.keysOnlyError), err(k2.valuesOnlyError),
      err(k4.kernelError), err(k4.keysOnlyError), err(k4.valuesOnlyError),
    ];
  });
  return table(
    ['context', 'logit std', 'eff. tokens', 'f32 cache error', 'KIVI-2 kernel', 'KIVI-2 keys only', 'KIVI-2 values only', 'KIVI-4 kernel', 'KIVI-4 keys only', 'KIVI-4 values only'],
    rows,
  );
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const started = performance.now();
  let parsed: Args | 'help';
  try {
    parsed = parseArgs(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`demo: ${error.message}\nRun with --help for usage.\n`);
    return 2;
  }
  if (parsed === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const args = parsed;
  const shape = SHAPES[args.shape];
  const contexts = [...new Set(args.contexts)].sort((a, b) => a - b);
  const stepsOf = (context: number) => args.steps ?? stepsFor(context);

  let kivi: Kivi;
  try {
    kivi = await Kivi.load({ variant: args.variant });
  } catch (error) {
    process.stderr.write(`demo: cannot load the ${args.variant} wasm build: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
  const loaded = performance.now();
  const cpus = os.cpus();
  console.log(`# kivi-wasm demo: one layer of ${shape.model} (${shape.queryHeads} query heads, ${shape.kvHeads} kv heads, head dim ${shape.headDim})`);
  console.log('');
  console.log(`- runtime: node ${process.version} (${process.platform} ${process.arch}, ${cpus.length} × ${cpus[0]?.model.trim() ?? 'unknown CPU'})`);
  console.log(`- wasm build: ${kivi.variant}${args.variant === 'auto' ? ' (auto)' : ''}, loaded in ${(loaded - started).toFixed(0)} ms`);
  console.log(`- KIVI: groupSize ${GROUP_SIZE}, residual ${RESIDUAL}; keys per channel, values per token; scales and zeros as halves`);
  console.log(`- prefill: appends of ${PREFILL_CHUNK} tokens; decode step = append 1 token + attend 1 query token (all ${shape.queryHeads} heads); ` +
    `ms/step = median of ${args.steps ?? `${stepsFor(1)} (${stepsFor(MAX_CONTEXT)} above 16K)`} steps`);
  console.log(`- bytes: stats().bytes after the last step (codes, halves and the f32 residual); ratio against f32`);
  console.log(`- error: relative L2 of the last step's attention output against float64 attention over the exact f32 keys and values`);
  console.log({
    demo: `- data (--data demo): synthetic, seed ${SEED}, per kv head: channel means (2-4 outlier key channels at ±4..8) + ${RANK} factors drifting over tokens (AR(1), 0.95) + ${NOISE} noise; queries scaled to logit std ${TARGET_LOGIT_STD}`,
    independent: `- data (--data independent): synthetic, seed ${SEED}: every number independent N(0,1), keys with 2-4 outlier channels per head (offset ±4..8, spread 1.5..3); queries scaled to logit std ${TARGET_LOGIT_STD}`,
    reference: `- data (--data reference): syntheticKv() of src/reference.ts, seed ${SEED}: keys with 2-4 outlier channels per head scaled 10-20x and offset, values and queries N(0,1)`,
  }[args.data]);
  console.log('');

  const longest = contexts[contexts.length - 1]!;
  const maxTotal = Math.max(...contexts.map((c) => c + stepsOf(c)));
  progress(`generating synthetic keys and values for ${maxTotal} tokens (shorter contexts use a prefix)…`);
  const genStart = performance.now();
  // One sequence for every context, and the same decode queries: the queries are generated for the
  // most steps any context takes, and context c uses the first stepsOf(c) of them.
  const data = new Data(maxTotal, Math.max(...contexts.map(stepsOf)), shape, args.data, SEED);
  const genMs = performance.now() - genStart;

  const results: ContextResult[] = [];
  for (const context of contexts) {
    const steps = stepsOf(context);
    progress(`context ${context} (+${steps} decode steps):`);
    const t0 = performance.now();
    results.push(runContext(kivi, data, context, steps));
    progress(`  done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }

  console.log(mainTable(results));
  console.log('');
  console.log(`Bytes: quantized tokens cost b + 32/G bits per number (KIVI-2: 3, KIVI-4: 5, i.e. ${(32 / (2 + 32 / GROUP_SIZE)).toFixed(1)}× and ` +
    `${(32 / (4 + 32 / GROUP_SIZE)).toFixed(1)}× below f32); the f32 residual (up to ${RESIDUAL} keys and ${RESIDUAL + 1} values) is why short contexts compress less.`);
  console.log('');
  console.log('Sanity checks and where the error comes from (relative L2 of the same last-step output):');
  console.log('- logit std / eff. tokens: the last query\'s softmax, median over query heads (eff. tokens = 1/Σp²)');
  console.log('- f32 cache error: the f32 cache against the exact float64 attention (rounding only)');
  console.log('- kernel: the wasm output against float64 attention over that cache\'s own dequantized keys and values (SPEC: < 2e-3)');
  console.log('- keys only / values only: float64 attention with only the keys (or only the values) dequantized, against exact');
  console.log('');
  console.log(checkTable(results));
  console.log('');
  const totalS = (performance.now() - started) / 1000;
  console.log(`Run time: ${totalS.toFixed(1)} s (data generation ${(genMs / 1000).toFixed(1)} s; longest context ${longest} tokens).`);
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`demo: failed: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`);
    process.exitCode = 1;
  },
);

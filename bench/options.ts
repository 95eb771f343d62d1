// Command line of `npm run bench` (bench/attention.bench.ts).

import { VARIANTS, type VariantName } from '../src/index';

export interface Shape {
  readonly name: string;
  readonly model: string;
  readonly queryHeads: number;
  readonly kvHeads: number;
  readonly headDim: number;
}

/** One attention layer of each model (post-RoPE shapes). */
export const SHAPES: readonly Shape[] = [
  { name: 'llama2-7b', model: 'Llama-2-7B', queryHeads: 32, kvHeads: 32, headDim: 128 },
  { name: 'llama3-8b', model: 'Llama-3-8B', queryHeads: 32, kvHeads: 8, headDim: 128 },
  { name: 'llama3.2-1b', model: 'Llama-3.2-1B', queryHeads: 32, kvHeads: 8, headDim: 64 },
];

/** Shapes the append measurement runs on (when selected by --shapes). */
export const APPEND_SHAPES = ['llama2-7b', 'llama3-8b'];

export const GROUP_SIZE = 32; // KIVI's G
export const RESIDUAL = 128; // KIVI's R

/** What --impls selects from. kivi-* run once per wasm build. */
export const IMPLS = ['kivi-2', 'kivi-4', 'kivi-8', 'kivi-f32', 'plain-js', 'ort-matmul', 'ort-mha', 'ort-gqa'] as const;
export type Impl = (typeof IMPLS)[number];
const IMPL_GROUPS: Record<string, Impl[]> = {
  kivi: ['kivi-2', 'kivi-4', 'kivi-8', 'kivi-f32'],
  'kivi-32': ['kivi-f32'],
  ort: ['ort-matmul', 'ort-mha', 'ort-gqa'],
  peers: ['plain-js', 'ort-matmul', 'ort-mha', 'ort-gqa'],
};

export const PARTS = ['decode', 'appends', 'bytes', 'threads', 'forks'] as const;
export type Part = (typeof PARTS)[number];

export interface BenchArgs {
  shapes: Shape[];
  contexts: number[];
  /** contexts the scalar build is measured at (decode); the others are skipped for it, and reported so */
  scalarContexts: number[] | 'all';
  impls: Impl[];
  builds: VariantName[];
  parts: Part[];
  /** benchmark.js maxTime and minSamples per timed implementation */
  maxTime: number;
  minSamples: number;
  /** contexts at which quantized caches are also checked against float64 attention over their own dequantized cache */
  exactContexts: number[] | 'all';
  /** tokens of the byte measurement */
  bytesContext: number;
  quick: boolean;
  /** JSON output file; undefined = bench/results/latest.json and bench/results/<date>-<node>.json */
  out: string | undefined;
  argv: string[];
}

export const DEFAULT_CONTEXTS = [1024, 4096, 16384, 32768];
export const DEFAULT_SCALAR_CONTEXTS = [1024, 4096];
export const DEFAULT_EXACT_CONTEXTS = [1024, 4096];
const MAX_CONTEXT = 1 << 17;

export const USAGE = `Usage: npm run bench -- [options]
       node --experimental-wasm-relaxed-simd --no-liftoff --import tsx bench/attention.bench.ts [options]

Measures, in one process: (1) one decode step of attention (one query token, every head of one layer)
for KIVI 2/4/8-bit and f32 caches on every wasm build this runtime runs, a plain-JavaScript f32 attention
and onnxruntime-web; (2) append (quantize) throughput; (3) bytes held per token. Markdown on stdout,
progress on stderr, JSON (and, for a full run, the markdown report beside the dated JSON) in bench/results/.

Options (a list is comma-separated; contexts accept a k suffix, e.g. 4k):
  --shapes LIST          ${SHAPES.map((s) => `${s.name} (${s.queryHeads}/${s.kvHeads}/${s.headDim})`).join(', ')}
                         default: all
  --contexts LIST        decode contexts in tokens; default ${DEFAULT_CONTEXTS.join(',')}
  --impls LIST           subset of ${IMPLS.join(', ')}
                         (groups: kivi, ort, peers); default: all
  --builds LIST          subset of ${VARIANTS.map((v) => v.name).join(', ')}; default: all (a build that cannot load is reported)
  --scalar-contexts LIST contexts at which the scalar build's decode step is measured, or 'all';
                         default ${DEFAULT_SCALAR_CONTEXTS.join(',')} (it takes ~0.5 us per token and head)
  --exact-contexts LIST  contexts at which quantized caches are also checked against float64 attention over
                         their own dequantized cache, or 'all'; default ${DEFAULT_EXACT_CONTEXTS.join(',')}
  --parts LIST           subset of ${PARTS.join(', ')}; default: all
  --bytes-context N      tokens for the bytes-per-token measurement; default 32k
  --max-time S           benchmark.js maxTime per timed implementation, seconds; default 1 (0.5 with --quick)
  --min-samples N        benchmark.js minSamples; default 5
  --quick                smoke run: contexts 1k,4k, shape llama3-8b only (unless --shapes/--contexts say otherwise)
  --out FILE.json        write the JSON there instead of bench/results/latest.json and bench/results/<date>-<node>.json
                         (--quick alone writes bench/results/quick.tmp.json, git-ignored, so it never replaces a full run's)
  --help, -h             this help

Exit code: 0, 1 if an implementation failed its check or could not run, 2 on a bad command line.`;

export class UsageError extends Error {}

function parseContext(option: string, text: string): number {
  const m = /^(\d+)([kK]?)$/.exec(text.trim());
  const n = m ? Number(m[1]) * (m[2] ? 1024 : 1) : NaN;
  if (!Number.isSafeInteger(n) || n < 2 || n > MAX_CONTEXT) {
    throw new UsageError(`${option} expects token counts from 2 to ${MAX_CONTEXT} (e.g. 4096 or 4k), got ${JSON.stringify(text)}`);
  }
  return n;
}

function list(value: string): string[] {
  return value.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

function subset<T extends string>(option: string, value: string, choices: readonly T[], groups: Record<string, T[]> = {}): T[] {
  const picked = new Set<T>();
  for (const item of list(value)) {
    if (groups[item]) for (const g of groups[item]) picked.add(g);
    else if ((choices as readonly string[]).includes(item)) picked.add(item as T);
    else throw new UsageError(`${option}: unknown ${JSON.stringify(item)}; expected ${[...choices, ...Object.keys(groups)].join(', ')}`);
  }
  if (picked.size === 0) throw new UsageError(`${option} expects at least one item`);
  return choices.filter((c) => picked.has(c)); // canonical order
}

function positive(option: string, value: string, integer: boolean): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) throw new UsageError(`${option} expects a ${integer ? 'whole ' : ''}number > 0, got ${JSON.stringify(value)}`);
  return n;
}

const VALUE_OPTIONS = ['--shapes', '--contexts', '--impls', '--builds', '--scalar-contexts', '--exact-contexts', '--parts', '--bytes-context', '--max-time', '--min-samples', '--out'];

export function parseArgs(argv: string[]): BenchArgs | 'help' {
  const given = new Map<string, string>();
  let quick = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') return 'help';
    if (arg === '--quick') {
      quick = true;
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq < 0 ? arg : arg.slice(0, eq);
    if (!VALUE_OPTIONS.includes(name)) throw new UsageError(`unknown option ${JSON.stringify(arg)}; see --help`);
    if (given.has(name)) throw new UsageError(`${name} was given twice`);
    let value: string | undefined;
    if (eq >= 0) value = arg.slice(eq + 1);
    else {
      value = argv[++i];
      if (value === undefined || value.startsWith('--')) throw new UsageError(`${name} expects a value`);
    }
    given.set(name, value);
  }
  const shapeNames = subset('--shapes', given.get('--shapes') ?? (quick ? 'llama3-8b' : SHAPES.map((s) => s.name).join(',')), SHAPES.map((s) => s.name));
  const contexts = given.has('--contexts') ? list(given.get('--contexts')!).map((c) => parseContext('--contexts', c)) : quick ? [1024, 4096] : DEFAULT_CONTEXTS;
  const contextList = (option: string, fallback: number[]): number[] | 'all' => {
    const v = given.get(option);
    if (v === undefined) return fallback;
    if (v === 'all') return 'all';
    return list(v).map((c) => parseContext(option, c));
  };
  return {
    shapes: SHAPES.filter((s) => shapeNames.includes(s.name)),
    contexts: [...new Set(contexts)].sort((a, b) => a - b),
    scalarContexts: contextList('--scalar-contexts', DEFAULT_SCALAR_CONTEXTS),
    exactContexts: contextList('--exact-contexts', DEFAULT_EXACT_CONTEXTS),
    impls: subset('--impls', given.get('--impls') ?? IMPLS.join(','), IMPLS, IMPL_GROUPS),
    builds: subset('--builds', given.get('--builds') ?? VARIANTS.map((v) => v.name).join(','), VARIANTS.map((v) => v.name)),
    parts: subset('--parts', given.get('--parts') ?? PARTS.join(','), PARTS),
    bytesContext: given.has('--bytes-context') ? parseContext('--bytes-context', given.get('--bytes-context')!) : 32768,
    maxTime: given.has('--max-time') ? positive('--max-time', given.get('--max-time')!, false) : quick ? 0.5 : 1,
    minSamples: given.has('--min-samples') ? positive('--min-samples', given.get('--min-samples')!, true) : 5,
    quick,
    out: given.get('--out'),
    argv,
  };
}

export function inList(list: number[] | 'all', n: number): boolean {
  return list === 'all' || list.includes(n);
}

// npm run bench:matvec — the weight kernels (assembly/matvec.ts) against the runner's JavaScript
// paths, in one process: y = W·x for Q8_0, Q4_0 and F16 matrices on every wasm build this runtime
// runs, the JS float64 product over f32 weights (what an F32 GGUF or a llama2.c f32 file runs) and
// over llama2.c's Q8_0 groups. Each wasm product is checked bit for bit against the scalar
// reference before it is timed. Markdown on stdout.
//
// Usage: node --experimental-wasm-relaxed-simd --no-liftoff --import tsx bench/matvec.bench.ts [--quick]

import os from 'node:os';
import { Kivi, VARIANTS } from '../src/index';
import { matVecReference } from '../src/gguf/matvec-reference';
import { encodeF16, quantizeQ4_0, quantizeQ8_0 } from '../src/gguf/quants';
import { runtimeOf, WasmWeights } from '../src/gguf/weights';
import { matVec, type GgmlMatrix, type Matrix } from '../src/llama2c/matrix';
import { Rng } from '../src/reference';
import { timeSync } from './measure';

const quick = process.argv.includes('--quick');
const TIMING = quick ? { maxTime: 0.3, minSamples: 5 } : { maxTime: 1.5, minSamples: 10 };

/** [rows, cols, what]: stories3M's wq and w1, and one Llama-2-7B layer's wq, w1 (gate/up) and w2 (down). */
const SHAPES: [number, number, string][] = [
  [192, 192, 'stories3M wq'],
  [512, 192, 'stories3M w1'],
  [4096, 4096, 'Llama-2-7B wq'],
  [11008, 4096, 'Llama-2-7B w1'],
  [4096, 11008, 'Llama-2-7B w2'],
];

function encode(type: GgmlMatrix['type'], values: Float32Array, rows: number, cols: number): GgmlMatrix {
  const rowBytes = type === 'F16' ? 2 * cols : (cols / 32) * (type === 'Q8_0' ? 34 : 18);
  const data = new Uint8Array(rows * rowBytes);
  const f = type === 'F16' ? encodeF16 : type === 'Q8_0' ? quantizeQ8_0 : quantizeQ4_0;
  for (let r = 0; r < rows; r++) f(values, r * cols, cols, data, r * rowBytes);
  return { kind: 'ggml', type, rows, cols, rowBytes, data };
}

/** llama2.c's Q8_0 (group 64, f32 scales) of the same weights. */
function llama2cQ8(values: Float32Array, rows: number, cols: number): Matrix {
  const G = 64;
  const q = new Int8Array(values.length);
  const scales = new Float32Array(values.length / G);
  for (let g = 0; g < scales.length; g++) {
    let amax = 0;
    for (let j = 0; j < G; j++) amax = Math.max(amax, Math.abs(values[g * G + j]!));
    const s = amax / 127;
    scales[g] = s;
    for (let j = 0; j < G; j++) q[g * G + j] = s === 0 ? 0 : Math.round(values[g * G + j]! / s);
  }
  return { kind: 'q8_0', rows, cols, groupSize: G, q, scales };
}

async function main(): Promise<void> {
  const kivis: Kivi[] = [];
  const skipped: string[] = [];
  for (const v of VARIANTS) {
    try {
      kivis.push(await Kivi.load({ variant: v.name }));
    } catch (error) {
      skipped.push(`${v.name} (${(error as Error).message.slice(0, 80)})`);
    }
  }
  const lines: string[] = [];
  const print = (s = '') => {
    lines.push(s);
    process.stdout.write(`${s}\n`);
  };
  print(`# Weight matrix × vector (${new Date().toISOString().slice(0, 10)}, Node ${process.version}, ${os.cpus()[0]?.model ?? 'unknown CPU'})`);
  print();
  print('Medians of benchmark.js samples, one thread. µs per product; in parentheses GB/s of weight bytes read (the encoded bytes for wasm, 4 bytes per weight for JS f32, 1.0625 for llama2.c Q8_0) and the speed-up over the JS f32 path.');
  if (skipped.length) print(`Builds not run here: ${skipped.join('; ')}.`);
  print();
  const columns = ['JS f32 (float64)', 'JS llama2.c Q8_0', ...kivis.flatMap((k) => ['Q8_0', 'Q4_0', 'F16'].map((t) => `${t} ${k.variant}`))];
  print(`| matrix | rows × cols | ${columns.join(' | ')} |`);
  print(`|---|---|${columns.map(() => '---:').join('|')}|`);
  for (const [rows, cols, what] of SHAPES) {
    if (quick && rows * cols > 2 ** 24) continue;
    const rng = new Rng(rows * 31 + cols);
    const values = new Float32Array(rows * cols).map(() => rng.normal() * 0.02);
    const x64 = Float64Array.from({ length: cols }, () => rng.normal());
    const x32 = Float32Array.from(x64);
    const out64 = new Float64Array(rows);
    const cells: string[] = [];
    const f32Matrix: Matrix = { kind: 'f32', rows, cols, data: values };
    const js = timeSync('js f32', () => matVec(f32Matrix, x64, out64), TIMING).medianMs;
    const cell = (ms: number, bytes: number) => `${(ms * 1000).toFixed(ms < 0.1 ? 1 : 0)} (${(bytes / (ms * 1e6)).toFixed(1)} GB/s, ${(js / ms).toFixed(1)}×)`;
    cells.push(cell(js, 4 * rows * cols));
    const q8 = llama2cQ8(values, rows, cols);
    cells.push(cell(timeSync('js q8', () => matVec(q8, x64, out64), TIMING).medianMs, rows * cols * (1 + 4 / 64)));
    const encoded = { Q8_0: encode('Q8_0', values, rows, cols), Q4_0: encode('Q4_0', values, rows, cols), F16: encode('F16', values, rows, cols) };
    for (const kivi of kivis) {
      for (const type of ['Q8_0', 'Q4_0', 'F16'] as const) {
        const m = encoded[type];
        const w = new WasmWeights(runtimeOf(kivi));
        const h = w.upload(m, what);
        w.prepare();
        const got = new Float32Array(rows);
        const want = new Float32Array(rows);
        w.matVecF32(h, x32, got);
        matVecReference(m, x32, want);
        if (!got.every((v, i) => Object.is(v, want[i]))) throw new Error(`${kivi.variant} ${type} ${rows}×${cols}: the kernel disagrees with the reference`);
        const ms = timeSync(`${kivi.variant} ${type}`, () => w.matVec(h, x64, out64), TIMING).medianMs;
        cells.push(cell(ms, m.data.length));
        w.dispose();
      }
    }
    print(`| ${what} | ${rows} × ${cols} | ${cells.join(' | ')} |`);
  }
}

void main();

// Weight matrices of a llama2.c checkpoint or a GGUF file, and the matrix-vector products the
// runner needs.
//
// Matrices are row-major [rows = out][cols = in], y = W·x, as in llama2.c. Three storages:
//
//   f32    data[rows · cols]
//   q8_0   q[rows · cols] int8, scales[rows · cols / G] f32 — one scale per G consecutive weights
//          of a row (G divides cols, so a group never straddles two rows); w = q · scale.
//          8 + 32/G bits per weight (8.5 at G = 64), as llama2.c's runq.c / export.py version 2.
//
//   ggml   F16, Q8_0 or Q4_0 blocks as a GGUF file stores them (GgmlMatrix below).
//
// Products accumulate in float64 (JavaScript numbers) and write float64; the input vector is a
// Float64Array. Four rows at a time, so each x[j] is loaded once per four rows.

import { decodeF16, dequantizeQ4_0, dequantizeQ8_0 } from '../gguf/quants';

export interface F32Matrix {
  readonly kind: 'f32';
  readonly rows: number;
  readonly cols: number;
  readonly data: Float32Array;
}

export interface Q8Matrix {
  readonly kind: 'q8_0';
  readonly rows: number;
  readonly cols: number;
  /** Weights per scale (G); divides cols. */
  readonly groupSize: number;
  readonly q: Int8Array;
  readonly scales: Float32Array;
}

/** Weights in one of ggml's encodings (src/gguf/quants.ts), as a GGUF file stores them: each row
 *  is cols / block blocks (F16: 2 bytes per weight; Q8_0: 34 bytes per 32; Q4_0: 18 per 32). */
export interface GgmlMatrix {
  readonly kind: 'ggml';
  readonly type: 'F16' | 'Q8_0' | 'Q4_0';
  readonly rows: number;
  readonly cols: number;
  /** Bytes of one row. */
  readonly rowBytes: number;
  /** rows · rowBytes bytes (a view into the file). */
  readonly data: Uint8Array;
}

export type Matrix = F32Matrix | Q8Matrix | GgmlMatrix;

/** out[r] = Σ_j W[r, j] · x[j] for r < rows; x.length >= cols, out.length >= rows.
 *  The f32 and q8_0 kernels stay two functions on purpose: one grouped kernel for both reads two
 *  typed-array types in its inner loop, and in a process that uses both formats V8 then runs it
 *  25-35% slower (measured on 768×768, G = 64). */
export function matVec(m: Matrix, x: Float64Array, out: Float64Array): void {
  if (m.kind === 'f32') matVecF32(m.data, m.rows, m.cols, x, out);
  else if (m.kind === 'q8_0') matVecQ8(m.q, m.scales, m.groupSize, m.rows, m.cols, x, out);
  else matVecGgml(m, x, out);
}

/** The weights of row r as f32 (exact: every ggml weight is an f32 number). */
function ggmlRow(m: GgmlMatrix, r: number, out: Float32Array | Float64Array): void {
  const at = r * m.rowBytes;
  if (m.type === 'F16') decodeF16(m.data, at, m.cols, out);
  else if (m.type === 'Q8_0') dequantizeQ8_0(m.data, at, m.cols, out);
  else dequantizeQ4_0(m.data, at, m.cols, out);
}

/** y = W·x in float64 over the exact weights: the slow path, for hosts without the wasm kernels
 *  (LlamaRunner multiplies ggml matrices in wasm, see src/gguf/weights.ts). */
function matVecGgml(m: GgmlMatrix, x: Float64Array, out: Float64Array): void {
  const row = new Float64Array(m.cols);
  for (let r = 0; r < m.rows; r++) {
    ggmlRow(m, r, row);
    let a = 0;
    for (let j = 0; j < m.cols; j++) a += row[j]! * x[j]!;
    out[r] = a;
  }
}

/** Row `r` of W (dequantized for q8_0 and ggml) into out[0 .. cols). */
export function matrixRow(m: Matrix, r: number, out: Float64Array | Float32Array): void {
  const n = m.cols;
  const base = r * n;
  if (m.kind === 'ggml') {
    ggmlRow(m, r, out);
    return;
  }
  if (m.kind === 'f32') {
    for (let j = 0; j < n; j++) out[j] = m.data[base + j]!;
    return;
  }
  const G = m.groupSize;
  for (let g = 0; g < n / G; g++) {
    const s = m.scales[(base + g * G) / G]!;
    for (let j = g * G; j < (g + 1) * G; j++) out[j] = m.q[base + j]! * s;
  }
}

/** The f32 matrix of q · scale, each rounded once to f32: the same numbers as llama2.c's dequantize()
 *  (and as stories3M.f32.bin, the dequantized stories3M-q80.bin). */
export function dequantize(m: Matrix): F32Matrix {
  if (m.kind === 'f32') return m;
  const data = new Float32Array(m.rows * m.cols);
  if (m.kind === 'ggml') {
    for (let r = 0; r < m.rows; r++) ggmlRow(m, r, data.subarray(r * m.cols, (r + 1) * m.cols));
    return { kind: 'f32', rows: m.rows, cols: m.cols, data };
  }
  const G = m.groupSize;
  for (let i = 0; i < data.length; i++) data[i] = m.q[i]! * m.scales[Math.floor(i / G)]!;
  return { kind: 'f32', rows: m.rows, cols: m.cols, data };
}

function matVecF32(w: Float32Array, rows: number, cols: number, x: Float64Array, out: Float64Array): void {
  let r = 0;
  for (; r + 4 <= rows; r += 4) {
    const o0 = r * cols;
    const o1 = o0 + cols;
    const o2 = o1 + cols;
    const o3 = o2 + cols;
    let a0 = 0;
    let a1 = 0;
    let a2 = 0;
    let a3 = 0;
    for (let j = 0; j < cols; j++) {
      const xj = x[j]!;
      a0 += w[o0 + j]! * xj;
      a1 += w[o1 + j]! * xj;
      a2 += w[o2 + j]! * xj;
      a3 += w[o3 + j]! * xj;
    }
    out[r] = a0;
    out[r + 1] = a1;
    out[r + 2] = a2;
    out[r + 3] = a3;
  }
  for (; r < rows; r++) {
    const o = r * cols;
    let a = 0;
    for (let j = 0; j < cols; j++) a += w[o + j]! * x[j]!;
    out[r] = a;
  }
}

function matVecQ8(q: Int8Array, scales: Float32Array, G: number, rows: number, cols: number, x: Float64Array, out: Float64Array): void {
  const groups = cols / G;
  let r = 0;
  for (; r + 4 <= rows; r += 4) {
    const o0 = r * cols;
    const o1 = o0 + cols;
    const o2 = o1 + cols;
    const o3 = o2 + cols;
    const s0 = r * groups;
    const s1 = s0 + groups;
    const s2 = s1 + groups;
    const s3 = s2 + groups;
    let a0 = 0;
    let a1 = 0;
    let a2 = 0;
    let a3 = 0;
    for (let g = 0; g < groups; g++) {
      const start = g * G;
      const end = start + G;
      let d0 = 0;
      let d1 = 0;
      let d2 = 0;
      let d3 = 0;
      for (let j = start; j < end; j++) {
        const xj = x[j]!;
        d0 += q[o0 + j]! * xj;
        d1 += q[o1 + j]! * xj;
        d2 += q[o2 + j]! * xj;
        d3 += q[o3 + j]! * xj;
      }
      a0 += d0 * scales[s0 + g]!;
      a1 += d1 * scales[s1 + g]!;
      a2 += d2 * scales[s2 + g]!;
      a3 += d3 * scales[s3 + g]!;
    }
    out[r] = a0;
    out[r + 1] = a1;
    out[r + 2] = a2;
    out[r + 3] = a3;
  }
  for (; r < rows; r++) {
    const o = r * cols;
    const s = r * groups;
    let a = 0;
    for (let g = 0; g < groups; g++) {
      let d = 0;
      for (let j = g * G; j < (g + 1) * G; j++) d += q[o + j]! * x[j]!;
      a += d * scales[s + g]!;
    }
    out[r] = a;
  }
}

// The scalar reference of the wasm weight kernels (assembly/matvec.ts): y = W·x for a GgmlMatrix,
// computing exactly what every build computes, each f32 operation rounded with Math.fround, in the
// same order. The kernel tests hold every build to these bits (Q8_0, Q4_0) or to the f32 rounding
// of the same sums (F16).

import { f16BitsToF32 } from '../reference';
import type { GgmlMatrix } from '../llama2c/matrix';
import { Q4_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES, QK } from './quants';

const f32 = Math.fround;

/** x quantized per 32-block as the kernels do: d = amax/127 (f32), codes round(x/d) to nearest even. */
export interface QuantizedActivation {
  d: Float32Array;
  q: Int8Array;
  /** Σ q per block. */
  sum: Int32Array;
}

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

export function quantizeActivation(x: Float32Array): QuantizedActivation {
  const blocks = x.length / QK;
  const d = new Float32Array(blocks);
  const q = new Int8Array(x.length);
  const sum = new Int32Array(blocks);
  for (let b = 0; b < blocks; b++) {
    let amax = 0;
    for (let j = 0; j < QK; j++) amax = Math.max(amax, Math.abs(x[b * QK + j]!));
    const db = f32(amax / 127);
    const id = db !== 0 ? f32(1 / db) : 0;
    d[b] = db;
    let s = 0;
    for (let j = 0; j < QK; j++) {
      const v = Math.max(-128, Math.min(127, roundHalfEven(f32(x[b * QK + j]! * id))));
      q[b * QK + j] = v;
      s += v;
    }
    sum[b] = s;
  }
  return { d, q, sum };
}

function half(bytes: Uint8Array, at: number): number {
  return f16BitsToF32(bytes[at]! | (bytes[at + 1]! << 8));
}

/** y = W·x as the kernels compute it (x.length = cols, y.length >= rows). */
export function matVecReference(m: GgmlMatrix, x: Float32Array, y: Float32Array): void {
  const { rows, cols, data, rowBytes } = m;
  if (m.type === 'F16') {
    const main = cols - (cols % 8);
    for (let r = 0; r < rows; r++) {
      const s = new Float64Array(8); // each partial sum holds an f32
      const at = r * rowBytes;
      for (let j = 0; j < main; j++) s[j % 8] = f32(s[j % 8]! + f32(half(data, at + 2 * j) * x[j]!));
      const v0 = f32(s[0]! + s[4]!), v1 = f32(s[1]! + s[5]!), v2 = f32(s[2]! + s[6]!), v3 = f32(s[3]! + s[7]!);
      let sum = f32(f32(v0 + v2) + f32(v1 + v3));
      for (let j = main; j < cols; j++) sum = f32(sum + f32(half(data, at + 2 * j) * x[j]!));
      y[r] = sum;
    }
    return;
  }
  const a = quantizeActivation(x);
  const blocks = cols / QK;
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    for (let b = 0; b < blocks; b++) {
      let isum = 0;
      if (m.type === 'Q8_0') {
        const at = r * rowBytes + b * Q8_0_BLOCK_BYTES;
        const dw = half(data, at);
        for (let j = 0; j < QK; j++) isum += ((data[at + 2 + j]! << 24) >> 24) * a.q[b * QK + j]!;
        acc = f32(acc + f32(f32(dw * a.d[b]!) * isum));
      } else {
        const at = r * rowBytes + b * Q4_0_BLOCK_BYTES;
        const dw = half(data, at);
        for (let j = 0; j < QK / 2; j++) {
          const byte = data[at + 2 + j]!;
          isum += ((byte & 15) - 8) * a.q[b * QK + j]! + ((byte >> 4) - 8) * a.q[b * QK + QK / 2 + j]!;
        }
        acc = f32(acc + f32(f32(dw * a.d[b]!) * isum));
      }
    }
    y[r] = acc;
  }
}

// A GGUF model's F16, Q8_0 and Q4_0 matrices in the wasm memory of a Kivi instance, multiplied by
// the kernels of assembly/matvec.ts (layouts drawn there). Q8_0 and Q4_0 blocks are split on upload:
// the codes row by row (rows padded to a multiple of 4 with zeros), the halves d as f32 in groups of
// four rows, so that the kernels' loads are plain and their four rows share one load of scales.
// F16 matrices are copied as they are. Every weight is checked to be finite on upload (a file may
// hold anything), so the kernels never meet an Inf or NaN weight.

import type { Kivi } from '../kivi';
import type { GgmlMatrix } from '../llama2c/matrix';
import { f16BitsToF32 } from '../reference';
import type { WasmRuntime } from '../wasm';
import { Q4_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES, QK } from './quants';

/** The runtime whose memory holds a Kivi instance's caches; the weights go there too. */
export function runtimeOf(kivi: Kivi): WasmRuntime {
  return kivi['runtime'];
}

export interface WasmMatrix {
  readonly type: GgmlMatrix['type'];
  readonly rows: number;
  readonly cols: number;
  /** Q8_0/Q4_0: the codes; F16: the halves. */
  readonly codes: number;
  /** Q8_0/Q4_0: the f32 scales; F16: 0. */
  readonly scales: number;
  /** Bytes held in wasm memory. */
  readonly bytes: number;
}

const EXPONENT_ALL_ONES = 0x7c00;

/** Matrices of one model in one runtime, with the buffers their products need. */
export class WasmWeights {
  private readonly blocks: number[] = [];
  private x = 0;
  private out = 0;
  private scratch = 0;
  private maxCols = 0;
  private maxRows = 0;
  /** Bytes of weights held. */
  weightBytes = 0;

  constructor(private readonly runtime: WasmRuntime) {}

  private alloc(bytes: number, what: string): number {
    const ptr = this.runtime.alloc(bytes, what);
    this.blocks.push(ptr);
    return ptr;
  }

  /** Copies `m` into wasm memory (throws a RangeError if a weight is not finite, or if memory runs out). */
  upload(m: GgmlMatrix, name: string): WasmMatrix {
    const { rows, cols, data, rowBytes } = m;
    const what = `the weights of ${name} (${m.type} ${rows}×${cols})`;
    if (m.type === 'F16') {
      for (let i = 1; i < data.length; i += 2) {
        if ((((data[i]! << 8) | data[i - 1]!) & EXPONENT_ALL_ONES) === EXPONENT_ALL_ONES) {
          const j = (i - 1) / 2;
          throw new RangeError(`LlamaRunner: ${name} holds a non-finite weight (F16 bits 0x${((data[i]! << 8) | data[i - 1]!).toString(16)}) at row ${Math.floor(j / cols)}, column ${j % cols}`);
        }
      }
      const bytes = rows * cols * 2;
      const ptr = this.alloc(bytes, what);
      this.runtime.u8.set(data.subarray(0, bytes), ptr);
      this.note(rows, cols, bytes);
      return { type: 'F16', rows, cols, codes: ptr, scales: 0, bytes };
    }
    const blocks = cols / QK;
    const padded = Math.ceil(rows / 4) * 4;
    const blockBytes = m.type === 'Q8_0' ? Q8_0_BLOCK_BYTES : Q4_0_BLOCK_BYTES;
    const codeBytes = blockBytes - 2;
    const codeRowBytes = blocks * codeBytes;
    // Check every d before allocating anything.
    for (let r = 0; r < rows; r++) {
      for (let b = 0; b < blocks; b++) {
        const at = r * rowBytes + b * blockBytes;
        if ((((data[at + 1]! << 8) | data[at]!) & EXPONENT_ALL_ONES) === EXPONENT_ALL_ONES) {
          throw new RangeError(`LlamaRunner: ${name} holds a non-finite ${m.type} scale at row ${r}, block ${b}`);
        }
      }
    }
    const codes = this.alloc(padded * codeRowBytes, what);
    const scales = this.alloc(padded * blocks * 4, `the scales of ${name}`);
    const u8 = this.runtime.u8;
    const f32 = this.runtime.f32;
    u8.fill(0, codes + rows * codeRowBytes, codes + padded * codeRowBytes);
    f32.fill(0, scales >>> 2, (scales >>> 2) + padded * blocks);
    for (let r = 0; r < rows; r++) {
      const scaleBase = (scales >>> 2) + (r >> 2) * blocks * 4 + (r & 3);
      for (let b = 0; b < blocks; b++) {
        const at = r * rowBytes + b * blockBytes;
        f32[scaleBase + 4 * b] = f16BitsToF32(data[at]! | (data[at + 1]! << 8));
        u8.set(data.subarray(at + 2, at + blockBytes), codes + r * codeRowBytes + b * codeBytes);
      }
    }
    const bytes = padded * (codeRowBytes + blocks * 4);
    this.note(padded, cols, bytes);
    return { type: m.type, rows, cols, codes, scales, bytes };
  }

  private note(rows: number, cols: number, bytes: number): void {
    this.maxRows = Math.max(this.maxRows, Math.ceil(rows / 4) * 4);
    this.maxCols = Math.max(this.maxCols, cols);
    this.weightBytes += bytes;
  }

  /** Allocates the vectors the products use; call once after the uploads. */
  prepare(): void {
    const k = this.runtime.kernels;
    this.x = this.alloc(4 * this.maxCols, 'the input vector of the weight kernels');
    this.out = this.alloc(4 * this.maxRows, 'the output vector of the weight kernels');
    this.scratch = this.alloc(k.matvec_scratch_bytes(Math.ceil(this.maxCols / QK) * QK) + 16, 'the weight kernels\' scratch');
  }

  private run(w: WasmMatrix): void {
    const k = this.runtime.kernels;
    if (w.type === 'Q8_0') k.q8_0_f32_matvec(w.rows, w.cols, this.x, w.codes, w.scales, this.out, this.scratch);
    else if (w.type === 'Q4_0') k.q4_0_f32_matvec(w.rows, w.cols, this.x, w.codes, w.scales, this.out, this.scratch);
    else k.f16_f32_matvec(w.rows, w.cols, this.x, w.codes, this.out);
  }

  /** out[r] = Σ_j W[r, j]·x[j] for r < rows, through the build's kernel; x and out in float64
   *  (x is rounded to f32 on the way in). */
  matVec(w: WasmMatrix, x: Float64Array, out: Float64Array): void {
    const f32 = this.runtime.f32;
    const xAt = this.x >>> 2;
    for (let j = 0; j < w.cols; j++) f32[xAt + j] = x[j]!;
    this.run(w);
    const outAt = this.out >>> 2;
    for (let r = 0; r < w.rows; r++) out[r] = f32[outAt + r]!;
  }

  /** The same in f32 (for the kernel tests): y (length >= rows) from x (length cols). */
  matVecF32(w: WasmMatrix, x: Float32Array, y: Float32Array): void {
    this.runtime.f32.set(x.subarray(0, w.cols), this.x >>> 2);
    this.run(w);
    y.set(this.runtime.f32.subarray(this.out >>> 2, (this.out >>> 2) + w.rows));
  }

  /** Frees everything this object allocated. */
  dispose(): void {
    for (const ptr of this.blocks) this.runtime.free(ptr);
    this.blocks.length = 0;
  }
}

// The weight kernels (assembly/matvec.ts) in every build against their scalar reference
// (src/gguf/matvec-reference.ts), on seeded data: the same bits for Q8_0, Q4_0 and F16, for row
// counts below, at and above the 4-row tile and column counts of 1 to many blocks. Then what the
// int8 activations cost against float64 over the same weights, and the upload's checks.
import { beforeAll, describe, expect, it } from 'vitest';
import { Kivi } from '../src/index';
import { matVecReference, quantizeActivation } from '../src/gguf/matvec-reference';
import { decodeF16, encodeF16, quantizeQ4_0, quantizeQ8_0 } from '../src/gguf/quants';
import { runtimeOf, WasmWeights } from '../src/gguf/weights';
import { dequantize, type GgmlMatrix } from '../src/llama2c/index';
import { Rng } from '../src/reference';
import { loadAllVariants, trackAllocations, VARIANT_NAMES } from './helpers';

type Type = GgmlMatrix['type'];

function encode(type: Type, values: Float32Array, rows: number, cols: number): GgmlMatrix {
  const rowBytes = type === 'F16' ? 2 * cols : (cols / 32) * (type === 'Q8_0' ? 34 : 18);
  const data = new Uint8Array(rows * rowBytes);
  const f = type === 'F16' ? encodeF16 : type === 'Q8_0' ? quantizeQ8_0 : quantizeQ4_0;
  for (let r = 0; r < rows; r++) f(values, r * cols, cols, data, r * rowBytes);
  return { kind: 'ggml', type, rows, cols, rowBytes, data };
}

/** Weights like a model's: normal, a few rows and columns 10× larger, some zero blocks. */
function weights(rng: Rng, rows: number, cols: number): Float32Array {
  const w = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) {
      const big = j % 37 === 5 || r % 11 === 3 ? 10 : 1;
      w[r * cols + j] = j >= 32 && j < 64 && r % 5 === 2 ? 0 : rng.normal() * 0.05 * big;
    }
  }
  return w;
}

function vector(rng: Rng, n: number): Float32Array {
  return new Float32Array(n).map((_, j) => rng.normal() * (j % 29 === 0 ? 8 : 1));
}

const SHAPES: Record<Type, [number, number][]> = {
  Q8_0: [[1, 32], [3, 64], [4, 96], [5, 32], [9, 256], [67, 1024], [16, 4096]],
  Q4_0: [[1, 32], [3, 64], [4, 96], [5, 32], [9, 256], [67, 1024], [16, 4096]],
  F16: [[1, 8], [3, 13], [4, 64], [5, 172], [9, 256], [67, 1000], [16, 4096]],
};

describe('weight kernels against the scalar reference', () => {
  let kivis: Map<string, Kivi>;
  beforeAll(async () => {
    kivis = await loadAllVariants();
  });

  for (const variant of VARIANT_NAMES) {
    for (const type of ['Q8_0', 'Q4_0', 'F16'] as const) {
      it(`${variant}: ${type} gives the reference's bits for every shape`, () => {
        const rng = new Rng(type.length * 1000 + 7);
        const runtime = runtimeOf(kivis.get(variant)!);
        for (const [rows, cols] of SHAPES[type]) {
          const m = encode(type, weights(rng, rows, cols), rows, cols);
          const w = new WasmWeights(runtime);
          const tracked = trackAllocations(runtime);
          try {
            const h = w.upload(m, 'test');
            w.prepare();
            for (let trial = 0; trial < 3; trial++) {
              const x = trial === 2 ? new Float32Array(cols) : vector(rng, cols); // and an all-zero x
              const got = new Float32Array(rows);
              const want = new Float32Array(rows);
              w.matVecF32(h, x, got);
              matVecReference(m, x, want);
              for (let r = 0; r < rows; r++) {
                if (!Object.is(got[r], want[r])) expect.fail(`${type} ${rows}×${cols}, trial ${trial}, row ${r}: got ${got[r]}, the reference ${want[r]}`);
              }
            }
          } finally {
            w.dispose();
            expect([...tracked.stop()], 'blocks left allocated after dispose()').toEqual([]);
          }
        }
      });
    }
  }
});

describe('what the kernels compute', () => {
  it('int8 activations cost at most about 1/127 of each block\'s largest |x|, against float64 over the same weights', () => {
    const rng = new Rng(99);
    for (const type of ['Q8_0', 'Q4_0'] as const) {
      const rows = 64, cols = 512;
      const m = encode(type, weights(rng, rows, cols), rows, cols);
      const exact = dequantize(m).data;
      const x = vector(rng, cols);
      const got = new Float32Array(rows);
      matVecReference(m, x, got);
      const { d } = quantizeActivation(x);
      for (let r = 0; r < rows; r++) {
        let y = 0;
        let bound = 0;
        for (let j = 0; j < cols; j++) {
          y += exact[r * cols + j]! * x[j]!;
          bound += Math.abs(exact[r * cols + j]!) * d[Math.floor(j / 32)]! * 0.5; // |x − x̂·d| <= d/2 per element
        }
        expect(Math.abs(got[r]! - y), `${type} row ${r}`).toBeLessThanOrEqual(bound * 1.001 + 1e-6);
      }
    }
  });

  it('F16: the f32 sum of the exact products, to f32 rounding', () => {
    const rng = new Rng(5);
    const rows = 8, cols = 300;
    const m = encode('F16', weights(rng, rows, cols), rows, cols);
    const x = vector(rng, cols);
    const got = new Float32Array(rows);
    matVecReference(m, x, got);
    const row = new Float64Array(cols);
    for (let r = 0; r < rows; r++) {
      decodeF16(m.data, r * m.rowBytes, cols, row);
      let y = 0;
      let scale = 0;
      for (let j = 0; j < cols; j++) {
        y += row[j]! * x[j]!;
        scale += Math.abs(row[j]! * x[j]!);
      }
      expect(Math.abs(got[r]! - y)).toBeLessThanOrEqual(scale * cols * 2 ** -24);
    }
  });

  it('refuses non-finite weights on upload, before allocating', async () => {
    const kivi = await Kivi.load();
    const runtime = runtimeOf(kivi);
    const f16 = encode('F16', new Float32Array(64).fill(1), 2, 32);
    f16.data[2 * 40 + 1] = 0x7c; // +Inf at row 1, column 8
    const q8 = encode('Q8_0', new Float32Array(64).fill(1), 2, 32);
    q8.data[34 + 1] = 0x7e; // NaN scale of row 1
    const w = new WasmWeights(runtime);
    const tracked = trackAllocations(runtime);
    expect(() => w.upload(f16, 'blk.0.attn_q.weight')).toThrow(/blk.0.attn_q.weight holds a non-finite weight \(F16 bits 0x7c00\) at row 1, column 8/);
    expect(() => w.upload(q8, 'output.weight')).toThrow(/output.weight holds a non-finite Q8_0 scale at row 1, block 0/);
    expect([...tracked.stop()]).toEqual([]);
  });
});

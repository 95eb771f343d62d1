// onnxruntime-web, for real: an fp16 graph whose `present.0.key` / `present.0.value` outputs (float16
// tensors in ORT's [batch][kvHeads][tokens][headDim] layout, as a decoder with a past returns them)
// go into the cache as half bits, with no f32 copy, and attend bit-identically to f32 inputs holding
// the same values. The README's onnxruntime-web fp16 example, run.
import * as ort from 'onnxruntime-web';
import { beforeAll, describe, expect, it } from 'vitest';
import { Kivi } from '../src/index';
import { f16BitsToF32, Rng, syntheticKv } from '../src/reference';
import { buildModel, FLOAT16, setOnnxThreads } from '../bench/peers/onnx';

const KV_HEADS = 2, QUERY_HEADS = 4, D = 64, TOKENS = 300;
const FLOAT = 1;

/** [1][kvHeads][tokens][D] (ORT's present layout) → [tokens][kvHeads][D], as half bits. */
function toTokenMajor(bnsd: Uint16Array, kvHeads: number, tokens: number, headDim: number): Uint16Array {
  const out = new Uint16Array(bnsd.length);
  for (let h = 0; h < kvHeads; h++) {
    for (let t = 0; t < tokens; t++) out.set(bnsd.subarray((h * tokens + t) * headDim, (h * tokens + t + 1) * headDim), (t * kvHeads + h) * headDim);
  }
  return out;
}

/** [tokens][kvHeads][D] → [1][kvHeads][tokens][D]. */
function toHeadMajor(x: Float32Array, kvHeads: number, tokens: number, headDim: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let t = 0; t < tokens; t++) for (let h = 0; h < kvHeads; h++) out.set(x.subarray((t * kvHeads + h) * headDim, (t * kvHeads + h + 1) * headDim), (h * tokens + t) * headDim);
  return out;
}

let session: ort.InferenceSession;
beforeAll(async () => {
  setOnnxThreads(1);
  ort.env.wasm.numThreads = 1;
  const dims = [1, KV_HEADS, 'tokens', D];
  // The last ops of an fp16 decoder layer: its keys and values in float16, returned as the present cache.
  const model = buildModel({
    name: 'fp16 present',
    inputs: [{ name: 'k', type: FLOAT, dims }, { name: 'v', type: FLOAT, dims }],
    outputs: [{ name: 'present.0.key', type: FLOAT16, dims }, { name: 'present.0.value', type: FLOAT16, dims }],
    nodes: [
      { op: 'Cast', inputs: ['k'], outputs: ['present.0.key'], attributes: { to: FLOAT16 } },
      { op: 'Cast', inputs: ['v'], outputs: ['present.0.value'], attributes: { to: FLOAT16 } },
    ],
  });
  session = await ort.InferenceSession.create(model, { executionProviders: ['wasm'] });
}, 60_000); // onnxruntime-web compiles its 10 MB wasm first

describe('onnxruntime-web fp16 present tensors into the cache', () => {
  it('takes present.N.key/value (float16) as half bits and attends like f32 holding the same values', async () => {
    const rng = new Rng(16);
    const keys = syntheticKv(rng, TOKENS, KV_HEADS, D, 'keys');
    const values = syntheticKv(rng, TOKENS, KV_HEADS, D, 'values');
    const results = await session.run({
      k: new ort.Tensor('float32', toHeadMajor(keys, KV_HEADS, TOKENS, D), [1, KV_HEADS, TOKENS, D]),
      v: new ort.Tensor('float32', toHeadMajor(values, KV_HEADS, TOKENS, D), [1, KV_HEADS, TOKENS, D]),
    });
    const presentKey = results['present.0.key']!;
    expect(presentKey.type).toBe('float16');
    const k16 = toTokenMajor(presentKey.data as Uint16Array, KV_HEADS, TOKENS, D);
    const v16 = toTokenMajor(results['present.0.value']!.data as Uint16Array, KV_HEADS, TOKENS, D);

    const kivi = await Kivi.load();
    const options = { layers: 1, kvHeads: KV_HEADS, queryHeads: QUERY_HEADS, headDim: D, bits: 2 as const, residual: 64 };
    const halves = kivi.createCache(options);
    const floats = kivi.createCache(options);
    const widen = (h: Uint16Array) => Float32Array.from(h, (b) => f16BitsToF32(b));
    halves.append(0, k16, v16);
    floats.append(0, widen(k16), widen(v16));
    for (let t = 0; t < 3; t++) {
      const one = (x: Uint16Array) => x.subarray(0, KV_HEADS * D); // decode: one more token each
      halves.append(0, one(k16), one(v16));
      floats.append(0, widen(one(k16)), widen(one(v16)));
    }
    const q = syntheticKv(rng, 1, QUERY_HEADS, D, 'queries');
    const out16 = new Uint16Array(QUERY_HEADS * D);
    const fromHalves = halves.attend(0, q);
    expect(Array.from(new Uint32Array(fromHalves.buffer))).toEqual(Array.from(new Uint32Array(floats.attend(0, q).buffer)));
    halves.attend(0, q, out16);
    expect(out16.some((b) => b !== 0)).toBe(true);
    expect(halves.stats()).toEqual(floats.stats());
    kivi.close();
  });
});

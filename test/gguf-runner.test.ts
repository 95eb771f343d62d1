// LlamaRunner on GGUF files converted at test time from the llama2.c models: F32 gives exactly the
// llama2.c file's logits (the same float64 path); F16, Q8_0 and Q4_0 run in the wasm kernels and
// land within their rounding (bounds below, with the measurements they come from).
import { beforeAll, describe, expect, it } from 'vitest';
import { Kivi } from '../src/index';
import { convertToGguf, dequantize, evaluate, LlamaRunner, parseGguf, type LlamaModel, type Tokenizer } from '../src/llama2c/index';
import { relativeL2 } from '../src/reference';
import { loadModel, REFERENCE, REFERENCE_TOLERANCE, validationText } from './llama2c-helpers';
import { runtimeOf } from '../src/gguf/weights';
import { trackAllocations } from './helpers';

/** The same model with every matrix dequantized to f32: the JS float64 path over the same weights. */
function dequantized(model: LlamaModel): LlamaModel {
  const embedding = dequantize(model.tokenEmbedding);
  return {
    ...model,
    tokenEmbedding: embedding,
    classifier: model.config.sharedClassifier ? embedding : dequantize(model.classifier),
    layers: model.layers.map((l) => ({
      ...l, wq: dequantize(l.wq), wk: dequantize(l.wk), wv: dequantize(l.wv), wo: dequantize(l.wo), w1: dequantize(l.w1), w2: dequantize(l.w2), w3: dequantize(l.w3),
    })),
  };
}

function logitsOf(runner: LlamaRunner, ids: number[]): Float64Array[] {
  runner.reset();
  return ids.map((id) => runner.forward(id, new Float64Array(runner.config.vocabSize)));
}

function worstRelativeL2(a: Float64Array[], b: Float64Array[]): number {
  return Math.max(...a.map((x, i) => relativeL2(x, b[i]!)));
}

describe('LlamaRunner on GGUF files', () => {
  let kivi: Kivi;
  let model: LlamaModel;
  let tokenizer: Tokenizer;
  let ids: number[];
  let reference: Float64Array[];

  beforeAll(async () => {
    kivi = await Kivi.load();
    ({ model, tokenizer } = loadModel('stories3M.f32.bin', 'tok4096.bin'));
    ids = tokenizer.encode(validationText().slice(0, 2000), { bos: true }).slice(0, 64);
    const runner = new LlamaRunner(model, kivi, { bits: 32 });
    reference = logitsOf(runner, ids);
    runner.dispose();
  });

  it('F32: exactly the logits of the llama2.c file (stories3M from either checkpoint, and stories260K)', () => {
    const q80 = loadModel('stories3M-q80.bin', 'tok4096.bin');
    for (const source of [model, q80.model]) {
      const g = parseGguf(convertToGguf(source, tokenizer));
      const runner = new LlamaRunner(g.model, kivi, { bits: 32 });
      const got = logitsOf(runner, ids);
      expect(runner.wasmWeightBytes).toBe(0);
      runner.dispose();
      got.forEach((logits, i) => {
        const diff = logits.findIndex((v, j) => v !== reference[i]![j]);
        if (diff >= 0) expect.fail(`position ${i}: logit ${diff} is ${logits[diff]}, the llama2.c file's ${reference[i]![diff]}`);
      });
    }
    const small = loadModel('stories260K.bin', 'tok512.bin');
    const text = tokenizer.decodeAll(ids);
    const smallIds = small.tokenizer.encode(text, { bos: true });
    const a = new LlamaRunner(small.model, kivi, { bits: 32 });
    const b = new LlamaRunner(parseGguf(convertToGguf(small.model, small.tokenizer)).model, kivi, { bits: 32 });
    expect(logitsOf(b, smallIds)).toEqual(logitsOf(a, smallIds));
    a.dispose();
    b.dispose();
  });

  // Measured on this model (64 positions, max over positions of the logits' relative L2 error):
  //   type   vs llama2.c f32   vs float64 over the same weights
  //   F16    6.1e-4            5.1e-7    halves keep 11 bits: 2^-11 relative per weight
  //   Q8_0   2.4e-2            2.2e-2    8-bit weights and 8-bit activations: each x is off by up to
  //                                      1/254 of its block's largest |x|, which dominates here
  //   Q4_0   3.2e-1            2.4e-2    4-bit weights (shared classifier included) cost the most
  // The bounds are about 2-3× those; the second column checks the kernels' path, the first the format.
  const BOUNDS = { f16: [2e-3, 1e-5], q8_0: [6e-2, 6e-2], q4_0: [0.6, 6e-2] } as const;

  for (const type of ['f16', 'q8_0', 'q4_0'] as const) {
    it(`${type.toUpperCase()}: logits within its rounding of the llama2.c file's, through the wasm kernels`, () => {
      const g = parseGguf(convertToGguf(model, tokenizer, { type }));
      const runner = new LlamaRunner(g.model, kivi, { bits: 32 });
      expect(runner.wasmWeightBytes).toBeGreaterThan(0);
      const got = logitsOf(runner, ids);
      runner.dispose();
      const jsRunner = new LlamaRunner(dequantized(g.model), kivi, { bits: 32 });
      const sameWeights = logitsOf(jsRunner, ids);
      jsRunner.dispose();
      const [vsFile, vsSameWeights] = [worstRelativeL2(got, reference), worstRelativeL2(got, sameWeights)];
      console.log(`${type}: logits relative L2 ${vsFile.toExponential(2)} vs the llama2.c file, ${vsSameWeights.toExponential(2)} vs float64 over the same weights`);
      expect(vsFile).toBeLessThan(BOUNDS[type][0]);
      expect(vsSameWeights).toBeLessThan(BOUNDS[type][1]);
      expect(vsSameWeights).toBeGreaterThan(0);
    });
  }

  it('Q8_0: protocol B mean NLL within 2e-3 of the f32 reference (measured +4.3e-4), and dispose() frees the weights', () => {
    const g = parseGguf(convertToGguf(model, tokenizer, { type: 'q8_0' }));
    const runner = new LlamaRunner(g.model, kivi, { bits: 32 });
    try {
      const r = evaluate(runner, g.tokenizer, validationText(), 'B');
      console.log(`stories3M Q8_0 GGUF, protocol B: ${r.tokens} tokens, mean NLL ${r.meanNll.toFixed(6)} (f32: ${REFERENCE.stories3M.B.meanNll})`);
      expect(r.tokens).toBe(REFERENCE.stories3M.B.tokens);
      expect(Math.abs(r.meanNll - REFERENCE.stories3M.B.meanNll)).toBeLessThan(2e-3);
      expect(Math.abs(r.meanNll - REFERENCE.stories3M.B.meanNll)).toBeGreaterThan(REFERENCE_TOLERANCE); // it is not the f32 path
    } finally {
      runner.dispose();
    }
    // dispose() frees every block the runner allocated: its cache and its weights.
    const tracked = trackAllocations(runtimeOf(kivi));
    const again = new LlamaRunner(g.model, kivi, { bits: 32 });
    expect(again.wasmWeightBytes).toBe(3538944); // 43 matrices: int8 codes + one f32 scale per 32 weights, rows padded to 4
    again.dispose();
    expect([...tracked.stop()]).toEqual([]);
  });
});

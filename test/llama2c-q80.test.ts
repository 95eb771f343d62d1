// stories3M-q80.bin (llama2.c v2, Q8_0, group 64), multiplied in int8 groups: the same numbers as the
// f32 file (its exact dequantization) up to float rounding.
import { describe, expect, it } from 'vitest';
import { parseCheckpoint, type Matrix, type Protocol } from '../src/llama2c/index';
import { expectReference, modelBytes, REFERENCE, useModel } from './llama2c-helpers';

const stories = useModel('stories3M-q80.bin', 'tok4096.bin');

describe('stories3M-q80.bin (Q8_0 weights, f32 cache)', () => {
  it('dequantizes to exactly the weights of stories3M.f32.bin (so every tensor was read in the right order)', () => {
    const q = parseCheckpoint(modelBytes('stories3M-q80.bin'), { dequantize: true });
    const f = parseCheckpoint(modelBytes('stories3M.f32.bin'));
    expect(q.format).toEqual({ version: 2, weights: 'f32', groupSize: 64 });
    const data = (m: Matrix) => (m.kind === 'f32' ? m.data : new Float32Array());
    /** Index of the first element that differs (bitwise, as f32), or -1. */
    const firstDifference = (a: Float32Array, b: Float32Array) => {
      if (a.length !== b.length) return -2;
      const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
      const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
      for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) return i;
      return -1;
    };
    expect(firstDifference(data(q.tokenEmbedding), data(f.tokenEmbedding)), 'token embedding').toBe(-1);
    expect(q.classifier).toBe(q.tokenEmbedding);
    expect(firstDifference(q.rmsFinal, f.rmsFinal), 'rms_final').toBe(-1);
    q.layers.forEach((layer, l) => {
      const other = f.layers[l]!;
      expect(firstDifference(layer.rmsAtt, other.rmsAtt), `layer ${l} rms_att`).toBe(-1);
      expect(firstDifference(layer.rmsFfn, other.rmsFfn), `layer ${l} rms_ffn`).toBe(-1);
      for (const k of ['wq', 'wk', 'wv', 'wo', 'w1', 'w2', 'w3'] as const) expect(firstDifference(data(layer[k]), data(other[k])), `layer ${l} ${k}`).toBe(-1);
    });
  });

  for (const protocol of ['A', 'B'] as Protocol[]) {
    const want = REFERENCE.stories3M[protocol];
    it(`protocol ${protocol}: the f32 file's ${want.tokens} tokens and mean NLL ${want.meanNll}`, () => expectReference(stories, protocol, want, 'stories3M-q80 (int8 weights)'));
  }
});

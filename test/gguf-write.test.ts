// The GGUF writer and the converter: ggml's quantizers on hand-computed blocks, and converted files
// read back by an independent parser (@huggingface/gguf) — metadata, tensor names, ggml shapes,
// types, aligned offsets, and the tensor bytes against the llama2.c weights.
import { gguf } from '@huggingface/gguf';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { convertToGguf, randomGguf, randomVocabulary, vocabularyOf } from '../src/gguf/convert';
import { TENSOR_TYPES, TokenType } from '../src/gguf/format';
import { decodeF16, dequantizeQ4_0, dequantizeQ8_0, quantizeQ4_0, quantizeQ8_0 } from '../src/gguf/quants';
import { writeGguf } from '../src/gguf/write';
import { dequantize, type LlamaModel, type Tokenizer } from '../src/llama2c/index';
import { f16BitsToF32 } from '../src/reference';
import { loadModel } from './llama2c-helpers';

const dir = mkdtempSync(join(tmpdir(), 'kivi-gguf-write-'));

/** Byte equality (vitest's toEqual walks megabytes element by element, slowly). */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

async function parse(bytes: Uint8Array, name: string) {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  const r = await gguf(path, { allowLocalFile: true });
  return { ...r, metadata: r.metadata as Record<string, unknown> };
}

describe('ggml quantizers (quantize_row_q8_0_ref, quantize_row_q4_0_ref)', () => {
  it('Q8_0: d = amax/127 as a half, x/d rounded half away from zero', () => {
    const x = new Float32Array(32);
    x[0] = 127; // d = 1
    x.set([-0.5, 0.5, 1.5, 2.5, -2.5, -126.6, 3.49], 1);
    const out = new Uint8Array(34);
    quantizeQ8_0(x, 0, 32, out, 0);
    expect(out[0]! | (out[1]! << 8)).toBe(0x3c00); // 1.0
    const q = Array.from(new Int8Array(out.buffer, 2, 8));
    expect(q).toEqual([127, -1, 1, 2, 3, -3, -127, 3]);
    // An all-zero block: d = 0, codes 0 (ggml's id = d ? 1/d : 0).
    quantizeQ8_0(new Float32Array(32), 0, 32, out, 0);
    expect(Array.from(out)).toEqual(new Array(34).fill(0));
  });

  it('Q4_0: d = max/-8 of the largest-magnitude element (first on ties), truncating x/d + 8.5, at most 15', () => {
    const x = new Float32Array(32);
    x.set([-8, 8, 7, 7.4, 0, -0.5, 0.5, -0.6]); // max = -8 (the first of -8 and 8), d = 1
    x[16] = 3; // elements 16..31 go to the high nibbles
    x[31] = -3;
    const out = new Uint8Array(18);
    quantizeQ4_0(x, 0, 32, out, 0);
    expect(out[0]! | (out[1]! << 8)).toBe(0x3c00);
    const low = Array.from(out.subarray(2), (b) => b & 15);
    const high = Array.from(out.subarray(2), (b) => b >> 4);
    expect(low.slice(0, 8)).toEqual([0, 15, 15, 15, 8, 8, 9, 7]); // 8 + 8.5 = 16.5 → 16 → clamped to 15
    expect(high[0]).toBe(11);
    expect(high[15]).toBe(5);
    // A positive max: d = -1, so max maps to code 0 exactly and -max to 15 (= -7 after clamping).
    x.fill(0);
    x[0] = 8;
    x[1] = -8;
    quantizeQ4_0(x, 0, 32, out, 0);
    expect(out[0]! | (out[1]! << 8)).toBe(0xbc00);
    const back = new Float32Array(32);
    dequantizeQ4_0(out, 0, 32, back);
    expect([back[0], back[1], back[2]]).toEqual([8, -7, -0]);
    // All zero: d = 0/-8 = -0 (a negative zero half, as in C), codes 8.
    quantizeQ4_0(new Float32Array(32), 0, 32, out, 0);
    expect(out[0]! | (out[1]! << 8)).toBe(0x8000);
    expect(Array.from(out.subarray(2))).toEqual(new Array(16).fill(0x88));
  });

  it('round trips within half a step (Q8_0) and one step (Q4_0, whose clamp costs up to d)', () => {
    const n = 32 * 64;
    const x = new Float32Array(n).map((_, i) => Math.sin(i * 1.7) * (1 + (i % 97)) * 0.01);
    const q8 = new Uint8Array((n / 32) * 34);
    const q4 = new Uint8Array((n / 32) * 18);
    quantizeQ8_0(x, 0, n, q8, 0);
    quantizeQ4_0(x, 0, n, q4, 0);
    const b8 = new Float32Array(n);
    const b4 = new Float32Array(n);
    dequantizeQ8_0(q8, 0, n, b8);
    dequantizeQ4_0(q4, 0, n, b4);
    for (let b = 0; b < n / 32; b++) {
      const d8 = f16BitsToF32(q8[b * 34]! | (q8[b * 34 + 1]! << 8));
      const d4 = Math.abs(f16BitsToF32(q4[b * 18]! | (q4[b * 18 + 1]! << 8)));
      for (let j = b * 32; j < (b + 1) * 32; j++) {
        // The codes are chosen with the f32 d, then d is stored as a half: |q·(d_half − d)| adds up
        // to 127·2^-11·d (Q8_0) and 8·2^-11·d (Q4_0).
        expect(Math.abs(b8[j]! - x[j]!)).toBeLessThanOrEqual(d8 * (0.5 + 127 * 2 ** -11) * 1.001 + 1e-7);
        expect(Math.abs(b4[j]! - x[j]!)).toBeLessThanOrEqual(d4 * 1.01 + 1e-7);
      }
    }
  });
});

describe('the GGUF writer', () => {
  it('refuses duplicate keys and names, a bad alignment and rows that are not whole blocks', () => {
    const tensor = (name: string, dims: number[], type = TENSOR_TYPES.F32) => ({ name, dims, type, fill: () => {} });
    expect(() => writeGguf({ metadata: [['a', { type: 'uint32', value: 1 }], ['a', { type: 'uint32', value: 2 }]], tensors: [] })).toThrow(/metadata key "a" given twice/);
    expect(() => writeGguf({ metadata: [], tensors: [tensor('t', [4]), tensor('t', [4])] })).toThrow(/tensor name "t" given twice/);
    expect(() => writeGguf({ metadata: [['general.alignment', { type: 'uint32', value: 24 }]], tensors: [] })).toThrow(/power of two, got 24/);
    expect(() => writeGguf({ metadata: [], tensors: [tensor('q', [48, 2], TENSOR_TYPES.Q8_0)] })).toThrow(/ne\[0\] = 48 is not a multiple of the Q8_0 block of 32/);
    expect(() => writeGguf({ metadata: [['x', { type: 'uint8', value: 256 }]], tensors: [] })).toThrow(RangeError);
  });

  it('aligns every tensor to general.alignment', async () => {
    const bytes = writeGguf({
      metadata: [['general.alignment', { type: 'uint32', value: 64 }], ['k', { type: 'array', itemType: 'int16', value: [1, -2, 3] }]],
      tensors: [
        { name: 'a', dims: [3], type: TENSOR_TYPES.F32, fill: (o) => o.fill(1) },
        { name: 'b', dims: [5, 2], type: TENSOR_TYPES.F16, fill: (o) => o.fill(2) },
      ],
    });
    const r = await parse(bytes, 'aligned.gguf');
    expect(Number(r.tensorDataOffset) % 64).toBe(0);
    expect(r.tensorInfos.map((t) => [t.name, t.shape.map(Number), t.dtype, Number(t.offset)])).toEqual([['a', [3], 0, 0], ['b', [5, 2], 1, 64]]);
    expect(r.metadata.k).toEqual([1, -2, 3]);
    expect(bytes.length).toBe(Number(r.tensorDataOffset) + 64 + 20);
    expect(bytes[Number(r.tensorDataOffset) + 12]).toBe(0); // padding after tensor a
  });
});

describe('convert: stories3M as GGUF, read by @huggingface/gguf', () => {
  let model: LlamaModel;
  let tokenizer: Tokenizer;
  beforeAll(() => ({ model, tokenizer } = loadModel('stories3M.f32.bin', 'tok4096.bin')));

  it('f32: the llama metadata, every tensor under llama.cpp\'s name in ggml order, the exact weights', async () => {
    const bytes = convertToGguf(model, tokenizer, { name: 'stories3M' });
    const r = await parse(bytes, 'stories3M.f32.gguf');
    const m = r.metadata as Record<string, unknown>;
    expect(m.version).toBe(3);
    expect(m['general.architecture']).toBe('llama');
    expect(m['general.name']).toBe('stories3M');
    expect(m['general.file_type']).toBe(0);
    expect(m['general.alignment']).toBe(32);
    expect([m['llama.context_length'], m['llama.embedding_length'], m['llama.block_count'], m['llama.feed_forward_length']]).toEqual([512, 192, 6, 512]);
    expect([m['llama.rope.dimension_count'], m['llama.attention.head_count'], m['llama.attention.head_count_kv']]).toEqual([32, 6, 2]);
    expect(m['llama.attention.layer_norm_rms_epsilon']).toBe(Math.fround(1e-5));
    expect(m['llama.rope.freq_base']).toBe(10000);
    expect(m['tokenizer.ggml.model']).toBe('llama');
    expect([m['tokenizer.ggml.bos_token_id'], m['tokenizer.ggml.eos_token_id'], m['tokenizer.ggml.unknown_token_id']]).toEqual([1, 2, 0]);
    const tokens = m['tokenizer.ggml.tokens'] as string[];
    expect(tokens.length).toBe(4096);
    expect(tokens.slice(0, 4)).toEqual(['<unk>', '<s>', '</s>', '<0x00>']);
    expect(tokens[258]).toBe('<0xFF>');
    expect(tokens.filter((t) => t.includes(' '))).toEqual([]);
    expect(tokens[tokenizer.idOf(' the')]).toBe('\u2581the');
    expect((m['tokenizer.ggml.scores'] as number[])[500]).toBe(tokenizer.score(500));

    const names = r.tensorInfos.map((t) => t.name);
    expect(names.length).toBe(2 + 9 * 6); // embedding, 9 per layer, output_norm; the classifier is shared
    expect(names).toContain('blk.5.ffn_down.weight');
    expect(names).not.toContain('output.weight');
    const info = (name: string) => r.tensorInfos.find((t) => t.name === name)!;
    expect(info('token_embd.weight').shape.map(Number)).toEqual([192, 4096]);
    expect(info('blk.0.attn_k.weight').shape.map(Number)).toEqual([192, 64]);
    expect(info('blk.0.ffn_down.weight').shape.map(Number)).toEqual([512, 192]);
    expect(info('blk.0.ffn_gate.weight').shape.map(Number)).toEqual([192, 512]);
    expect(info('output_norm.weight').shape.map(Number)).toEqual([192]);
    for (const t of r.tensorInfos) expect(Number(t.offset) % 32, t.name).toBe(0);
    const start = Number(r.tensorDataOffset);
    const f32At = (name: string, n: number) => new Float32Array(bytes.slice(start + Number(info(name).offset), start + Number(info(name).offset) + 4 * n).buffer);
    const wk = model.layers[3]!.wk;
    expect(f32At('blk.3.attn_k.weight', wk.rows * wk.cols)).toEqual((wk as { data: Float32Array }).data);
    expect(f32At('blk.2.ffn_norm.weight', 192)).toEqual(model.layers[2]!.rmsFfn);
  });

  it('q8_0 and q4_0: matrices as ggml blocks of the f32 weights, norms f32; the same file from the Q8_0 checkpoint', async () => {
    const fromQ80 = loadModel('stories3M-q80.bin', 'tok4096.bin');
    expect(sameBytes(convertToGguf(fromQ80.model, fromQ80.tokenizer), convertToGguf(model, tokenizer))).toBe(true);
    for (const type of ['q8_0', 'q4_0'] as const) {
      const bytes = convertToGguf(fromQ80.model, fromQ80.tokenizer, { type });
      const r = await parse(bytes, `stories3M.${type}.gguf`);
      expect(r.metadata['general.file_type']).toBe(type === 'q8_0' ? 7 : 2);
      const id = type === 'q8_0' ? 8 : 2;
      for (const t of r.tensorInfos) expect(t.dtype, t.name).toBe(t.shape.length === 1 ? 0 : id);
      const info = r.tensorInfos.find((t) => t.name === 'blk.1.attn_q.weight')!;
      const at = Number(r.tensorDataOffset) + Number(info.offset);
      const back = new Float32Array(192 * 192);
      (type === 'q8_0' ? dequantizeQ8_0 : dequantizeQ4_0)(bytes, at, back.length, back);
      const want = dequantize(model.layers[1]!.wq).data;
      let worst = 0;
      let scale = 0;
      for (let i = 0; i < want.length; i++) {
        worst = Math.max(worst, Math.abs(back[i]! - want[i]!));
        scale = Math.max(scale, Math.abs(want[i]!));
      }
      // Q8_0: at most half a step of amax/127 (plus the half rounding of d, above); Q4_0: one step of amax/8.
      expect(worst).toBeGreaterThan(0);
      expect(worst).toBeLessThanOrEqual(scale * (type === 'q8_0' ? (0.5 + 127 * 2 ** -11) / 127 : 1 / 8) * 1.01);
    }
  });

  it('stories260K q8_0: the matrices whose rows are not whole blocks (w2, 172 columns) fall back to F16', async () => {
    const small = loadModel('stories260K.bin', 'tok512.bin');
    const bytes = convertToGguf(small.model, small.tokenizer, { type: 'q8_0' });
    const r = await parse(bytes, 'stories260K.q8_0.gguf');
    const byName = new Map(r.tensorInfos.map((t) => [t.name, t]));
    expect(byName.get('blk.0.ffn_down.weight')!.dtype).toBe(1);
    expect(byName.get('blk.0.ffn_down.weight')!.shape.map(Number)).toEqual([172, 64]);
    expect(byName.get('blk.0.ffn_up.weight')!.dtype).toBe(8);
    const w2 = small.model.layers[0]!.w2;
    const back = new Float32Array(w2.rows * w2.cols);
    decodeF16(bytes, Number(r.tensorDataOffset) + Number(byName.get('blk.0.ffn_down.weight')!.offset), back.length, back);
    const want = (w2 as { data: Float32Array }).data;
    for (let i = 0; i < want.length; i++) expect(Math.abs(back[i]! - want[i]!)).toBeLessThanOrEqual(Math.abs(want[i]!) * 2 ** -11 + 2 ** -25);
  });

  it('the vocabulary: "▁" for spaces, <unk>/<s>/</s>, byte pieces typed BYTE', () => {
    const v = vocabularyOf(tokenizer);
    const text = new TextDecoder();
    expect(Array.from(v.types.subarray(0, 4))).toEqual([TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, TokenType.BYTE]);
    expect(v.types[258]).toBe(TokenType.BYTE);
    expect(v.types.subarray(259).every((t) => t === TokenType.NORMAL)).toBe(true);
    expect(text.decode(v.tokens[tokenizer.idOf(' ')]!)).toBe('\u2581');
    expect(text.decode(v.tokens[2]!)).toBe('</s>');
  });
});

describe('random-weight models', () => {
  const shape = { dim: 64, heads: 4, kvHeads: 2, layers: 2, context: 256, vocabSize: 300, seed: 7 };

  it('are seeded: the same seed gives the same file, the weights agree across types, another seed differs', async () => {
    const a = randomGguf(shape);
    expect(sameBytes(randomGguf(shape), a)).toBe(true);
    expect(sameBytes(randomGguf({ ...shape, seed: 8 }), a)).toBe(false);
    const r = await parse(a, 'random.f32.gguf');
    expect(r.metadata['llama.feed_forward_length']).toBe(256); // 8·64/3 rounded up to 256
    expect(r.metadata['llama.attention.head_count_kv']).toBe(2);
    expect((r.metadata['tokenizer.ggml.tokens'] as string[]).length).toBe(300);
    expect(r.tensorInfos.some((t) => t.name === 'output.weight')).toBe(true);
    const q = randomGguf({ ...shape, type: 'q8_0' });
    const rq = await parse(q, 'random.q8_0.gguf');
    const find = (x: typeof r, name: string) => Number(x.tensorDataOffset) + Number(x.tensorInfos.find((t) => t.name === name)!.offset);
    const f32 = new Float32Array(a.slice(find(r, 'blk.1.attn_v.weight'), find(r, 'blk.1.attn_v.weight') + 4 * 64 * 32).buffer);
    const back = new Float32Array(64 * 32);
    dequantizeQ8_0(q, find(rq, 'blk.1.attn_v.weight'), back.length, back);
    const amax = Math.max(...Array.from(f32, Math.abs));
    for (let i = 0; i < f32.length; i++) expect(Math.abs(back[i]! - f32[i]!)).toBeLessThanOrEqual((amax / 127) * 0.51);
  });

  it('have a vocabulary of unique pieces in the llama layout', () => {
    const v = randomVocabulary(1000);
    const text = v.tokens.map((t) => new TextDecoder().decode(t));
    expect(new Set(text).size).toBe(1000);
    expect(text.slice(0, 3)).toEqual(['<unk>', '<s>', '</s>']);
    expect(text[3 + 0x41]).toBe('<0x41>');
    expect(text[259]).toBe('\u2581');
    expect(v.types[3]).toBe(TokenType.BYTE);
  });

  it('refuse shapes that are not a Llama', () => {
    expect(() => randomGguf({ ...shape, heads: 3 })).toThrow(/heads \(3\) must divide dim \(64\)/);
    expect(() => randomGguf({ ...shape, kvHeads: 3 })).toThrow(/kv heads \(3\) must divide heads \(4\)/);
    expect(() => randomGguf({ ...shape, vocabSize: 100 })).toThrow(/vocab must be at least 260/);
    expect(() => randomGguf({ ...shape, dim: 60, heads: 4 })).toThrow(/head dimension dim \/ heads = 15 must be even/);
    expect(() => randomGguf({ ...shape, type: 'q5_k' as 'f32' })).toThrow(/type must be one of f32, f16, q8_0, q4_0/);
  });
});

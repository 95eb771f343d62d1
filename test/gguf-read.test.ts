// The GGUF reader: converted files read back (structure, the llama model, the tokenizer), and
// malformed, truncated or hostile files refused with TypeError/RangeError naming what is wrong.
import { describe, expect, it } from 'vitest';
import { convertToGguf, randomGgufContents } from '../src/gguf/convert';
import { TENSOR_TYPES } from '../src/gguf/format';
import { parseGguf, shortestDecimal } from '../src/gguf/model';
import { readGguf } from '../src/gguf/read';
import { writeGguf, type GgufContents, type MetadataInput, type TensorToWrite } from '../src/gguf/write';
import { Tokenizer } from '../src/llama2c/index';
import { loadModel, modelBytes, validationText } from './llama2c-helpers';

const SMALL = { dim: 64, heads: 4, kvHeads: 2, layers: 2, context: 128, vocabSize: 300, seed: 3 };

/** A small valid llama GGUF's contents, to be altered. */
function small(type: 'f32' | 'q8_0' | 'q4_0' | 'f16' = 'f32'): GgufContents {
  return randomGgufContents({ ...SMALL, type });
}

function withMetadata(c: GgufContents, change: (entries: [string, MetadataInput][]) => [string, MetadataInput][]): Uint8Array {
  return writeGguf({ ...c, metadata: change(c.metadata.map(([k, v]) => [k, v] as [string, MetadataInput])) });
}

function set(key: string, value: MetadataInput) {
  return (entries: [string, MetadataInput][]) => {
    const i = entries.findIndex(([k]) => k === key);
    if (i >= 0) entries[i] = [key, value];
    else entries.push([key, value]);
    return entries;
  };
}

function drop(key: string) {
  return (entries: [string, MetadataInput][]) => entries.filter(([k]) => k !== key);
}

function withTensors(c: GgufContents, change: (tensors: TensorToWrite[]) => TensorToWrite[]): Uint8Array {
  return writeGguf({ ...c, tensors: change([...c.tensors]) });
}

/** Offset of the tensor info of `name` in the header (the u64 length before its name). */
function tensorInfoAt(bytes: Uint8Array, name: string): number {
  const needle = new TextEncoder().encode(name);
  for (let i = 8; i + needle.length <= bytes.length; i++) {
    if (needle.every((b, j) => bytes[i + j] === b) && new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(i - 8, true) === BigInt(needle.length)) {
      // names also appear as metadata values; a tensor info follows its name with n_dims (1..4)
      const nDims = new DataView(bytes.buffer, bytes.byteOffset).getUint32(i + needle.length, true);
      if (nDims >= 1 && nDims <= 4) return i - 8;
    }
  }
  throw new Error(`no tensor info for ${name}`);
}

/** Patches the tensor info of `name`: its type (u32) and/or its data offset (u64). */
function patchTensor(bytes: Uint8Array, name: string, patch: { type?: number; offset?: number; dim0?: number; nDims?: number }): Uint8Array {
  const b = bytes.slice();
  const view = new DataView(b.buffer);
  const at = tensorInfoAt(b, name) + 8 + name.length;
  const nDims = view.getUint32(at, true);
  if (patch.nDims !== undefined) view.setUint32(at, patch.nDims, true);
  if (patch.dim0 !== undefined) view.setBigUint64(at + 4, BigInt(patch.dim0), true);
  const typeAt = at + 4 + 8 * nDims;
  if (patch.type !== undefined) view.setUint32(typeAt, patch.type, true);
  if (patch.offset !== undefined) view.setBigUint64(typeAt + 4, BigInt(patch.offset), true);
  return b;
}

/** Sets the u32 value of the metadata key `key` (which must be a uint32) in the bytes. */
function patchValue(bytes: Uint8Array, key: string, value: number): Uint8Array {
  const b = bytes.slice();
  const needle = new TextEncoder().encode(key);
  for (let i = 24; i + needle.length < b.length; i++) {
    if (needle.every((x, j) => b[i + j] === x)) {
      new DataView(b.buffer).setUint32(i + needle.length + 4, value, true);
      return b;
    }
  }
  throw new Error(`no key ${key}`);
}

function refuses(bytes: unknown, type: typeof TypeError | typeof RangeError, message: RegExp): void {
  let error: unknown;
  try {
    parseGguf(bytes as Uint8Array);
  } catch (e) {
    error = e;
  }
  expect(error, `expected ${type.name} ${message}`).toBeInstanceOf(type);
  expect((error as Error).message).toMatch(message);
}

describe('readGguf: the structure of a converted file', () => {
  it('metadata with their types, tensor infos, alignment and the data offset', () => {
    const { model, tokenizer } = loadModel('stories260K.bin', 'tok512.bin');
    const f = readGguf(convertToGguf(model, tokenizer, { type: 'q8_0' }));
    expect(f.version).toBe(3);
    expect(f.alignment).toBe(32);
    expect(f.dataOffset % 32).toBe(0);
    expect(f.metadata.get('general.architecture')).toEqual({ type: 'string', value: 'llama' });
    expect(f.metadata.get('llama.block_count')).toEqual({ type: 'uint32', value: 5 });
    expect(f.metadata.get('tokenizer.ggml.add_bos_token')).toEqual({ type: 'bool', value: true });
    const tokens = f.metadata.get('tokenizer.ggml.tokens');
    expect(tokens?.type === 'array' && tokens.itemType === 'string' && tokens.value.text(259 + 1)).toBeTruthy();
    const q = f.tensors.find((t) => t.name === 'blk.0.attn_q.weight')!;
    expect(q.dims).toEqual([64, 64]);
    expect(q.type).toBe(TENSOR_TYPES.Q8_0);
    expect(q.byteLength).toBe((64 * 64 / 32) * 34);
    expect((q.offset - f.dataOffset) % 32).toBe(0);
    expect(f.tensors.find((t) => t.name === 'blk.4.ffn_down.weight')!.type).toBe(TENSOR_TYPES.F16);
  });

  it('f32 metadata as the shortest decimal that rounds to them', () => {
    expect(shortestDecimal(Math.fround(1e-5))).toBe(1e-5);
    expect(shortestDecimal(Math.fround(1e-6))).toBe(1e-6);
    expect(shortestDecimal(10000)).toBe(10000);
    expect(shortestDecimal(Math.fround(0.1))).toBe(0.1);
  });
});

describe('parseGguf: the llama model and its tokenizer', () => {
  it('stories3M: the config and format of the llama2.c file, weights of the chosen type', () => {
    const { model, tokenizer } = loadModel('stories3M.f32.bin', 'tok4096.bin');
    const f32 = parseGguf(convertToGguf(model, tokenizer));
    expect(f32.model.config).toEqual({ ...model.config, rmsEps: 1e-5, ropeTheta: 10000 });
    expect(f32.model.format).toEqual({ version: 'gguf', weights: 'f32' });
    expect(f32.model.layers[2]!.w2.kind).toBe('f32');
    expect(f32.model.classifier).toBe(f32.model.tokenEmbedding);
    const q4 = parseGguf(convertToGguf(model, tokenizer, { type: 'q4_0' }));
    expect(q4.model.format).toEqual({ version: 'gguf', weights: 'q4_0' });
    expect(q4.model.layers[0]!.wk).toMatchObject({ kind: 'ggml', type: 'Q4_0', rows: 64, cols: 192, rowBytes: 6 * 18 });
    expect(q4.model.rmsFinal).toEqual(model.rmsFinal);
  });

  it('the tokenizer from the metadata encodes the validation text to the ids of tok4096.bin, and decodes them back', () => {
    const bin = Tokenizer.fromBytes(modelBytes('tok4096.bin'), 4096);
    const { model } = loadModel('stories3M.f32.bin', 'tok4096.bin');
    const { tokenizer } = parseGguf(convertToGguf(model, bin, { type: 'q8_0' }));
    const text = validationText();
    const want = bin.encode(text, { bos: true, eos: true });
    const got = tokenizer.encode(text, { bos: true, eos: true });
    expect(got.length).toBe(want.length);
    expect(got.length).toBeGreaterThan(200_000);
    let first = -1;
    for (let i = 0; i < want.length && first < 0; i++) if (got[i] !== want[i]) first = i;
    expect(first, 'first differing id').toBe(-1);
    for (const paragraph of text.split(/\n\s*\n/).slice(0, 50)) {
      expect(tokenizer.encode(paragraph)).toEqual(bin.encode(paragraph));
    }
    expect(tokenizer.decodeAll(want.slice(0, 300))).toBe(bin.decodeAll(want.slice(0, 300)));
    expect(tokenizer.decodeAll(tokenizer.encode('Ünïcode ☃ and\ttabs'))).toBe('Ünïcode ☃ and\ttabs');
    // Control tokens are never produced from text, and decode to nothing.
    expect(tokenizer.encode('<s></s><unk>')).toEqual(bin.encode('<s></s><unk>').filter((id) => id > 2));
    expect(tokenizer.decode(5, 2)).toBe('');
  });

  it('stories260K with tok512: the same ids too', () => {
    const { model, tokenizer: bin } = loadModel('stories260K.bin', 'tok512.bin');
    const { tokenizer } = parseGguf(convertToGguf(model, bin));
    const text = validationText().slice(0, 100_000);
    expect(tokenizer.encode(text)).toEqual(bin.encode(text));
  });
});

describe('parseGguf refuses malformed, truncated and hostile files', () => {
  const valid = writeGguf(small());

  it('not bytes, not GGUF, other versions', () => {
    refuses('x', TypeError, /expected the file as a Uint8Array, got "x"/);
    refuses(valid.buffer, TypeError, /an ArrayBuffer/);
    refuses(valid.subarray(0, 5), RangeError, /truncated file: 5 bytes/);
    refuses(new Uint8Array(100).fill(7), RangeError, /not a GGUF file: it starts with the bytes 07 07 07 07, expected 47 47 55 46/);
    const v = (n: number, littleEndian = true) => {
      const b = valid.slice();
      new DataView(b.buffer).setUint32(4, n, littleEndian);
      return b;
    };
    refuses(v(1), RangeError, /GGUF version 1 .* is not read; expected version 2 or 3/);
    refuses(v(3, false), RangeError, /big-endian GGUF file/);
    refuses(v(4), RangeError, /unknown GGUF version 4/);
    expect(() => parseGguf(v(2))).not.toThrow(); // v2 has the same layout
  });

  it('counts and lengths past the end of the file, before allocating for them', () => {
    const b = valid.slice();
    const view = new DataView(b.buffer);
    view.setBigUint64(16, 2n ** 40n, true);
    refuses(b, RangeError, /claims 1099511627776 metadata entries .* but the file has \d+ bytes after the header/);
    view.setBigUint64(16, 2n ** 63n, true);
    refuses(b, RangeError, /the metadata count at offset 16 is 9223372036854775808, past any file/);
    view.setBigUint64(16, BigInt(new DataView(valid.buffer).getBigUint64(16, true)), true);
    view.setBigUint64(8, 10n ** 9n, true);
    refuses(b, RangeError, /claims 1000000000 tensors/);
    // The first key's length (the u64 at 24).
    const k = valid.slice();
    new DataView(k.buffer).setBigUint64(24, 10n ** 12n, true);
    refuses(k, RangeError, /the key of metadata entry 0 at offset 24 claims 1000000000000 bytes, but only \d+ bytes are left/);
    for (const n of [valid.length - 1, 30, 200, Math.floor(valid.length / 2)]) {
      expect(() => parseGguf(valid.subarray(0, n)), `truncated to ${n}`).toThrow(RangeError);
    }
  });

  it('metadata: unknown value types, arrays of arrays, huge arrays, bad bools, duplicate keys, bad alignment', () => {
    refuses(patchValue(valid, 'general.alignment', 48), RangeError, /general.alignment must be a power of two, got 48/);
    refuses(patchValue(valid, 'general.alignment', 0), RangeError, /general.alignment must be a power of two, got 0/);
    const wide = writeGguf({ metadata: [['general.alignmenT', { type: 'uint64', value: 32 }]], tensors: [] });
    wide[24 + 8 + 'general.alignment'.length - 1] = 't'.charCodeAt(0); // the writer refuses this key as a uint64
    expect(() => readGguf(wide)).toThrow(/general.alignment must be a uint32, got a uint64/);
    // Patch the value type of the first key ("general.architecture", a string) to 13, 9 (array of …).
    const keyLength = Number(new DataView(valid.buffer).getBigUint64(24, true));
    const typeAt = 32 + keyLength;
    const b = valid.slice();
    new DataView(b.buffer).setUint32(typeAt, 13, true);
    refuses(b, RangeError, /metadata "general.architecture" at offset \d+ has value type 13; the GGUF value types are 0 to 12/);
    const arr = writeGguf({ metadata: [['x', { type: 'array', itemType: 'uint8', value: [1] }]], tensors: [] });
    const nested = arr.slice();
    new DataView(nested.buffer).setUint32(24 + 8 + 1 + 4, 9, true); // the item type
    expect(() => readGguf(nested)).toThrow(/is an array of arrays/);
    const huge = arr.slice();
    new DataView(huge.buffer).setBigUint64(24 + 8 + 1 + 8, 2n ** 50n, true); // the count
    expect(() => readGguf(huge)).toThrow(/claims 1125899906842624 items of type uint8 .* but only \d+ bytes are left/);
    const bool = writeGguf({ metadata: [['b', { type: 'bool', value: true }]], tensors: [] });
    bool[24 + 8 + 1 + 4] = 2; // after the key "b" and its type
    expect(() => readGguf(bool)).toThrow(/is a bool of value 2; expected 0 or 1/);
    const twice = writeGguf({ metadata: [['a', { type: 'uint8', value: 1 }], ['b', { type: 'uint8', value: 2 }]], tensors: [] });
    twice[24 + 8] = 'a'.charCodeAt(0) + 1; // rename a to b
    expect(() => readGguf(twice)).toThrow(/metadata key "b" appears twice/);
  });

  it('tensors: unknown and unsupported types by name, bad dimensions, unaligned, overlapping or out-of-file data', () => {
    const name = 'blk.0.attn_q.weight';
    refuses(patchTensor(valid, name, { type: 12 }), RangeError, /tensor blk.0.attn_q.weight has type Q4_K \(ggml type 12\), which this runner does not support; it runs F32, F16, Q8_0 and Q4_0/);
    refuses(patchTensor(valid, name, { type: 30 }), RangeError, /has type BF16 \(ggml type 30\)/);
    refuses(patchTensor(valid, name, { type: 99 }), RangeError, /has ggml type 99, which is not a ggml type/);
    const q8 = writeGguf(small('q8_0'));
    refuses(patchTensor(q8, name, { dim0: 48 }), RangeError, /is Q8_0 with ne\[0\] = 48, not a multiple of its block of 32/);
    refuses(patchTensor(valid, name, { dim0: 0 }), RangeError, /has dimension 0 of size 0/);
    refuses(patchTensor(valid, name, { dim0: 2 ** 40 }), RangeError, /has more elements than a \d+-byte file can hold/);
    refuses(patchTensor(valid, name, { nDims: 0 }), RangeError, /has 0 dimensions; expected 1 to 4/);
    refuses(patchTensor(valid, name, { nDims: 5 }), RangeError, /has 5 dimensions; expected 1 to 4/);
    refuses(patchTensor(valid, name, { offset: 36 }), RangeError, /data offset 36, not a multiple of the alignment 32/);
    refuses(patchTensor(valid, name, { offset: 0 }), RangeError, /tensors token_embd.weight \(data offset 0, \d+ bytes\) and blk.0.attn_q.weight \(data offset 0\) overlap/);
    refuses(patchTensor(valid, name, { offset: 2 ** 40 }), RangeError, /truncated file: tensor blk.0.attn_q.weight .* past the end/);
    refuses(valid.subarray(0, valid.length - 4), RangeError, /truncated file: tensor output.weight/);
  });

  it('the llama architecture: missing or mistyped keys name themselves; shapes must match the metadata', () => {
    const c = small();
    refuses(withMetadata(c, set('general.architecture', { type: 'string', value: 'qwen2' })), RangeError, /general.architecture is "qwen2"; this runner runs "llama"/);
    refuses(withMetadata(c, drop('general.architecture')), RangeError, /the metadata key general.architecture \(a string\) is missing/);
    refuses(withMetadata(c, drop('llama.embedding_length')), RangeError, /the metadata key llama.embedding_length \(an integer \(uint32\)\) is missing/);
    refuses(withMetadata(c, set('llama.block_count', { type: 'string', value: '2' })), TypeError, /llama.block_count must be an integer \(uint32\), got a string/);
    refuses(withMetadata(c, set('llama.attention.layer_norm_rms_epsilon', { type: 'uint32', value: 0 })), TypeError, /layer_norm_rms_epsilon must be a float32, got a uint32/);
    refuses(withMetadata(c, set('llama.attention.head_count_kv', { type: 'uint32', value: 4 })), RangeError, /the tensor blk.0.attn_k.weight has shape \[64, 32\], expected \[64, 64\]/);
    refuses(withMetadata(c, set('llama.attention.head_count', { type: 'uint32', value: 3 })), RangeError, /head_count \(3\) must divide llama.embedding_length \(64\)/);
    refuses(withMetadata(c, set('llama.rope.dimension_count', { type: 'uint32', value: 8 })), RangeError, /dimension_count is 8, not the head dimension 16; partial RoPE is not supported/);
    refuses(withMetadata(c, set('llama.vocab_size', { type: 'uint32', value: 301 })), RangeError, /llama.vocab_size is 301, but token_embd.weight has 300 rows/);
    refuses(withMetadata(c, set('llama.rope.scaling.type', { type: 'string', value: 'yarn' })), RangeError, /rope.scaling.type is "yarn"/);
    refuses(withTensors(c, (t) => t.filter((x) => x.name !== 'blk.1.ffn_up.weight')), RangeError, /the tensor blk.1.ffn_up.weight is missing/);
    refuses(withTensors(c, (t) => [...t, { name: 'blk.0.attn_q.bias', dims: [64], type: TENSOR_TYPES.F32, fill: () => {} }]), RangeError, /tensors that this runner's llama architecture does not use: blk.0.attn_q.bias/);
    refuses(withTensors(c, (t) => t.map((x) => (x.name === 'blk.0.ffn_down.weight' ? { ...x, dims: [x.dims[1]!, x.dims[0]!] } : x))), RangeError, /blk.0.ffn_down.weight has shape \[64, 256\], expected \[256, 64\] \(feed_forward_length × embedding_length/);
    refuses(withTensors(c, (t) => t.map((x) => (x.name === 'output_norm.weight' ? { ...x, type: TENSOR_TYPES.Q8_0, dims: [64] } : x))), RangeError, /the norm weights output_norm.weight are Q8_0; expected F32 or F16/);
  });

  it('the tokenizer: SentencePiece (llama) only, in the Llama layout', () => {
    const c = small();
    refuses(withMetadata(c, set('tokenizer.ggml.model', { type: 'string', value: 'gpt2' })), RangeError, /tokenizer.ggml.model is "gpt2"; this runner's tokenizer is SentencePiece's, "llama"/);
    refuses(withMetadata(c, drop('tokenizer.ggml.scores')), RangeError, /the metadata key tokenizer.ggml.scores \(an array of float32\) is missing/);
    refuses(withMetadata(c, set('tokenizer.ggml.scores', { type: 'array', itemType: 'float64', value: new Float64Array(300) })), TypeError, /tokenizer.ggml.scores must be an array of float32, got an array of float64/);
    refuses(withMetadata(c, set('tokenizer.ggml.bos_token_id', { type: 'uint32', value: 7 })), RangeError, /bos_token_id is 7; this runner's tokenizer needs SentencePiece's Llama layout/);
    refuses(withMetadata(c, set('tokenizer.ggml.scores', { type: 'array', itemType: 'float32', value: new Float32Array(299) })), RangeError, /has 299 scores for 300 tokens/);
    const tokens = Array.from({ length: 300 }, (_, i) => (i === 10 ? 'x' : `t${i}`));
    refuses(withMetadata(c, set('tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: tokens })), RangeError, /token 3 is "t3" of type 6; this runner's byte fallback needs the byte pieces <0x00>..<0xFF>/);
  });
});

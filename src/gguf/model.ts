// A GGUF file of the `llama` architecture as a LlamaModel and its Tokenizer, for LlamaRunner.
//
// What is read (llama.cpp's names; convert.ts writes the same):
//   general.architecture = "llama"
//   llama.context_length, embedding_length, block_count, feed_forward_length, attention.head_count,
//   attention.layer_norm_rms_epsilon                                                      required
//   llama.attention.head_count_kv (default head_count), rope.dimension_count (must be the head
//   dimension: partial RoPE is not run), rope.freq_base (default 10000), vocab_size   optional
//   tokenizer.ggml.model = "llama" (SentencePiece), tokens, scores, token_type (optional),
//   bos/eos/unknown_token_id (if given: 1, 2, 0)
//   tensors: token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate,
//   ffn_down, ffn_up}, output_norm, output (optional: the embedding is reused), each of the shape
//   the metadata implies (ggml order, see convert.ts) — any other tensor is refused by name.
//
// F32 matrices become the same F32Matrix a llama2.c file gives (views into the bytes where aligned),
// so an F32 GGUF runs the llama2.c float64 path exactly; F16, Q8_0 and Q4_0 stay in their blocks
// (GgmlMatrix), which LlamaRunner multiplies in wasm. f32 metadata values are read as the shortest
// decimal that rounds to them, so the file's 1e-5 (an f32) is llama2.c's 1e-5 (a double).
//
// The tokenizer is llama2.c's (Tokenizer.fromPieces): same algorithm, so the ids equal those of the
// tokenizer.bin the file was converted from. It needs SentencePiece's Llama layout: <unk> 0,
// <s> 1, </s> 2, the byte pieces <0x00>..<0xFF> at 3..258; other layouts are refused.

import type { LlamaConfig, LlamaLayerWeights, LlamaModel } from '../llama2c/checkpoint';
import type { F32Matrix, GgmlMatrix, Matrix } from '../llama2c/matrix';
import { Tokenizer } from '../llama2c/tokenizer';
import { TENSOR_NAMES, TokenType, type MetadataValue, type StringArray } from './format';
import { decodeF16 } from './quants';
import { readGguf, type GgufFile, type GgufTensorInfo } from './read';

const WHERE = 'parseGguf';
const INTEGER_TYPES = new Set(['uint8', 'int8', 'uint16', 'int16', 'uint32', 'int32', 'uint64', 'int64']);

export interface GgufModel {
  model: LlamaModel;
  tokenizer: Tokenizer;
  /** The file's structure: metadata and tensor infos. */
  file: GgufFile;
}

function expected(key: string, want: string, got: MetadataValue | undefined): never {
  if (got === undefined) throw new RangeError(`${WHERE}: the metadata key ${key} (${want}) is missing`);
  const type = got.type === 'array' ? `an array of ${got.itemType}` : `a ${got.type}`;
  throw new TypeError(`${WHERE}: the metadata key ${key} must be ${want}, got ${type}`);
}

class Metadata {
  constructor(private readonly map: ReadonlyMap<string, MetadataValue>) {}

  has(key: string): boolean {
    return this.map.has(key);
  }

  integer(key: string, fallback?: number): number {
    const v = this.map.get(key);
    if (v === undefined && fallback !== undefined) return fallback;
    if (v === undefined || !INTEGER_TYPES.has(v.type)) return expected(key, 'an integer (uint32)', v);
    const n = Number(v.value);
    if (!Number.isSafeInteger(n) || n < 0 || n > 2 ** 31 - 1) throw new RangeError(`${WHERE}: the metadata key ${key} must be an integer from 0 to 2^31 - 1, got ${v.value}`);
    return n;
  }

  float(key: string, fallback?: number): number {
    const v = this.map.get(key);
    if (v === undefined && fallback !== undefined) return fallback;
    if (v === undefined || (v.type !== 'float32' && v.type !== 'float64')) return expected(key, 'a float32', v);
    if (!Number.isFinite(v.value)) throw new RangeError(`${WHERE}: the metadata key ${key} must be finite, got ${v.value}`);
    return v.type === 'float32' ? shortestDecimal(v.value) : v.value;
  }

  string(key: string, fallback?: string): string {
    const v = this.map.get(key);
    if (v === undefined && fallback !== undefined) return fallback;
    if (v === undefined || v.type !== 'string') return expected(key, 'a string', v);
    return v.value;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.map.get(key);
    if (v === undefined) return fallback;
    if (v.type !== 'bool') return expected(key, 'a bool', v);
    return v.value;
  }

  strings(key: string): StringArray {
    const v = this.map.get(key);
    if (v?.type !== 'array' || v.itemType !== 'string') return expected(key, 'an array of strings', v);
    return v.value;
  }

  floats(key: string): Float32Array {
    const v = this.map.get(key);
    if (v?.type !== 'array' || v.itemType !== 'float32') return expected(key, 'an array of float32', v);
    return v.value as Float32Array;
  }

  integers(key: string): Int32Array | undefined {
    const v = this.map.get(key);
    if (v === undefined) return undefined;
    if (v.type !== 'array' || v.itemType !== 'int32') return expected(key, 'an array of int32', v);
    return v.value as Int32Array;
  }
}

/** The shortest decimal that rounds to the f32 `x` (what a C or Python writer of the file meant). */
export function shortestDecimal(x: number): number {
  for (let digits = 1; digits <= 9; digits++) {
    const d = Number(x.toPrecision(digits));
    if (Math.fround(d) === x) return d;
  }
  return x;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function f32Data(file: GgufFile, t: GgufTensorInfo): Float32Array {
  const at = file.bytes.byteOffset + t.offset;
  if (LITTLE_ENDIAN && at % 4 === 0) return new Float32Array(file.bytes.buffer, at, t.elements);
  const view = new DataView(file.bytes.buffer, at, t.byteLength);
  const out = new Float32Array(t.elements);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
  return out;
}

/** The tensor's ne without trailing 1s (a [n, 1] tensor is a vector). */
function shapeOf(t: GgufTensorInfo): number[] {
  const dims = [...t.dims];
  while (dims.length > 1 && dims[dims.length - 1] === 1) dims.pop();
  return dims;
}

class Tensors {
  private readonly byName: Map<string, GgufTensorInfo>;
  private readonly used = new Set<string>();

  constructor(private readonly file: GgufFile) {
    this.byName = new Map(file.tensors.map((t) => [t.name, t]));
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  private take(name: string, shape: number[], meaning: string): GgufTensorInfo {
    const t = this.byName.get(name);
    if (!t) throw new RangeError(`${WHERE}: the tensor ${name} is missing (a llama model has it: ${meaning})`);
    const got = shapeOf(t);
    if (got.length !== shape.length || got.some((d, i) => d !== shape[i])) {
      throw new RangeError(`${WHERE}: the tensor ${name} has shape [${got.join(', ')}], expected [${shape.join(', ')}] (${meaning}, from the metadata)`);
    }
    this.used.add(name);
    return t;
  }

  /** A norm vector as f32 (F32 or F16 in the file). */
  vector(name: string, n: number, meaning: string): Float32Array {
    const t = this.take(name, [n], meaning);
    if (t.type.name === 'F32') return f32Data(this.file, t);
    if (t.type.name === 'F16') {
      const out = new Float32Array(n);
      decodeF16(this.file.bytes, t.offset, n, out);
      return out;
    }
    throw new RangeError(`${WHERE}: the norm weights ${name} are ${t.type.name}; expected F32 or F16`);
  }

  /** A [rows][cols] matrix, ne = [cols, rows]. */
  matrix(name: string, rows: number, cols: number, meaning: string): Matrix {
    const t = this.take(name, [cols, rows], meaning);
    if (t.type.name === 'F32') return { kind: 'f32', rows, cols, data: f32Data(this.file, t) } satisfies F32Matrix;
    return {
      kind: 'ggml', type: t.type.name, rows, cols,
      rowBytes: t.byteLength / rows,
      data: this.file.bytes.subarray(t.offset, t.offset + t.byteLength),
    } satisfies GgmlMatrix;
  }

  checkAllUsed(): void {
    const extra = this.file.tensors.filter((t) => !this.used.has(t.name)).map((t) => t.name);
    if (extra.length > 0) {
      throw new RangeError(`${WHERE}: the file has tensors that this runner's llama architecture does not use: ${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ` and ${extra.length - 5} more` : ''}`);
    }
  }
}

const SPACE = 0x20;

/** A GGUF token as llama2.c's tokenizer holds it: SentencePiece's "▁" (E2 96 81) as a space. */
function unescapeSpaces(piece: Uint8Array): Uint8Array {
  let n = 0;
  for (let i = 0; i + 2 < piece.length; i++) if (piece[i] === 0xe2 && piece[i + 1] === 0x96 && piece[i + 2] === 0x81) n++;
  if (n === 0) return piece.slice();
  const out = new Uint8Array(piece.length - 2 * n);
  let o = 0;
  for (let i = 0; i < piece.length; i++) {
    if (piece[i] === 0xe2 && piece[i + 1] === 0x96 && piece[i + 2] === 0x81) {
      out[o++] = SPACE;
      i += 2;
    } else {
      out[o++] = piece[i]!;
    }
  }
  return out;
}

function readTokenizer(meta: Metadata, vocabSize: number): Tokenizer {
  const model = meta.string('tokenizer.ggml.model');
  if (model !== 'llama') {
    throw new RangeError(`${WHERE}: tokenizer.ggml.model is ${JSON.stringify(model)}; this runner's tokenizer is SentencePiece's, "llama" (byte-pair tokenizers such as "gpt2" are not supported)`);
  }
  if (!meta.bool('tokenizer.ggml.add_space_prefix', true)) throw new RangeError(`${WHERE}: tokenizer.ggml.add_space_prefix is false; this runner's tokenizer always adds the leading space`);
  const tokens = meta.strings('tokenizer.ggml.tokens');
  const scores = meta.floats('tokenizer.ggml.scores');
  const types = meta.integers('tokenizer.ggml.token_type');
  if (tokens.length !== vocabSize) throw new RangeError(`${WHERE}: tokenizer.ggml.tokens has ${tokens.length} tokens, but token_embd.weight has ${vocabSize} rows`);
  if (scores.length !== vocabSize) throw new RangeError(`${WHERE}: tokenizer.ggml.scores has ${scores.length} scores for ${vocabSize} tokens`);
  if (types && types.length !== vocabSize) throw new RangeError(`${WHERE}: tokenizer.ggml.token_type has ${types.length} entries for ${vocabSize} tokens`);
  for (const [key, id] of [['tokenizer.ggml.unknown_token_id', 0], ['tokenizer.ggml.bos_token_id', 1], ['tokenizer.ggml.eos_token_id', 2]] as const) {
    if (meta.has(key) && meta.integer(key) !== id) {
      throw new RangeError(`${WHERE}: ${key} is ${meta.integer(key)}; this runner's tokenizer needs SentencePiece's Llama layout (<unk> 0, <s> 1, </s> 2)`);
    }
  }
  if (vocabSize < 259) throw new RangeError(`${WHERE}: the vocabulary has ${vocabSize} tokens; the Llama layout needs at least 259 (<unk>, <s>, </s> and the 256 byte pieces)`);
  for (let b = 0; b < 256; b++) {
    const id = b + 3;
    const want = `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
    const got = tokens.text(id);
    if (got !== want || (types && types[id] !== TokenType.BYTE)) {
      throw new RangeError(`${WHERE}: token ${id} is ${JSON.stringify(got)}${types ? ` of type ${types[id]}` : ''}; this runner's byte fallback needs the byte pieces <0x00>..<0xFF> (type BYTE, 6) at ids 3..258, here ${want}`);
    }
  }
  const pieces: Uint8Array[] = [];
  const special = new Set<number>();
  for (let id = 0; id < vocabSize; id++) {
    const type = types?.[id] ?? TokenType.NORMAL;
    if (type === TokenType.CONTROL || type === TokenType.UNKNOWN || type === TokenType.UNUSED) special.add(id);
    pieces.push(type === TokenType.BYTE ? tokens.bytes(id).slice() : unescapeSpaces(tokens.bytes(id)));
  }
  return Tokenizer.fromPieces(pieces, scores, special);
}

/** The type most matrices of the model have. */
function mostCommonType(matrices: Matrix[]): LlamaModel['format']['weights'] {
  const counts = new Map<string, number>();
  for (const m of matrices) {
    const t = m.kind === 'ggml' ? m.type.toLowerCase() : 'f32';
    counts.set(t, (counts.get(t) ?? 0) + 1);
  }
  return [...counts].sort((a, b) => b[1] - a[1])[0]![0] as LlamaModel['format']['weights'];
}

/**
 * Reads a GGUF file of the `llama` architecture: the model (its weights are views into `bytes`:
 * do not modify them afterwards) and the tokenizer from its metadata. Throws TypeError/RangeError
 * on a malformed file, another architecture, a tensor type other than F32/F16/Q8_0/Q4_0, a missing
 * or mistyped key (named), or tensors whose shapes do not match the metadata.
 */
export function parseGguf(bytes: Uint8Array): GgufModel {
  const file = readGguf(bytes);
  const meta = new Metadata(file.metadata);
  const architecture = meta.string('general.architecture');
  if (architecture !== 'llama') throw new RangeError(`${WHERE}: general.architecture is ${JSON.stringify(architecture)}; this runner runs "llama"`);
  const scaling = meta.string('llama.rope.scaling.type', 'none');
  if (scaling !== 'none') throw new RangeError(`${WHERE}: llama.rope.scaling.type is ${JSON.stringify(scaling)}; this runner runs plain RoPE only`);
  const dim = meta.integer('llama.embedding_length');
  const layers = meta.integer('llama.block_count');
  const hiddenDim = meta.integer('llama.feed_forward_length');
  const heads = meta.integer('llama.attention.head_count');
  const kvHeads = meta.integer('llama.attention.head_count_kv', heads);
  const seqLen = meta.integer('llama.context_length');
  const rmsEps = meta.float('llama.attention.layer_norm_rms_epsilon');
  const ropeTheta = meta.float('llama.rope.freq_base', 10000);
  for (const [key, v] of [['embedding_length', dim], ['block_count', layers], ['feed_forward_length', hiddenDim], ['attention.head_count', heads], ['attention.head_count_kv', kvHeads], ['context_length', seqLen]] as const) {
    if (v < 1) throw new RangeError(`${WHERE}: llama.${key} must be positive, got ${v}`);
  }
  if (dim % heads !== 0) throw new RangeError(`${WHERE}: llama.attention.head_count (${heads}) must divide llama.embedding_length (${dim})`);
  if (heads % kvHeads !== 0) throw new RangeError(`${WHERE}: llama.attention.head_count_kv (${kvHeads}) must divide llama.attention.head_count (${heads})`);
  const headDim = dim / heads;
  if (headDim % 2 !== 0) throw new RangeError(`${WHERE}: the head dimension embedding_length / head_count = ${headDim} must be even (RoPE rotates pairs)`);
  const ropeDims = meta.integer('llama.rope.dimension_count', headDim);
  if (ropeDims !== headDim) throw new RangeError(`${WHERE}: llama.rope.dimension_count is ${ropeDims}, not the head dimension ${headDim}; partial RoPE is not supported`);
  if (!(rmsEps > 0)) throw new RangeError(`${WHERE}: llama.attention.layer_norm_rms_epsilon must be positive, got ${rmsEps}`);
  if (!(ropeTheta > 0)) throw new RangeError(`${WHERE}: llama.rope.freq_base must be positive, got ${ropeTheta}`);

  const tensors = new Tensors(file);
  const embedding = file.tensors.find((t) => t.name === TENSOR_NAMES.tokenEmbedding);
  if (!embedding) throw new RangeError(`${WHERE}: the tensor ${TENSOR_NAMES.tokenEmbedding} is missing (a llama model has it: the token embedding)`);
  const vocabSize = shapeOf(embedding)[1] ?? 1;
  if (meta.has('llama.vocab_size') && meta.integer('llama.vocab_size') !== vocabSize) {
    throw new RangeError(`${WHERE}: llama.vocab_size is ${meta.integer('llama.vocab_size')}, but ${TENSOR_NAMES.tokenEmbedding} has ${vocabSize} rows`);
  }
  const kvDim = kvHeads * headDim;
  const tokenEmbedding = tensors.matrix(TENSOR_NAMES.tokenEmbedding, vocabSize, dim, 'the token embedding, embedding_length × vocabulary');
  const layerWeights: LlamaLayerWeights[] = [];
  for (let l = 0; l < layers; l++) {
    layerWeights.push({
      rmsAtt: tensors.vector(TENSOR_NAMES.attnNorm(l), dim, 'embedding_length'),
      wq: tensors.matrix(TENSOR_NAMES.attnQ(l), dim, dim, 'embedding_length × embedding_length'),
      wk: tensors.matrix(TENSOR_NAMES.attnK(l), kvDim, dim, 'embedding_length × head_count_kv·head dimension'),
      wv: tensors.matrix(TENSOR_NAMES.attnV(l), kvDim, dim, 'embedding_length × head_count_kv·head dimension'),
      wo: tensors.matrix(TENSOR_NAMES.attnOutput(l), dim, dim, 'embedding_length × embedding_length'),
      rmsFfn: tensors.vector(TENSOR_NAMES.ffnNorm(l), dim, 'embedding_length'),
      w1: tensors.matrix(TENSOR_NAMES.ffnGate(l), hiddenDim, dim, 'embedding_length × feed_forward_length'),
      w2: tensors.matrix(TENSOR_NAMES.ffnDown(l), dim, hiddenDim, 'feed_forward_length × embedding_length'),
      w3: tensors.matrix(TENSOR_NAMES.ffnUp(l), hiddenDim, dim, 'embedding_length × feed_forward_length'),
    });
  }
  const rmsFinal = tensors.vector(TENSOR_NAMES.outputNorm, dim, 'embedding_length');
  const sharedClassifier = !tensors.has(TENSOR_NAMES.output);
  const classifier = sharedClassifier ? tokenEmbedding : tensors.matrix(TENSOR_NAMES.output, vocabSize, dim, 'the classifier, embedding_length × vocabulary');
  tensors.checkAllUsed();
  const tokenizer = readTokenizer(meta, vocabSize);

  const config: LlamaConfig = { dim, hiddenDim, layers, heads, kvHeads, vocabSize, seqLen, headDim, sharedClassifier, rmsEps, ropeTheta };
  const matrices = layerWeights.flatMap((w) => [w.wq, w.wk, w.wv, w.wo, w.w1, w.w2, w.w3]);
  const model: LlamaModel = {
    config,
    format: { version: 'gguf', weights: mostCommonType(matrices) },
    tokenEmbedding,
    layers: layerWeights,
    rmsFinal,
    classifier,
  };
  return { model, tokenizer, file };
}

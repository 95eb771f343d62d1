// llama2.c models as GGUF files of the `llama` architecture, as llama.cpp loads them; and seeded
// random-weight models of a given shape (for timing: same shape, same cost, no trained weights).
//
// What goes where (llama2.c → GGUF):
//   token_embedding [V][dim]  → token_embd.weight        ne [dim, V]
//   rms_att[l]                → blk.l.attn_norm.weight   ne [dim]          (always F32)
//   wq[l] [dim][dim]          → blk.l.attn_q.weight      ne [dim, dim]
//   wk[l], wv[l] [kvDim][dim] → blk.l.attn_k/attn_v      ne [dim, kvDim]
//   wo[l] [dim][dim]          → blk.l.attn_output.weight ne [dim, dim]
//   rms_ffn[l]                → blk.l.ffn_norm.weight    ne [dim]          (always F32)
//   w1[l] [hidden][dim]       → blk.l.ffn_gate.weight    ne [dim, hidden]
//   w2[l] [dim][hidden]       → blk.l.ffn_down.weight    ne [hidden, dim]
//   w3[l] [hidden][dim]       → blk.l.ffn_up.weight      ne [dim, hidden]
//   rms_final                 → output_norm.weight       ne [dim]          (always F32)
//   wcls [V][dim]             → output.weight            ne [dim, V]       (only if unshared; llama.cpp
//                                                                            reuses token_embd otherwise)
// A row-major [rows][cols] matrix is already in ggml's order (ne[0] = cols), so rows are copied as
// they are. No Q/K permutation: llama2.c rotates the interleaved pairs (2i, 2i+1) of each head with
// frequency 10000^(-2i/hd), which is ggml's default ("normal") RoPE that the `llama` architecture
// uses; Hugging Face checkpoints are permuted into that order by llama.cpp's converter, llama2.c's
// are in it already (llama.cpp's own convert-llama2c-to-ggml copies them unchanged).
//
// Matrices are written in the chosen type; a matrix whose rows are not whole 32-weight blocks (e.g.
// stories260K's w2, 172 columns) falls back to F16, as llama.cpp's convert_hf_to_gguf.py does.
// Q8_0 llama2.c files (group 64) are dequantized to f32 first (q·scale rounded to f32, the numbers of
// llama2.c's dequantize()), then written in the chosen type.
//
// The vocabulary: llama2.c's tokenizer.bin stores SentencePiece's "▁" as a space; GGUF's `llama`
// tokenizer wants it back. Ids 0, 1, 2 become "<unk>" (UNKNOWN), "<s>" and "</s>" (CONTROL); the
// byte pieces "<0x00>".."<0xFF>" at ids 3..258 are BYTE; the rest NORMAL (an empty piece CONTROL),
// as llama.cpp's convert-llama2c-to-ggml does.

import { describe } from '../options';
import { Rng } from '../reference';
import type { LlamaModel } from '../llama2c/checkpoint';
import { matrixRow, type Matrix } from '../llama2c/matrix';
import type { Tokenizer } from '../llama2c/tokenizer';
import { FILE_TYPES, GGUF_DEFAULT_ALIGNMENT, TENSOR_NAMES, TENSOR_TYPES, TokenType, type TensorType, type TensorTypeName } from './format';
import { encodeF16, Q4_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES, QK, quantizeQ4_0, quantizeQ8_0 } from './quants';
import { writeGguf, type GgufContents, type MetadataInput, type TensorToWrite } from './write';

export type WeightType = 'f32' | 'f16' | 'q8_0' | 'q4_0';
export const WEIGHT_TYPES: readonly WeightType[] = ['f32', 'f16', 'q8_0', 'q4_0'];

const TYPE_OF: Record<WeightType, TensorTypeName> = { f32: 'F32', f16: 'F16', q8_0: 'Q8_0', q4_0: 'Q4_0' };

/** RMSNorm epsilon and RoPE base of llama2.c models (written into the file). */
const RMS_EPS = 1e-5;
const ROPE_BASE = 10000;

export interface ConvertOptions {
  /** Type of the matrices (default 'f32': the exact weights). Norm vectors stay F32. */
  type?: WeightType;
  /** general.name (default "llama2c"). */
  name?: string;
}

/** The shape of a Llama model. */
export interface LlamaShape {
  dim: number;
  hiddenDim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  vocabSize: number;
  seqLen: number;
  sharedClassifier: boolean;
}

/** A vocabulary as GGUF stores it. */
export interface GgufVocabulary {
  tokens: Uint8Array[];
  scores: Float32Array;
  types: Int32Array;
}

/** Fills `out` (cols floats) with row r of a [rows][cols] weight matrix. */
type RowSource = (r: number, out: Float32Array) => void;

interface WeightSource {
  name: string;
  rows: number;
  cols: number;
  row: RowSource;
  /** Norm vectors stay F32 whatever the chosen type. */
  vector?: boolean;
}

const utf8 = new TextEncoder();
const SPACE = 0x20;
const LOWER_BLOCK = utf8.encode('\u2581'); // "▁"

/** A llama2.c piece as SentencePiece wrote it: spaces back to "▁". */
function escapeSpaces(piece: Uint8Array): Uint8Array {
  let spaces = 0;
  for (const b of piece) if (b === SPACE) spaces++;
  if (spaces === 0) return piece.slice();
  const out = new Uint8Array(piece.length + 2 * spaces);
  let o = 0;
  for (const b of piece) {
    if (b === SPACE) {
      out.set(LOWER_BLOCK, o);
      o += 3;
    } else {
      out[o++] = b;
    }
  }
  return out;
}

const BYTE_PIECE = /^<0x([0-9A-F]{2})>$/;
const latin1 = new TextDecoder('latin1');

/** The GGUF vocabulary of a llama2.c tokenizer (see the top of this file). */
export function vocabularyOf(tokenizer: Tokenizer): GgufVocabulary {
  const n = tokenizer.vocabSize;
  const tokens: Uint8Array[] = [];
  const scores = new Float32Array(n);
  const types = new Int32Array(n);
  for (let id = 0; id < n; id++) {
    const piece = tokenizer.piece(id);
    scores[id] = tokenizer.score(id);
    const byte = BYTE_PIECE.exec(latin1.decode(piece));
    if (id === 0) {
      tokens.push(utf8.encode('<unk>'));
      types[id] = TokenType.UNKNOWN;
    } else if (id === 1 || id === 2) {
      tokens.push(utf8.encode(id === 1 ? '<s>' : '</s>'));
      types[id] = TokenType.CONTROL;
    } else if (piece.length === 0) {
      tokens.push(piece.slice());
      types[id] = TokenType.CONTROL;
    } else if (byte && id >= 3 && id <= 258 && parseInt(byte[1]!, 16) === id - 3) {
      tokens.push(piece.slice());
      types[id] = TokenType.BYTE;
    } else {
      tokens.push(escapeSpaces(piece));
      types[id] = TokenType.NORMAL;
    }
  }
  return { tokens, scores, types };
}

/** Row r of a matrix as f32 (a llama2.c Q8_0 weight is q·scale rounded to f32, as dequantize()). */
function matrixRows(m: Matrix): RowSource {
  if (m.kind === 'f32') return (r, out) => out.set(m.data.subarray(r * m.cols, (r + 1) * m.cols));
  if (m.kind === 'ggml') return (r, out) => matrixRow(m, r, out);
  return (r, out) => {
    const base = r * m.cols;
    for (let j = 0; j < m.cols; j++) out[j] = m.q[base + j]! * m.scales[Math.floor((base + j) / m.groupSize)]!;
  };
}

function vectorRow(v: Float32Array): RowSource {
  return (_r, out) => out.set(v);
}

function weightSources(shape: LlamaShape, get: {
  embedding: RowSource; classifier: RowSource | null; rmsFinal: RowSource;
  layer(l: number): Record<'rmsAtt' | 'wq' | 'wk' | 'wv' | 'wo' | 'rmsFfn' | 'w1' | 'w2' | 'w3', RowSource>;
}): WeightSource[] {
  const { dim, hiddenDim: hidden, vocabSize: V } = shape;
  const kvDim = (dim / shape.heads) * shape.kvHeads;
  const out: WeightSource[] = [{ name: TENSOR_NAMES.tokenEmbedding, rows: V, cols: dim, row: get.embedding }];
  for (let l = 0; l < shape.layers; l++) {
    const w = get.layer(l);
    out.push(
      { name: TENSOR_NAMES.attnNorm(l), rows: 1, cols: dim, row: w.rmsAtt, vector: true },
      { name: TENSOR_NAMES.attnQ(l), rows: dim, cols: dim, row: w.wq },
      { name: TENSOR_NAMES.attnK(l), rows: kvDim, cols: dim, row: w.wk },
      { name: TENSOR_NAMES.attnV(l), rows: kvDim, cols: dim, row: w.wv },
      { name: TENSOR_NAMES.attnOutput(l), rows: dim, cols: dim, row: w.wo },
      { name: TENSOR_NAMES.ffnNorm(l), rows: 1, cols: dim, row: w.rmsFfn, vector: true },
      { name: TENSOR_NAMES.ffnGate(l), rows: hidden, cols: dim, row: w.w1 },
      { name: TENSOR_NAMES.ffnDown(l), rows: dim, cols: hidden, row: w.w2 },
      { name: TENSOR_NAMES.ffnUp(l), rows: hidden, cols: dim, row: w.w3 },
    );
  }
  out.push({ name: TENSOR_NAMES.outputNorm, rows: 1, cols: dim, row: get.rmsFinal, vector: true });
  if (get.classifier) out.push({ name: TENSOR_NAMES.output, rows: V, cols: dim, row: get.classifier });
  return out;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function encodeTensor(source: WeightSource, type: TensorType): TensorToWrite {
  const { name, rows, cols } = source;
  const rowBytes = (cols / type.block) * type.blockBytes;
  return {
    name,
    dims: source.vector ? [cols] : [cols, rows],
    type,
    fill(out: Uint8Array) {
      const row = new Float32Array(cols);
      const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
      for (let r = 0; r < rows; r++) {
        source.row(r, row);
        for (let j = 0; j < cols; j++) {
          if (!Number.isFinite(row[j]!)) throw new RangeError(`convertToGguf: tensor ${name} has a non-finite weight (${row[j]}) at row ${r}, column ${j}`);
        }
        const at = r * rowBytes;
        if (type.name === 'F32') {
          if (LITTLE_ENDIAN && (out.byteOffset + at) % 4 === 0) new Float32Array(out.buffer, out.byteOffset + at, cols).set(row);
          else for (let j = 0; j < cols; j++) view.setFloat32(at + 4 * j, row[j]!, true);
        } else if (type.name === 'F16') {
          for (let j = 0; j < cols; j++) {
            if (Math.abs(row[j]!) > 65504) throw new RangeError(`convertToGguf: tensor ${name}: weight ${row[j]} at row ${r}, column ${j} does not fit F16 (|x| <= 65504)`);
          }
          encodeF16(row, 0, cols, out, at);
        } else {
          (type.name === 'Q8_0' ? quantizeQ8_0 : quantizeQ4_0)(row, 0, cols, out, at);
          const block = type.name === 'Q8_0' ? Q8_0_BLOCK_BYTES : Q4_0_BLOCK_BYTES;
          for (let b = 0; b < cols / QK; b++) {
            if (((out[at + b * block + 1]! >> 2) & 0x1f) === 0x1f) throw new RangeError(`convertToGguf: tensor ${name}: the ${type.name} scale of row ${r}, block ${b} overflows F16`);
          }
        }
      }
    },
  };
}

/** The type a matrix is written in: the chosen one, or F16 if its rows are not whole blocks. */
function typeFor(source: WeightSource, chosen: TensorType): TensorType {
  if (source.vector) return TENSOR_TYPES.F32;
  if (source.cols % chosen.block !== 0) return TENSOR_TYPES.F16;
  return chosen;
}

function checkShape(shape: LlamaShape, where: string): void {
  const s = shape;
  const fields: [string, number][] = [['dim', s.dim], ['hidden', s.hiddenDim], ['layers', s.layers], ['heads', s.heads], ['kv heads', s.kvHeads], ['vocab', s.vocabSize], ['context', s.seqLen]];
  for (const [name, v] of fields) {
    if (!Number.isInteger(v) || v < 1 || v > 2 ** 31 - 1) throw new RangeError(`${where}: ${name} must be a positive integer, got ${describe(v)}`);
  }
  if (s.dim % s.heads !== 0) throw new RangeError(`${where}: heads (${s.heads}) must divide dim (${s.dim})`);
  if (s.heads % s.kvHeads !== 0) throw new RangeError(`${where}: kv heads (${s.kvHeads}) must divide heads (${s.heads})`);
  if ((s.dim / s.heads) % 2 !== 0) throw new RangeError(`${where}: the head dimension dim / heads = ${s.dim / s.heads} must be even (RoPE rotates pairs)`);
}

function contentsOf(shape: LlamaShape, vocabulary: GgufVocabulary, sources: WeightSource[], options: ConvertOptions, where: string): GgufContents {
  if (typeof options !== 'object' || options === null) throw new TypeError(`${where}: options must be an object, got ${describe(options)}`);
  const weightType = options.type ?? 'f32';
  if (!WEIGHT_TYPES.includes(weightType)) throw new RangeError(`${where}: type must be one of ${WEIGHT_TYPES.join(', ')}, got ${describe(weightType)}`);
  const name = options.name ?? 'llama2c';
  if (typeof name !== 'string') throw new TypeError(`${where}: name must be a string, got ${describe(name)}`);
  const chosen = TENSOR_TYPES[TYPE_OF[weightType]];
  const u32 = (value: number): MetadataInput => ({ type: 'uint32', value });
  const metadata: [string, MetadataInput][] = [
    ['general.architecture', { type: 'string', value: 'llama' }],
    ['general.name', { type: 'string', value: name }],
    ['general.file_type', u32(FILE_TYPES[chosen.name])],
    ['general.quantization_version', u32(2)],
    ['general.alignment', u32(GGUF_DEFAULT_ALIGNMENT)],
    ['llama.vocab_size', u32(shape.vocabSize)],
    ['llama.context_length', u32(shape.seqLen)],
    ['llama.embedding_length', u32(shape.dim)],
    ['llama.block_count', u32(shape.layers)],
    ['llama.feed_forward_length', u32(shape.hiddenDim)],
    ['llama.rope.dimension_count', u32(shape.dim / shape.heads)],
    ['llama.attention.head_count', u32(shape.heads)],
    ['llama.attention.head_count_kv', u32(shape.kvHeads)],
    ['llama.attention.layer_norm_rms_epsilon', { type: 'float32', value: RMS_EPS }],
    ['llama.rope.freq_base', { type: 'float32', value: ROPE_BASE }],
    ['tokenizer.ggml.model', { type: 'string', value: 'llama' }],
    ['tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: vocabulary.tokens }],
    ['tokenizer.ggml.scores', { type: 'array', itemType: 'float32', value: vocabulary.scores }],
    ['tokenizer.ggml.token_type', { type: 'array', itemType: 'int32', value: vocabulary.types }],
    ['tokenizer.ggml.unknown_token_id', u32(0)],
    ['tokenizer.ggml.bos_token_id', u32(1)],
    ['tokenizer.ggml.eos_token_id', u32(2)],
    ['tokenizer.ggml.add_bos_token', { type: 'bool', value: true }],
    ['tokenizer.ggml.add_eos_token', { type: 'bool', value: false }],
  ];
  return { metadata, tensors: sources.map((s) => encodeTensor(s, typeFor(s, chosen))) };
}

/** What convertToGguf writes, laid out for streaming (see ggufChunks). */
export function llamaGgufContents(model: LlamaModel, tokenizer: Tokenizer, options: ConvertOptions = {}): GgufContents {
  const where = 'convertToGguf';
  if (typeof model !== 'object' || model === null || typeof model.config !== 'object') throw new TypeError(`${where}: model must be a LlamaModel (from parseCheckpoint), got ${describe(model)}`);
  if (typeof tokenizer !== 'object' || tokenizer === null || typeof tokenizer.piece !== 'function') throw new TypeError(`${where}: tokenizer must be a Tokenizer, got ${describe(tokenizer)}`);
  const c = model.config;
  if (tokenizer.vocabSize !== c.vocabSize) throw new RangeError(`${where}: the tokenizer has ${tokenizer.vocabSize} tokens, the model ${c.vocabSize}`);
  const shape: LlamaShape = { ...c };
  checkShape(shape, where);
  const sources = weightSources(shape, {
    embedding: matrixRows(model.tokenEmbedding),
    classifier: c.sharedClassifier ? null : matrixRows(model.classifier),
    rmsFinal: vectorRow(model.rmsFinal),
    layer: (l) => {
      const w = model.layers[l]!;
      return {
        rmsAtt: vectorRow(w.rmsAtt), rmsFfn: vectorRow(w.rmsFfn),
        wq: matrixRows(w.wq), wk: matrixRows(w.wk), wv: matrixRows(w.wv), wo: matrixRows(w.wo),
        w1: matrixRows(w.w1), w2: matrixRows(w.w2), w3: matrixRows(w.w3),
      };
    },
  });
  return contentsOf(shape, vocabularyOf(tokenizer), sources, options, where);
}

/** A llama2.c model and its tokenizer as the bytes of a GGUF file (see the top of this file). */
export function convertToGguf(model: LlamaModel, tokenizer: Tokenizer, options: ConvertOptions = {}): Uint8Array {
  return writeGguf(llamaGgufContents(model, tokenizer, options));
}

// ---------------------------------------------------------------------------------------------
// Random-weight models

export interface RandomModelOptions extends ConvertOptions {
  dim: number;
  heads: number;
  /** Default: heads. */
  kvHeads?: number;
  layers: number;
  /** Context length (llama.context_length). */
  context: number;
  /** FFN width; default Llama's rule: 8·dim/3 rounded up to a multiple of 256 (4096 → 11008). */
  hiddenDim?: number;
  /** Default 32000, Llama's; at least 260. */
  vocabSize?: number;
  /** Seed of the weights (default 42): the same seed and shape give the same weights in every type. */
  seed?: number;
}

/** Llama's FFN width: 8·dim/3 rounded up to a multiple of 256. */
export function llamaHiddenDim(dim: number): number {
  return 256 * Math.ceil((8 * dim) / 3 / 256);
}

/** The smallest vocabulary of a random model: <unk>, <s>, </s>, 256 byte pieces and "▁". */
export const MIN_RANDOM_VOCAB = 260;

/**
 * A vocabulary of `n` tokens that llama.cpp's `llama` tokenizer accepts: <unk>, <s>, </s>, the 256
 * byte pieces, "▁", the printable ASCII characters, then two-letter, three-letter … lowercase words,
 * alternately with and without a leading "▁". Scores fall with the id, as SentencePiece's do.
 */
export function randomVocabulary(n: number): GgufVocabulary {
  const tokens: Uint8Array[] = [utf8.encode('<unk>'), utf8.encode('<s>'), utf8.encode('</s>')];
  const types = new Int32Array(n).fill(TokenType.NORMAL);
  types[0] = TokenType.UNKNOWN;
  types[1] = TokenType.CONTROL;
  types[2] = TokenType.CONTROL;
  for (let b = 0; b < 256; b++) {
    types[tokens.length] = TokenType.BYTE;
    tokens.push(utf8.encode(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`));
  }
  const words: string[] = ['\u2581'];
  for (let c = 33; c < 127; c++) words.push(String.fromCharCode(c));
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  for (let length = 2; tokens.length + words.length < n; length++) {
    const count = 26 ** length;
    for (let k = 0; k < count && tokens.length + words.length < n; k++) {
      let word = '';
      for (let i = 0, v = k; i < length; i++, v = Math.floor(v / 26)) word = letters[v % 26]! + word;
      words.push(word);
      if (tokens.length + words.length < n) words.push(`\u2581${word}`);
    }
  }
  for (const w of words.slice(0, n - tokens.length)) tokens.push(utf8.encode(w));
  const scores = new Float32Array(n);
  for (let id = 259; id < n; id++) scores[id] = -(id - 259);
  return { tokens, scores, types };
}

/** A seeded generator per (seed, tensor, row), so that any row is made on its own. */
function rowRng(seed: number, tensor: number, row: number): Rng {
  return new Rng((Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) + Math.imul(tensor + 1, 0xc2b2ae35) + Math.imul(row + 1, 0x27d4eb2f)) >>> 0);
}

/** Uniform weights of standard deviation 1/sqrt(cols) (so every matrix roughly keeps the size of
 *  the vector it multiplies); norm weights 1; the embedding of standard deviation 1. */
function randomRows(seed: number, tensor: number, cols: number, std: number): RowSource {
  const a = std * Math.sqrt(3);
  return (r, out) => {
    const rng = rowRng(seed, tensor, r);
    for (let j = 0; j < cols; j++) out[j] = (2 * rng.next() - 1) * a;
  };
}

/** The shape and contents of a random-weight model (see RandomModelOptions). */
export function randomGgufContents(options: RandomModelOptions): GgufContents {
  const where = 'randomGguf';
  if (typeof options !== 'object' || options === null) throw new TypeError(`${where}: options must be an object, got ${describe(options)}`);
  const { dim, heads, layers, context } = options;
  const seed = options.seed ?? 42;
  if (!Number.isInteger(seed) || seed < 0 || seed > 2 ** 32 - 1) throw new RangeError(`${where}: seed must be an integer from 0 to 2^32 - 1, got ${describe(seed)}`);
  const shape: LlamaShape = {
    dim, heads, layers, seqLen: context,
    kvHeads: options.kvHeads ?? heads,
    hiddenDim: options.hiddenDim ?? (Number.isInteger(dim) && dim > 0 ? llamaHiddenDim(dim) : NaN),
    vocabSize: options.vocabSize ?? 32000,
    sharedClassifier: false,
  };
  checkShape(shape, where);
  if (shape.vocabSize < MIN_RANDOM_VOCAB) throw new RangeError(`${where}: vocab must be at least ${MIN_RANDOM_VOCAB} (<unk>, <s>, </s>, 256 byte tokens and "▁"), got ${shape.vocabSize}`);
  let tensor = 0;
  const ones = new Float32Array(dim).fill(1);
  const matrix = (cols: number) => randomRows(seed, tensor++, cols, 1 / Math.sqrt(cols));
  const sources = weightSources(shape, {
    embedding: randomRows(seed, tensor++, dim, 1),
    classifier: matrix(dim),
    rmsFinal: vectorRow(ones),
    layer: () => ({
      rmsAtt: vectorRow(ones), rmsFfn: vectorRow(ones),
      wq: matrix(dim), wk: matrix(dim), wv: matrix(dim), wo: matrix(dim),
      w1: matrix(dim), w2: matrix(shape.hiddenDim), w3: matrix(dim),
    }),
  });
  return contentsOf(shape, randomVocabulary(shape.vocabSize), sources, { type: options.type, name: options.name ?? `random-${dim}x${layers}` }, where);
}

/** A random-weight model as the bytes of a GGUF file. */
export function randomGguf(options: RandomModelOptions): Uint8Array {
  return writeGguf(randomGgufContents(options));
}


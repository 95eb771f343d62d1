// llama2.c checkpoints: the legacy f32 format (v0), the f32 format with a header (v1) and the Q8_0
// format (v2), as written by llama2.c's export.py. All little-endian.
//
// v0 (legacy_export)
//   | 7 × int32: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len |
//   | f32: token_embedding[V][dim] rms_att[L][dim] wq[L][dim][dim] wk[L][kvDim][dim] wv[L][kvDim][dim]
//   |      wo[L][dim][dim] rms_ffn[L][dim] w1[L][hidden][dim] w2[L][dim][hidden] w3[L][hidden][dim]
//   |      rms_final[dim] freq_cis_real[seq][hd/2] freq_cis_imag[seq][hd/2] (wcls[V][dim]) |
//   vocab_size < 0 means an unshared classifier: wcls follows, and V = |vocab_size|.
//
// v1 and v2 (version1_export, version2_export): a 256-byte header
//   offset 0   uint32 magic 0x616b3432 ("ak42" as a number; the bytes read "24ka")
//          4   int32  version (1: f32, 2: Q8_0)
//          8   7 × int32 config, as v0 (vocab_size > 0)
//         36   uint8  shared_classifier (0 or 1)
//         37   int32  group_size (v2 only; unaligned)
//   then f32 rms_att[L][dim] rms_ffn[L][dim] rms_final[dim], then the matrices in the order
//   token_embedding, wq × L, wk × L, wv × L, wo × L, w1 × L, w2 × L, w3 × L, (wcls): f32 in v1, and in
//   v2 each tensor as int8 q[n] followed by f32 scales[n / group_size]. No freq_cis.
//
// Weights are views into the given bytes where the host is little-endian and the offset is aligned
// (no copy: do not modify the bytes afterwards), copies otherwise. Q8_0 weights stay quantized
// unless `dequantize: true` (see parseCheckpoint).

import { dequantize, type Matrix } from './matrix';
import { describe } from '../options';

/** `ak42`, the magic of the v1 and v2 headers (uint32, little-endian). */
export const CHECKPOINT_MAGIC = 0x616b3432;
/** Bytes of the v0 header (7 int32) and of the v1/v2 header. */
export const LEGACY_HEADER_BYTES = 28;
export const HEADER_BYTES = 256;

export interface LlamaConfig {
  dim: number;
  hiddenDim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  /** Always positive (the v0 sign flag is `sharedClassifier`). */
  vocabSize: number;
  seqLen: number;
  /** dim / heads. */
  headDim: number;
  /** The classifier is the token embedding (no wcls in the file). */
  sharedClassifier: boolean;
  /** RMSNorm epsilon; default 1e-5 (llama2.c's). GGUF files say theirs. */
  rmsEps?: number;
  /** RoPE base; default 10000 (llama2.c's). GGUF files say theirs. */
  ropeTheta?: number;
}

export interface CheckpointFormat {
  /** 0: legacy f32, 1: f32 with the ak42 header, 2: Q8_0; 'gguf': a GGUF file (parseGguf). */
  version: 0 | 1 | 2 | 'gguf';
  /** How the matrices are held in memory: 'q8_0' for a v2 file unless dequantized at load; for a
   *  GGUF file the type most of its matrices have ('f32', 'f16', 'q8_0' or 'q4_0'). */
  weights: 'f32' | 'q8_0' | 'f16' | 'q4_0';
  /** Q8_0 group size of a v2 file. */
  groupSize?: number;
}

export interface LlamaLayerWeights {
  rmsAtt: Float32Array;
  /** [dim][dim] */
  wq: Matrix;
  /** [kvDim][dim] */
  wk: Matrix;
  /** [kvDim][dim] */
  wv: Matrix;
  /** [dim][dim] */
  wo: Matrix;
  rmsFfn: Float32Array;
  /** [hidden][dim] */
  w1: Matrix;
  /** [dim][hidden] */
  w2: Matrix;
  /** [hidden][dim] */
  w3: Matrix;
}

export interface LlamaModel {
  config: LlamaConfig;
  format: CheckpointFormat;
  /** [vocab][dim] */
  tokenEmbedding: Matrix;
  layers: LlamaLayerWeights[];
  rmsFinal: Float32Array;
  /** [vocab][dim]; the same object as tokenEmbedding when the classifier is shared. */
  classifier: Matrix;
}

export interface ParseOptions {
  /** Dequantize Q8_0 weights to f32 at load (4× the memory of the int8 codes; same numbers as
   *  llama2.c's dequantize()). Default false: the runner multiplies with the int8 groups directly. */
  dequantize?: boolean;
}

const WHERE = 'parseCheckpoint';
const FIELDS = ['dim', 'hidden_dim', 'n_layers', 'n_heads', 'n_kv_heads', 'vocab_size', 'seq_len'] as const;

/** Reads a llama2.c checkpoint (v0 legacy f32, v1 f32, v2 Q8_0), detecting the format from its header. */
export function parseCheckpoint(bytes: Uint8Array, options: ParseOptions = {}): LlamaModel {
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`${WHERE}: expected the checkpoint as a Uint8Array, got ${describe(bytes)}`);
  }
  if (typeof options !== 'object' || options === null) throw new TypeError(`${WHERE}: options must be an object, got ${describe(options)}`);
  if (bytes.length < 4) {
    throw new RangeError(`${WHERE}: truncated file: ${bytes.length} bytes is too short for any checkpoint header (v0: ${LEGACY_HEADER_BYTES} bytes, v1/v2: ${HEADER_BYTES})`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const first = view.getUint32(0, true);
  let model: LlamaModel;
  if (first === CHECKPOINT_MAGIC) {
    model = parseVersioned(bytes, view);
  } else if (view.getUint32(0, false) === CHECKPOINT_MAGIC) {
    throw new RangeError(`${WHERE}: wrong magic: got the bytes "ak42", i.e. the magic 0x616b3432 written big-endian; llama2.c checkpoints are little-endian (bytes "24ka")`);
  } else {
    model = parseLegacy(bytes, view);
  }
  if (options.dequantize && model.format.weights === 'q8_0') {
    const shared = model.classifier === model.tokenEmbedding;
    const tokenEmbedding = dequantize(model.tokenEmbedding);
    model = {
      ...model,
      format: { ...model.format, weights: 'f32' },
      tokenEmbedding,
      classifier: shared ? tokenEmbedding : dequantize(model.classifier),
      layers: model.layers.map((l) => ({
        ...l,
        wq: dequantize(l.wq), wk: dequantize(l.wk), wv: dequantize(l.wv), wo: dequantize(l.wo),
        w1: dequantize(l.w1), w2: dequantize(l.w2), w3: dequantize(l.w3),
      })),
    };
  }
  return model;
}

/** Checks a config for sense; throws a RangeError naming the field. `source` says where it came from. */
export function validateConfig(config: LlamaConfig, source = 'config'): void {
  const c = config;
  const show = `dim=${c.dim}, hidden_dim=${c.hiddenDim}, n_layers=${c.layers}, n_heads=${c.heads}, n_kv_heads=${c.kvHeads}, vocab_size=${c.vocabSize}, seq_len=${c.seqLen}`;
  const fail = (why: string): never => {
    throw new RangeError(`${WHERE}: nonsensical ${source} (${show}): ${why}`);
  };
  const values: [string, number][] = [
    ['dim', c.dim], ['hidden_dim', c.hiddenDim], ['n_layers', c.layers], ['n_heads', c.heads],
    ['n_kv_heads', c.kvHeads], ['vocab_size', c.vocabSize], ['seq_len', c.seqLen],
  ];
  for (const [name, v] of values) {
    if (!Number.isInteger(v) || v < 1) fail(`${name} must be a positive integer, got ${v}`);
  }
  if (c.dim % c.heads !== 0) fail(`n_heads (${c.heads}) must divide dim (${c.dim})`);
  if (c.heads % c.kvHeads !== 0) fail(`n_kv_heads (${c.kvHeads}) must divide n_heads (${c.heads})`);
  if ((c.dim / c.heads) % 2 !== 0) fail(`the head dimension dim / n_heads = ${c.dim / c.heads} must be even (RoPE rotates pairs)`);
}

// ---------------------------------------------------------------------------------------------

function readConfig(view: DataView, offset: number): number[] {
  return FIELDS.map((_, i) => view.getInt32(offset + 4 * i, true));
}

function makeConfig(raw: number[], sharedClassifier: boolean): LlamaConfig {
  const [dim, hiddenDim, layers, heads, kvHeads, vocab, seqLen] = raw as [number, number, number, number, number, number, number];
  return { dim, hiddenDim, layers, heads, kvHeads, vocabSize: Math.abs(vocab), seqLen, headDim: heads > 0 ? dim / heads : NaN, sharedClassifier };
}

/** Elements of the per-layer matrices, in file order: wq, wk, wv, wo, w1, w2, w3. */
function layerMatrixShapes(c: LlamaConfig): [number, number][] {
  const kvDim = (c.dim / c.heads) * c.kvHeads;
  return [[c.dim, c.dim], [kvDim, c.dim], [kvDim, c.dim], [c.dim, c.dim], [c.hiddenDim, c.dim], [c.dim, c.hiddenDim], [c.hiddenDim, c.dim]];
}

function checkSize(bytes: Uint8Array, expected: number, what: string, note = ''): void {
  const got = bytes.length;
  if (got < expected) {
    throw new RangeError(`${WHERE}: truncated file: the ${what} implies ${expected} bytes, got ${got} (${expected - got} missing)${note}`);
  }
  if (got > expected) {
    throw new RangeError(`${WHERE}: size does not match the header: the ${what} implies ${expected} bytes, got ${got} (${got - expected} extra)${note}`);
  }
}

function parseLegacy(bytes: Uint8Array, view: DataView): LlamaModel {
  const head = Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ');
  const note = `; the file does not start with the v1/v2 magic 0x616b3432 ("ak42"), so it was read as a legacy v0 checkpoint (first bytes: ${head})`;
  if (bytes.length < LEGACY_HEADER_BYTES) {
    throw new RangeError(`${WHERE}: truncated file: ${bytes.length} bytes, shorter than the ${LEGACY_HEADER_BYTES}-byte v0 header${note}`);
  }
  const raw = readConfig(view, 0);
  const config = makeConfig(raw, raw[5]! > 0);
  try {
    validateConfig(config, 'v0 config');
  } catch (e) {
    throw new RangeError(`${(e as Error).message}${note}`);
  }
  const c = config;
  const perLayer = 2 * c.dim + layerMatrixShapes(c).reduce((s, [r, k]) => s + r * k, 0);
  const floats = c.vocabSize * c.dim + c.layers * perLayer + c.dim + c.seqLen * c.headDim + (c.sharedClassifier ? 0 : c.vocabSize * c.dim);
  checkSize(bytes, LEGACY_HEADER_BYTES + 4 * floats, `v0 config (${describeConfig(c)})`, note);

  const r = new Reader(bytes, view, LEGACY_HEADER_BYTES);
  const tokenEmbedding = r.f32Matrix(c.vocabSize, c.dim);
  const rmsAtt = range(c.layers, () => r.f32(c.dim));
  const [sq, sk, sv, so, s1, s2, s3] = layerMatrixShapes(c) as [number, number][];
  const wq = range(c.layers, () => r.f32Matrix(...sq!));
  const wk = range(c.layers, () => r.f32Matrix(...sk!));
  const wv = range(c.layers, () => r.f32Matrix(...sv!));
  const wo = range(c.layers, () => r.f32Matrix(...so!));
  const rmsFfn = range(c.layers, () => r.f32(c.dim));
  const w1 = range(c.layers, () => r.f32Matrix(...s1!));
  const w2 = range(c.layers, () => r.f32Matrix(...s2!));
  const w3 = range(c.layers, () => r.f32Matrix(...s3!));
  const rmsFinal = r.f32(c.dim);
  r.skip(4 * c.seqLen * c.headDim); // freq_cis_real, freq_cis_imag: the runner computes RoPE itself
  const classifier = c.sharedClassifier ? tokenEmbedding : r.f32Matrix(c.vocabSize, c.dim);
  return {
    config,
    format: { version: 0, weights: 'f32' },
    tokenEmbedding,
    layers: range(c.layers, (l) => ({ rmsAtt: rmsAtt[l]!, wq: wq[l]!, wk: wk[l]!, wv: wv[l]!, wo: wo[l]!, rmsFfn: rmsFfn[l]!, w1: w1[l]!, w2: w2[l]!, w3: w3[l]! })),
    rmsFinal,
    classifier,
  };
}

function parseVersioned(bytes: Uint8Array, view: DataView): LlamaModel {
  if (bytes.length < 8) throw new RangeError(`${WHERE}: truncated file: ${bytes.length} bytes, shorter than the ${HEADER_BYTES}-byte v1/v2 header`);
  const version = view.getInt32(4, true);
  if (version !== 1 && version !== 2) {
    throw new RangeError(`${WHERE}: unknown checkpoint version ${version} after the magic "ak42"; expected 1 (f32) or 2 (Q8_0)`);
  }
  if (bytes.length < HEADER_BYTES) {
    throw new RangeError(`${WHERE}: truncated file: ${bytes.length} bytes, shorter than the ${HEADER_BYTES}-byte v${version} header`);
  }
  const raw = readConfig(view, 8);
  const sharedByte = view.getUint8(36);
  if (sharedByte > 1) throw new RangeError(`${WHERE}: the v${version} header's shared_classifier byte must be 0 or 1, got ${sharedByte}`);
  const config = makeConfig(raw, sharedByte === 1);
  if (raw[5]! < 0) throw new RangeError(`${WHERE}: nonsensical v${version} config: vocab_size must be positive (the classifier flag is a separate byte), got ${raw[5]}`);
  validateConfig(config, `v${version} config`);
  const c = config;
  const shapes = layerMatrixShapes(c);
  const norms = (2 * c.layers + 1) * c.dim;

  if (version === 1) {
    const floats = norms + c.vocabSize * c.dim * (c.sharedClassifier ? 1 : 2) + c.layers * shapes.reduce((s, [r, k]) => s + r * k, 0);
    checkSize(bytes, HEADER_BYTES + 4 * floats, `v1 config (${describeConfig(c)})`);
  }
  let groupSize = 0;
  if (version === 2) {
    groupSize = view.getInt32(37, true);
    if (groupSize < 1 || c.dim % groupSize !== 0 || c.hiddenDim % groupSize !== 0) {
      throw new RangeError(`${WHERE}: nonsensical v2 header: group_size must be a positive integer dividing dim (${c.dim}) and hidden_dim (${c.hiddenDim}), got ${groupSize}`);
    }
    const q8 = (n: number) => n + 4 * (n / groupSize);
    const total = HEADER_BYTES + 4 * norms + q8(c.vocabSize * c.dim) * (c.sharedClassifier ? 1 : 2) + c.layers * shapes.reduce((s, [r, k]) => s + q8(r * k), 0);
    checkSize(bytes, total, `v2 config (${describeConfig(c)}, group_size=${groupSize})`);
  }

  const r = new Reader(bytes, view, HEADER_BYTES);
  const rmsAtt = range(c.layers, () => r.f32(c.dim));
  const rmsFfn = range(c.layers, () => r.f32(c.dim));
  const rmsFinal = r.f32(c.dim);
  const matrix = (rows: number, cols: number): Matrix => (version === 1 ? r.f32Matrix(rows, cols) : r.q8Matrix(rows, cols, groupSize));
  const tokenEmbedding = matrix(c.vocabSize, c.dim);
  const [wq, wk, wv, wo, w1, w2, w3] = shapes.map(([rows, cols]) => range(c.layers, () => matrix(rows, cols))) as Matrix[][];
  const classifier = c.sharedClassifier ? tokenEmbedding : matrix(c.vocabSize, c.dim);
  return {
    config,
    format: version === 1 ? { version: 1, weights: 'f32' } : { version: 2, weights: 'q8_0', groupSize },
    tokenEmbedding,
    layers: range(c.layers, (l) => ({ rmsAtt: rmsAtt[l]!, wq: wq![l]!, wk: wk![l]!, wv: wv![l]!, wo: wo![l]!, rmsFfn: rmsFfn[l]!, w1: w1![l]!, w2: w2![l]!, w3: w3![l]! })),
    rmsFinal,
    classifier,
  };
}

function describeConfig(c: LlamaConfig): string {
  return `dim=${c.dim}, hidden_dim=${c.hiddenDim}, n_layers=${c.layers}, n_heads=${c.heads}, n_kv_heads=${c.kvHeads}, vocab_size=${c.vocabSize}, seq_len=${c.seqLen}, ${c.sharedClassifier ? 'shared' : 'unshared'} classifier`;
}

function range<T>(n: number, f: (i: number) => T): T[] {
  return Array.from({ length: n }, (_, i) => f(i));
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Sequential reader; sizes were checked against the header before, so reads stay in bounds. */
class Reader {
  constructor(
    private readonly bytes: Uint8Array,
    private readonly view: DataView,
    private offset: number,
  ) {}

  skip(n: number): void {
    this.offset += n;
  }

  f32(n: number): Float32Array {
    const at = this.bytes.byteOffset + this.offset;
    let out: Float32Array;
    if (LITTLE_ENDIAN && at % 4 === 0) {
      out = new Float32Array(this.bytes.buffer, at, n);
    } else {
      out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = this.view.getFloat32(this.offset + 4 * i, true);
    }
    this.offset += 4 * n;
    return out;
  }

  f32Matrix(rows: number, cols: number): Matrix {
    return { kind: 'f32', rows, cols, data: this.f32(rows * cols) };
  }

  q8Matrix(rows: number, cols: number, groupSize: number): Matrix {
    const n = rows * cols;
    const q = new Int8Array(this.bytes.buffer, this.bytes.byteOffset + this.offset, n);
    this.offset += n;
    const scales = this.f32(n / groupSize);
    return { kind: 'q8_0', rows, cols, groupSize, q, scales };
  }
}

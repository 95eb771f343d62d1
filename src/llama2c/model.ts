// The Llama forward pass of llama2.c (run.c's forward()), one token at a time, in TypeScript, with
// attention through a KiviCache: per layer the token's post-RoPE key and value are appended and its
// query attends over everything cached.
//
// Activations are float64; weights are f32 or Q8_0 (matrix.ts), multiplied in float64 in JS; the
// query, key and value handed to the cache are f32, as the cache takes them. A GGUF model's F16,
// Q8_0 and Q4_0 matrices are copied into the Kivi instance's wasm memory when the runner is made and
// multiplied there by the build's kernels (src/gguf/weights.ts, assembly/matvec.ts): the input
// vector is rounded to f32 (and, for Q8_0/Q4_0, quantized to int8 per 32-block, as llama.cpp does).

import type { Kivi } from '../kivi';
import type { KiviCache } from '../cache';
import type { CacheOptions } from '../options';
import { type LlamaConfig, type LlamaModel } from './checkpoint';
import { describe } from '../options';
import { matrixRow, matVec, type Matrix } from './matrix';
import { TENSOR_NAMES } from '../gguf/format';
import { runtimeOf, WasmWeights, type WasmMatrix } from '../gguf/weights';

/** RMSNorm epsilon of llama2.c. */
export const RMS_EPS = 1e-5;
/** RoPE base: pair i of a head turns at 10000^(-2i/headDim) radians per position. */
export const ROPE_THETA = 10000;

/** The cache options a runner uses for a model: f32 cache (`bits: 32`), room for seq_len tokens. */
export function defaultCacheOptions(config: LlamaConfig): CacheOptions {
  return { layers: config.layers, kvHeads: config.kvHeads, headDim: config.headDim, queryHeads: config.heads, bits: 32, maxTokens: config.seqLen };
}

const SHAPE_KEYS = ['layers', 'kvHeads', 'headDim', 'queryHeads'] as const;

export class LlamaRunner {
  readonly model: LlamaModel;
  readonly config: LlamaConfig;
  /** The options every cache of this runner is created with. */
  readonly cacheOptions: CacheOptions;
  private readonly kivi: Kivi;
  private current: KiviCache;
  /** The model's ggml matrices in wasm memory (null if it has none). */
  private readonly weights: WasmWeights | null = null;
  private readonly uploaded = new Map<Matrix, WasmMatrix>();
  private pos = 0;
  private disposed = false;

  // Work buffers (float64 activations; f32 where the cache reads or writes).
  private readonly x: Float64Array;
  private readonly xb: Float64Array;
  private readonly xb2: Float64Array;
  private readonly hb: Float64Array;
  private readonly hb2: Float64Array;
  private readonly q: Float64Array;
  private readonly k: Float64Array;
  private readonly v: Float64Array;
  private readonly q32: Float32Array;
  private readonly k32: Float32Array;
  private readonly v32: Float32Array;
  private readonly att32: Float32Array;
  private readonly logits64: Float64Array;
  private readonly cos: Float64Array;
  private readonly sin: Float64Array;
  private readonly invFreq: Float64Array;
  private readonly rmsEps: number;

  /**
   * @param cacheOptions merged over `defaultCacheOptions(model.config)`: bits, groupSize, residual,
   *   sinkTokens, keyWindow, keyGrouping, valueGrouping, maxTokens. The shape (layers, kvHeads,
   *   headDim, queryHeads) is the model's; giving another value is a RangeError.
   */
  constructor(model: LlamaModel, kivi: Kivi, cacheOptions: Partial<CacheOptions> = {}) {
    if (typeof model !== 'object' || model === null || typeof model.config !== 'object') {
      throw new TypeError(`LlamaRunner: model must be a LlamaModel (from parseCheckpoint), got ${describe(model)}`);
    }
    if (typeof kivi !== 'object' || kivi === null || typeof (kivi as Kivi).createCache !== 'function') {
      throw new TypeError(`LlamaRunner: kivi must be a Kivi instance (await Kivi.load()), got ${describe(kivi)}`);
    }
    if (typeof cacheOptions !== 'object' || cacheOptions === null) {
      throw new TypeError(`LlamaRunner: cacheOptions must be an object, got ${describe(cacheOptions)}`);
    }
    const c = model.config;
    const defaults = defaultCacheOptions(c);
    for (const key of SHAPE_KEYS) {
      const given = cacheOptions[key];
      if (given !== undefined && given !== defaults[key]) {
        throw new RangeError(`LlamaRunner: cacheOptions.${key} is the model's (${defaults[key]}), got ${describe(given)}`);
      }
    }
    this.model = model;
    this.config = c;
    this.kivi = kivi;
    this.cacheOptions = { ...defaults, ...cacheOptions };
    this.current = kivi.createCache(this.cacheOptions);
    const ggml: [Matrix, string][] = [[model.classifier, c.sharedClassifier ? TENSOR_NAMES.tokenEmbedding : TENSOR_NAMES.output]];
    model.layers.forEach((w, l) => ggml.push(
      [w.wq, TENSOR_NAMES.attnQ(l)], [w.wk, TENSOR_NAMES.attnK(l)], [w.wv, TENSOR_NAMES.attnV(l)], [w.wo, TENSOR_NAMES.attnOutput(l)],
      [w.w1, TENSOR_NAMES.ffnGate(l)], [w.w2, TENSOR_NAMES.ffnDown(l)], [w.w3, TENSOR_NAMES.ffnUp(l)],
    ));
    if (ggml.some(([m]) => m.kind === 'ggml')) {
      const weights = new WasmWeights(runtimeOf(kivi));
      try {
        for (const [m, name] of ggml) if (m.kind === 'ggml' && !this.uploaded.has(m)) this.uploaded.set(m, weights.upload(m, name));
        weights.prepare();
      } catch (error) {
        weights.dispose();
        this.current.dispose();
        throw error;
      }
      this.weights = weights;
    }

    const kvDim = c.kvHeads * c.headDim;
    this.x = new Float64Array(c.dim);
    this.xb = new Float64Array(c.dim);
    this.xb2 = new Float64Array(c.dim);
    this.hb = new Float64Array(c.hiddenDim);
    this.hb2 = new Float64Array(c.hiddenDim);
    this.q = new Float64Array(c.dim);
    this.k = new Float64Array(kvDim);
    this.v = new Float64Array(kvDim);
    this.q32 = new Float32Array(c.dim);
    this.k32 = new Float32Array(kvDim);
    this.v32 = new Float32Array(kvDim);
    this.att32 = new Float32Array(c.dim);
    this.logits64 = new Float64Array(c.vocabSize);
    const half = c.headDim / 2;
    this.cos = new Float64Array(half);
    this.sin = new Float64Array(half);
    this.invFreq = new Float64Array(half);
    for (let i = 0; i < half; i++) this.invFreq[i] = Math.pow(c.ropeTheta ?? ROPE_THETA, (-2 * i) / c.headDim);
    this.rmsEps = c.rmsEps ?? RMS_EPS;
  }

  /** The cache of the current sequence (a new one after each reset()). */
  get cache(): KiviCache {
    this.checkUsable('cache');
    return this.current;
  }

  /** Bytes of weights this runner holds in wasm memory (a GGUF model's F16, Q8_0 and Q4_0 matrices). */
  get wasmWeightBytes(): number {
    return this.weights?.weightBytes ?? 0;
  }

  /** Tokens fed since the last reset(): the position of the next token. */
  get position(): number {
    return this.pos;
  }

  /**
   * Feeds `token` at the current position (appending its key and value to the cache in every
   * layer) and returns the logits for the next token: into `out` if given (a Float32Array, or a
   * Float64Array for the unrounded values), else a new Float32Array.
   */
  forward(token: number, out?: Float32Array): Float32Array;
  forward(token: number, out: Float64Array): Float64Array;
  forward(token: number, out?: Float32Array | Float64Array): Float32Array | Float64Array {
    const V = this.config.vocabSize;
    if (out !== undefined) {
      if (!(out instanceof Float32Array || out instanceof Float64Array)) {
        throw new TypeError(`LlamaRunner.forward: out must be a Float32Array or Float64Array, got ${describe(out)}`);
      }
      if (out.length !== V) throw new RangeError(`LlamaRunner.forward: out must have length vocabSize = ${V}, got ${out.length}`);
    }
    this.step('forward', token);
    const m = this.model;
    rmsNorm(this.xb, this.x, m.rmsFinal, this.rmsEps);
    this.mul(m.classifier, this.xb, this.logits64);
    const result = out ?? new Float32Array(V);
    result.set(this.logits64);
    return result;
  }

  /** Feeds `token` like forward() but skips the classifier (for prompt tokens whose logits are not needed). */
  advance(token: number): void {
    this.step('advance', token);
  }

  /** Starts a new sequence: disposes the cache and creates an empty one with the same options. */
  reset(): void {
    this.checkUsable('reset');
    this.current.dispose();
    this.current = this.kivi.createCache(this.cacheOptions);
    this.pos = 0;
  }

  /**
   * Continues from a cache made elsewhere (restored with `kivi.restoreCacheStream`, `restoreCache` or
   * forked) with the model's shape: the runner disposes its own cache, takes
   * this one, and its position becomes the cache's token count, so the next forward() is the token
   * after the cached ones. A cached system prompt is resumed this way instead of recomputed.
   */
  resume(cache: KiviCache): void {
    const where = 'LlamaRunner.resume';
    this.checkUsable('resume');
    if (typeof cache !== 'object' || cache === null || typeof (cache as KiviCache).tokens !== 'function') {
      throw new TypeError(`${where}: cache must be a KiviCache, got ${describe(cache)}`);
    }
    if (cache.isDisposed) throw new TypeError(`${where}: the cache was disposed`);
    for (const key of SHAPE_KEYS) {
      if (cache.options[key] !== this.cacheOptions[key]) throw new RangeError(`${where}: cache ${key} must be the model's (${this.cacheOptions[key]}), got ${cache.options[key]}`);
    }
    const tokens = cache.tokens(0);
    for (let l = 1; l < this.config.layers; l++) {
      if (cache.tokens(l) !== tokens) throw new RangeError(`${where}: every layer must hold the same tokens, got ${tokens} in layer 0 and ${cache.tokens(l)} in layer ${l}`);
    }
    if (tokens > this.config.seqLen) throw new RangeError(`${where}: the cache holds ${tokens} tokens, more than the model's context of ${this.config.seqLen}`);
    if (cache !== this.current) this.current.dispose();
    this.current = cache;
    this.pos = tokens;
  }

  /** Frees the cache and the weights in wasm memory; later calls throw. A second dispose() does nothing. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.current.dispose();
    this.weights?.dispose();
  }

  /** out = m·x: in wasm for the uploaded ggml matrices, else in JS (matrix.ts). */
  private mul(m: Matrix, x: Float64Array, out: Float64Array): void {
    const w = this.uploaded.get(m);
    if (w !== undefined) this.weights!.matVec(w, x, out);
    else matVec(m, x, out);
  }

  private checkUsable(where: string): void {
    if (this.disposed) throw new TypeError(`LlamaRunner.${where}: the runner was disposed`);
  }

  /** One token through every layer; leaves the residual stream in this.x. */
  private step(where: string, token: number): void {
    this.checkUsable(where);
    const c = this.config;
    if (!Number.isInteger(token) || token < 0 || token >= c.vocabSize) {
      throw new RangeError(`LlamaRunner.${where}: token must be an integer from 0 to ${c.vocabSize - 1}, got ${describe(token)}`);
    }
    if (this.pos >= c.seqLen) {
      throw new RangeError(`LlamaRunner.${where}: the model's context is seq_len = ${c.seqLen} tokens and all are used; call reset() to start a new sequence`);
    }
    const m = this.model;
    const { x, xb, xb2, hb, hb2, q, k, v, q32, k32, v32, att32 } = this;
    const hd = c.headDim;
    const half = hd / 2;
    const kvDim = c.kvHeads * hd;

    for (let i = 0; i < half; i++) {
      const angle = this.pos * this.invFreq[i]!;
      this.cos[i] = Math.cos(angle);
      this.sin[i] = Math.sin(angle);
    }

    matrixRow(m.tokenEmbedding, token, x);
    const cache = this.current;
    for (let l = 0; l < c.layers; l++) {
      const w = m.layers[l]!;
      rmsNorm(xb, x, w.rmsAtt, this.rmsEps);
      this.mul(w.wq, xb, q);
      this.mul(w.wk, xb, k);
      this.mul(w.wv, xb, v);
      this.rope(q, c.dim);
      this.rope(k, kvDim);
      for (let i = 0; i < c.dim; i++) q32[i] = q[i]!;
      for (let i = 0; i < kvDim; i++) {
        k32[i] = k[i]!;
        v32[i] = v[i]!;
      }
      cache.append(l, k32, v32);
      cache.attend(l, q32, att32);
      for (let i = 0; i < c.dim; i++) xb[i] = att32[i]!;
      this.mul(w.wo, xb, xb2);
      for (let i = 0; i < c.dim; i++) x[i] = x[i]! + xb2[i]!;

      rmsNorm(xb, x, w.rmsFfn, this.rmsEps);
      this.mul(w.w1, xb, hb);
      this.mul(w.w3, xb, hb2);
      for (let i = 0; i < c.hiddenDim; i++) {
        const a = hb[i]!;
        hb[i] = (a / (1 + Math.exp(-a))) * hb2[i]!; // silu(w1·x) ⊙ w3·x
      }
      this.mul(w.w2, hb, xb);
      for (let i = 0; i < c.dim; i++) x[i] = x[i]! + xb[i]!;
    }
    this.pos++;
  }

  /** Rotates the interleaved pairs (2i, 2i+1) of every head in vec[0 .. length). */
  private rope(vec: Float64Array, length: number): void {
    const hd = this.config.headDim;
    const half = hd / 2;
    for (let base = 0; base < length; base += hd) {
      for (let i = 0; i < half; i++) {
        const a = vec[base + 2 * i]!;
        const b = vec[base + 2 * i + 1]!;
        const cs = this.cos[i]!;
        const sn = this.sin[i]!;
        vec[base + 2 * i] = a * cs - b * sn;
        vec[base + 2 * i + 1] = a * sn + b * cs;
      }
    }
  }
}

/** out = weight ⊙ x / sqrt(mean(x²) + eps). */
export function rmsNorm(out: Float64Array, x: Float64Array, weight: Float32Array, eps = RMS_EPS): void {
  const n = weight.length;
  let ss = 0;
  for (let i = 0; i < n; i++) ss += x[i]! * x[i]!;
  const inv = 1 / Math.sqrt(ss / n + eps);
  for (let i = 0; i < n; i++) out[i] = weight[i]! * (x[i]! * inv);
}

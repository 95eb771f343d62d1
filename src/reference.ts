/**
 * Normative float64 reference of /SPEC.md ("kivi-wasm — what the cache computes").
 *
 * This file is the oracle the wasm kernels are tested against. It is deliberately slow and
 * readable: one group, one token, one query at a time, with plain JavaScript numbers. It shares
 * no code with the kernels or the facade (no wasm, no dependencies).
 *
 * Arithmetic conventions:
 * - Quantizer: every f32 operation of the SPEC is emulated with Math.fround after each step, and
 *   the half conversion is exact IEEE binary16 round-to-nearest-even, so codes and stored halves
 *   must be bit-identical to every kernel variant.
 * - Dequantization (code * s + z) and attention are evaluated in float64.
 *
 * Input validation is the facade's job; this class trusts its inputs and only asserts the obvious
 * (shapes, layer index) with a plain Error.
 */

export type Bits = 2 | 4 | 8 | 32;

export interface ReferenceOptions {
  layers: number;
  kvHeads: number;
  headDim: number;
  queryHeads: number;
  bits: Bits;
  groupSize: number;
  residual: number;
  sinkTokens: number;
  keyWindow: 'chunked' | 'sliding';
  keyGrouping: 'channel' | 'token';
  valueGrouping: 'token' | 'channel';
}

// ---------------------------------------------------------------------------------------------
// IEEE binary16 <-> binary32, by bit manipulation on a Float32Array/Uint32Array pair.

const f32Buf = new Float32Array(1);
const u32Buf = new Uint32Array(f32Buf.buffer);

/**
 * IEEE half bits of Math.fround(x), round to nearest even (handles subnormals, overflow->Inf, NaN).
 *
 * Implemented on the bits of the f32 value: the 23-bit f32 mantissa is shifted right to the half's
 * 10 bits (or fewer for subnormal halves) and the discarded bits decide the rounding, ties to an
 * even result. A carry out of the mantissa correctly bumps the exponent (up to Inf).
 * NaN maps to a quiet NaN keeping the sign and the top payload bits.
 */
export function f32ToF16Bits(x: number): number {
  f32Buf[0] = x; // rounds x to f32 (same as Math.fround)
  const u = u32Buf[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;

  if (exp === 0xff) {
    // Inf or NaN
    return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  }
  const e = exp - 127 + 15; // biased half exponent
  if (e >= 31) return sign | 0x7c00; // |x| >= 2^16: overflow

  if (e >= 1) {
    // normal half: keep the top 10 mantissa bits, round on the 13 discarded ones
    let h = (e << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h += 1; // carry may reach 0x7c00 = Inf
    return sign | h;
  }

  // subnormal half (or zero): value = m * 2^(exp - 150) with the implicit bit; in units of 2^-24
  // that is m / 2^shift with shift = 126 - exp >= 14.
  if (exp === 0) return sign; // f32 zero or f32 subnormal (< 2^-126): rounds to a signed zero
  const m = mant | 0x800000; // 24 significant bits
  const shift = 126 - exp;
  if (shift > 24) return sign; // m / 2^shift < 2^24 / 2^25 = 0.5 ulp: rounds to zero
  let h = m >>> shift;
  const rest = m & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  if (rest > halfway || (rest === halfway && (h & 1) === 1)) h += 1; // 0x3ff + 1 = 0x400 min normal
  return sign | h;
}

/** value of IEEE half bits (exact). */
export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24; // zero or subnormal
  if (e === 31) return m === 0 ? sign * Infinity : NaN;
  return sign * (1024 + m) * 2 ** (e - 25);
}

/** Round half to even (the SPEC's roundHalfEven). */
export function roundHalfEven(x: number): number {
  if (!Number.isFinite(x)) return x;
  const f = Math.floor(x);
  const diff = x - f; // exact in binary floating point
  if (diff < 0.5) return f;
  if (diff > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

// ---------------------------------------------------------------------------------------------
// Quantizer

export interface QuantizedGroup {
  scaleBits: number;
  zeroBits: number;
  codes: Uint8Array;
}

/** SPEC quantizer on one group, exactly: mn,mx in f32; scale=(mx-mn)/(2^b-1) computed in f32 (Math.fround) then to half;
 *  zero=mn to half; s,z read back; code=0 if s==0 else clamp(roundHalfEven(fround(fround(x - z) / s)),0,2^b-1) */
export function quantizeGroup(values: ArrayLike<number>, bits: 2 | 4 | 8): QuantizedGroup {
  const n = values.length;
  if (n < 1) throw new Error('quantizeGroup: empty group');
  const maxCode = 2 ** bits - 1;
  let mn = Math.fround(values[0]!);
  let mx = mn;
  for (let i = 1; i < n; i++) {
    const x = Math.fround(values[i]!);
    // IEEE minimum/maximum, as wasm's f32.min/f32.max: -0 orders below +0, so a group holding both
    // stores a zero of -0 (half 0x8000) in every implementation.
    mn = Math.min(mn, x);
    mx = Math.max(mx, x);
  }
  const range = Math.fround(mx - mn);
  const scale32 = Math.fround(range / maxCode);
  const scaleBits = f32ToF16Bits(scale32);
  const zeroBits = f32ToF16Bits(mn);
  const s = f16BitsToF32(scaleBits);
  const z = f16BitsToF32(zeroBits);
  const codes = new Uint8Array(n);
  if (s !== 0) {
    for (let i = 0; i < n; i++) {
      const d = Math.fround(Math.fround(values[i]!) - z);
      const q = Math.fround(d / s);
      const c = roundHalfEven(q);
      codes[i] = c < 0 ? 0 : c > maxCode ? maxCode : c;
    }
  }
  return { scaleBits, zeroBits, codes };
}

/** x' = code * s + z, evaluated in float64. */
function dequantize(code: number, scaleBits: number, zeroBits: number): number {
  return code * f16BitsToF32(scaleBits) + f16BitsToF32(zeroBits);
}

// ---------------------------------------------------------------------------------------------
// Cache

/** Canonical listing of all quantized groups of one stream (keys or values) of one layer:
 *  scales[i], zeros[i] = half bits of group i; codes = all codes concatenated (one byte per code), groups in order.
 *  Canonical order — channel-grouped stream: for each quantized chunk of G tokens in time order, for each kv head,
 *  for each channel c: the G codes of tokens in time order. Token-grouped stream: for each quantized token in time
 *  order, for each kv head, for each value-group g (channels g*gv..g*gv+gv-1, gv=min(G,D)): the gv codes in channel order. */
// The listing type is shared with the facade (src/layout.ts) so that tests compare like with like;
// only the type is shared, never code.
import type { GroupListing } from './layout';
export type { GroupListing };

export interface LayerStats {
  tokens: number;
  sinkTokens: number;
  quantizedKeys: number;
  residualKeys: number;
  quantizedValues: number;
  residualValues: number;
}

/** How a stream is flushed: per-channel chunks of R (KIVI), per-channel G at a time (sliding), or per token. */
type Schedule = 'chunked' | 'sliding' | 'token';

/** One stream (keys or values) of one layer, sinks excluded. */
interface Stream {
  grouping: 'channel' | 'token';
  schedule: Schedule;
  /** every non-sink token [kvHeads*headDim] in time order: dequantized (float64) if quantized, else the f32 input. */
  tokens: Float64Array[];
  /** the f32 rows the tokens were quantized from (what undoing a flush restores). */
  inputs: Float64Array[];
  /** tokens[0 .. quantized) are quantized, tokens[quantized ..] are the f32 residual. */
  quantized: number;
  scales: number[];
  zeros: number[];
  codes: number[];
  /** The flushes truncate can undo: the newest, undoTokens of them at most (SPEC.md, truncate). */
  undo: { position: number; tokens: number; groups: number; codes: number }[];
}

interface Layer {
  tokens: number;
  sinkKeys: Float64Array[];
  sinkValues: Float64Array[];
  keys: Stream;
  values: Stream;
}

export class ReferenceCache {
  readonly options: Readonly<ReferenceOptions>;
  private readonly layerState: Layer[];
  private readonly width: number; // kvHeads * headDim
  private readonly tokenGroup: number; // gv = min(G, D)

  constructor(options: ReferenceOptions) {
    const o = { ...options };
    const isInt = (v: number, min: number) => Number.isInteger(v) && v >= min;
    if (!isInt(o.layers, 1) || !isInt(o.kvHeads, 1) || !isInt(o.headDim, 1) || !isInt(o.queryHeads, 1)) {
      throw new Error('ReferenceCache: layers, kvHeads, headDim, queryHeads must be positive integers');
    }
    if (o.queryHeads % o.kvHeads !== 0) throw new Error('ReferenceCache: queryHeads must be a multiple of kvHeads');
    if (![2, 4, 8, 32].includes(o.bits)) throw new Error('ReferenceCache: bits must be 2, 4, 8 or 32');
    if (!isInt(o.groupSize, 1) || !isInt(o.residual, 0) || !isInt(o.sinkTokens, 0)) {
      throw new Error('ReferenceCache: groupSize >= 1, residual >= 0, sinkTokens >= 0 (integers)');
    }
    if (o.residual % o.groupSize !== 0) throw new Error('ReferenceCache: residual must be a multiple of groupSize');
    this.tokenGroup = Math.min(o.groupSize, o.headDim);
    if ((o.keyGrouping === 'token' || o.valueGrouping === 'token') && o.headDim % this.tokenGroup !== 0) {
      throw new Error('ReferenceCache: headDim must be a multiple of min(groupSize, headDim)');
    }
    if (o.keyWindow === 'sliding' && o.keyGrouping === 'channel' && o.residual < o.groupSize) {
      throw new Error("ReferenceCache: keyWindow 'sliding' needs residual >= groupSize");
    }
    this.options = Object.freeze(o);
    this.width = o.kvHeads * o.headDim;

    // The grouping axis decides the schedule; keyWindow only applies to channel-grouped keys.
    const keySchedule: Schedule = o.keyGrouping === 'token' ? 'token' : o.keyWindow;
    const valueSchedule: Schedule = o.valueGrouping === 'token' ? 'token' : 'chunked';
    const stream = (grouping: 'channel' | 'token', schedule: Schedule): Stream => ({
      grouping, schedule, tokens: [], inputs: [], quantized: 0, scales: [], zeros: [], codes: [], undo: [],
    });
    this.layerState = [];
    for (let l = 0; l < o.layers; l++) {
      this.layerState.push({
        tokens: 0, sinkKeys: [], sinkValues: [],
        keys: stream(o.keyGrouping, keySchedule),
        values: stream(o.valueGrouping, valueSchedule),
      });
    }
  }

  private layer(layer: number): Layer {
    const st = this.layerState[layer];
    if (!Number.isInteger(layer) || st === undefined) throw new Error(`ReferenceCache: no layer ${layer}`);
    return st;
  }

  /** keys, values: [n][kvHeads][headDim], n >= 1. Flush first (SPEC "When tokens are quantized"), then add as f32. */
  append(layer: number, keys: Float32Array, values: Float32Array): void {
    const st = this.layer(layer);
    const w = this.width;
    if (keys.length !== values.length || keys.length === 0 || keys.length % w !== 0) {
      throw new Error('ReferenceCache.append: keys and values must hold the same whole number (>= 1) of tokens');
    }
    this.flushLayer(st);
    const n = keys.length / w;
    for (let t = 0; t < n; t++) {
      const k = Float64Array.from(keys.subarray(t * w, (t + 1) * w));
      const v = Float64Array.from(values.subarray(t * w, (t + 1) * w));
      if (st.tokens < this.options.sinkTokens) {
        st.sinkKeys.push(k);
        st.sinkValues.push(v);
      } else {
        st.keys.tokens.push(k);
        st.keys.inputs.push(Float64Array.from(k));
        st.values.tokens.push(v);
        st.values.inputs.push(Float64Array.from(v));
      }
      st.tokens++;
    }
  }

  /** The flush at the start of an append (SPEC.md), remembered for truncate. */
  private flushLayer(st: Layer): void {
    if (this.options.bits === 32) return;
    for (const stream of [st.keys, st.values]) {
      const before = { tokens: stream.quantized, groups: stream.scales.length, codes: stream.codes.length };
      this.flush(stream);
      if (stream.quantized > before.tokens) {
        stream.undo.push({ position: st.tokens, tokens: stream.quantized - before.tokens, groups: before.groups, codes: before.codes });
        // Only the newest flushes, undoTokens in all, can be undone.
        const window = this.undoTokens(stream);
        let total = 0;
        for (let i = stream.undo.length - 1; i >= 0; i--) {
          total += stream.undo[i]!.tokens;
          if (total > window) {
            stream.undo.splice(0, i + 1);
            break;
          }
        }
      }
    }
  }

  /** Flushed tokens of a stream that truncate can undo: R + G per channel, R per token (SPEC.md). */
  private undoTokens(s: Stream): number {
    const { residual: R, groupSize: G } = this.options;
    if (R === 0) return 0;
    return s.grouping === 'channel' ? R + G : R;
  }

  /**
   * Keeps the first `tokens` tokens of `layer` (or of every layer): first the flushes of the
   * appends that began at or after `tokens` are undone, newest first, as far as the undo window
   * holds them (their f32 inputs come back); then every token after the first `tokens` is dropped.
   * A cut into quantized tokens keeps their codes and halves, except that the surviving tokens of
   * a partly dropped per-channel group return to the residual as f32 code·s + z; it also empties
   * the undo window.
   */
  truncate(tokens: number, layer?: number): void {
    const layers = layer === undefined ? this.layerState : [this.layer(layer)];
    for (const st of layers) {
      if (!Number.isInteger(tokens) || tokens < 0 || tokens > st.tokens) throw new Error('ReferenceCache.truncate: tokens out of range');
      const sinks = Math.min(st.sinkKeys.length, tokens);
      st.sinkKeys.length = st.sinkValues.length = sinks;
      const stored = tokens - sinks;
      for (const s of [st.keys, st.values]) {
        while (s.undo.length > 0 && s.undo[s.undo.length - 1]!.position >= tokens) {
          const entry = s.undo.pop()!;
          s.quantized -= entry.tokens;
          s.scales.length = s.zeros.length = entry.groups;
          s.codes.length = entry.codes;
          for (let t = s.quantized; t < s.quantized + entry.tokens; t++) s.tokens[t] = Float64Array.from(s.inputs[t]!);
        }
        s.tokens.length = s.inputs.length = Math.min(s.tokens.length, stored);
        if (stored >= s.quantized) continue;
        s.undo = [];
        const keep = s.grouping === 'channel' ? Math.floor(stored / this.options.groupSize) * this.options.groupSize : stored;
        const perGroup = s.grouping === 'channel' ? this.options.groupSize : this.tokenGroup;
        const groupsPerToken = s.grouping === 'channel' ? this.options.kvHeads * this.options.headDim / this.options.groupSize : this.width / this.tokenGroup;
        // The surviving tokens of a partly dropped per-channel group: their stored values, as f32.
        for (let t = keep; t < stored; t++) {
          s.tokens[t] = s.tokens[t]!.map((x) => Math.fround(x));
          s.inputs[t] = Float64Array.from(s.tokens[t]!);
        }
        s.scales.length = s.zeros.length = keep * groupsPerToken;
        s.codes.length = keep * groupsPerToken * perGroup;
        s.quantized = keep;
      }
      st.tokens = tokens;
    }
  }

  /** What `cache.fork()` does: this cache first makes the flush its next append would (SPEC.md,
   *  fork), then an independent copy is returned. */
  fork(): ReferenceCache {
    for (const st of this.layerState) this.flushLayer(st);
    const copy = new ReferenceCache(this.options);
    const rows = (list: Float64Array[]) => list.map((r) => Float64Array.from(r));
    const stream = (s: Stream): Stream => ({
      ...s, tokens: rows(s.tokens), inputs: rows(s.inputs), scales: [...s.scales], zeros: [...s.zeros], codes: [...s.codes], undo: s.undo.map((e) => ({ ...e })),
    });
    copy.layerState.splice(0, copy.layerState.length, ...this.layerState.map((l) => ({
      tokens: l.tokens, sinkKeys: rows(l.sinkKeys), sinkValues: rows(l.sinkValues), keys: stream(l.keys), values: stream(l.values),
    })));
    return copy;
  }

  private flush(s: Stream): void {
    const R = this.options.residual;
    const G = this.options.groupSize;
    const residual = () => s.tokens.length - s.quantized;
    switch (s.schedule) {
      case 'chunked':
        // while keyResidual >= R and R > 0: quantize the oldest R residual keys (R/G chunks per channel)
        while (R > 0 && residual() >= R) for (let i = 0; i < R / G; i++) this.quantizeChunk(s);
        // if R == 0: quantize every whole G-token chunk of the residual
        if (R === 0) while (residual() >= G) this.quantizeChunk(s);
        break;
      case 'sliding':
        // while keyResidual >= R: quantize the oldest G
        while (residual() >= R) this.quantizeChunk(s);
        break;
      case 'token':
        // while valueResidual > R: quantize the oldest residual token
        while (residual() > R) this.quantizeToken(s);
        break;
    }
  }

  /** Quantize the oldest G residual tokens per channel: for each kv head, for each channel, one group. */
  private quantizeChunk(s: Stream): void {
    const { kvHeads, headDim: D, groupSize: G } = this.options;
    const bits = this.options.bits as 2 | 4 | 8;
    const start = s.quantized;
    const group = new Float64Array(G);
    for (let h = 0; h < kvHeads; h++) {
      for (let c = 0; c < D; c++) {
        const idx = h * D + c;
        for (let t = 0; t < G; t++) group[t] = s.tokens[start + t]![idx]!;
        const q = quantizeGroup(group, bits);
        s.scales.push(q.scaleBits);
        s.zeros.push(q.zeroBits);
        for (let t = 0; t < G; t++) {
          s.codes.push(q.codes[t]!);
          s.tokens[start + t]![idx] = dequantize(q.codes[t]!, q.scaleBits, q.zeroBits);
        }
      }
    }
    s.quantized += G;
  }

  /** Quantize the oldest residual token per token: for each kv head, for each group of gv channels. */
  private quantizeToken(s: Stream): void {
    const { kvHeads, headDim: D } = this.options;
    const bits = this.options.bits as 2 | 4 | 8;
    const gv = this.tokenGroup;
    const tok = s.tokens[s.quantized]!;
    for (let h = 0; h < kvHeads; h++) {
      for (let g = 0; g < D / gv; g++) {
        const base = h * D + g * gv;
        const q = quantizeGroup(tok.subarray(base, base + gv), bits);
        s.scales.push(q.scaleBits);
        s.zeros.push(q.zeroBits);
        for (let i = 0; i < gv; i++) {
          s.codes.push(q.codes[i]!);
          tok[base + i] = dequantize(q.codes[i]!, q.scaleBits, q.zeroBits);
        }
      }
    }
    s.quantized += 1;
  }

  /** queries [q][queryHeads][headDim] = the newest q tokens, causal; float64 result [q][queryHeads][headDim] */
  attend(layer: number, queries: Float32Array, scale?: number): Float64Array {
    const st = this.layer(layer);
    const { queryHeads, kvHeads, headDim } = this.options;
    const qw = queryHeads * headDim;
    if (queries.length === 0 || queries.length % qw !== 0) {
      throw new Error('ReferenceCache.attend: queries must hold a whole number (>= 1) of tokens');
    }
    const qTokens = queries.length / qw;
    if (qTokens > st.tokens) throw new Error('ReferenceCache.attend: more queries than cached tokens');
    return attentionF64(queries, this.dequantizedKeys(layer), this.dequantizedValues(layer),
      st.tokens, qTokens, queryHeads, kvHeads, headDim, scale);
  }

  /** sinkTokens = tokens held as sinks (<= S); quantized/residual counts exclude sinks */
  stats(layer: number): LayerStats {
    const st = this.layer(layer);
    return {
      tokens: st.tokens,
      sinkTokens: st.sinkKeys.length,
      quantizedKeys: st.keys.quantized,
      residualKeys: st.keys.tokens.length - st.keys.quantized,
      quantizedValues: st.values.quantized,
      residualValues: st.values.tokens.length - st.values.quantized,
    };
  }

  keyGroups(layer: number): GroupListing {
    return this.listing(this.layer(layer).keys);
  }

  valueGroups(layer: number): GroupListing {
    return this.listing(this.layer(layer).values);
  }

  private listing(s: Stream): GroupListing {
    return {
      grouping: s.grouping,
      groupLength: s.grouping === 'channel' ? this.options.groupSize : this.tokenGroup,
      scales: Uint16Array.from(s.scales),
      zeros: Uint16Array.from(s.zeros),
      codes: Uint8Array.from(s.codes),
    };
  }

  /** the cache as attention sees it: [tokens][kvHeads][headDim] float64; quantized entries = code*s+z (in float64),
   *  f32 entries (sinks, residual, or everything when bits=32) exactly as appended */
  dequantizedKeys(layer: number): Float64Array {
    const st = this.layer(layer);
    return this.flatten(st.sinkKeys, st.keys.tokens);
  }

  dequantizedValues(layer: number): Float64Array {
    const st = this.layer(layer);
    return this.flatten(st.sinkValues, st.values.tokens);
  }

  private flatten(sinks: Float64Array[], rest: Float64Array[]): Float64Array {
    const out = new Float64Array((sinks.length + rest.length) * this.width);
    let t = 0;
    for (const tok of sinks) out.set(tok, this.width * t++);
    for (const tok of rest) out.set(tok, this.width * t++);
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Attention and error metric

/** The cache as attention sees it, from a canonical group listing (the facade's `inspect()`, or the
 *  reference's keyGroups/valueGroups): a copy of `exact` [tokens][kvHeads][D] (the f32 input) with
 *  every quantized number replaced by code·s + z. The listing's groups cover the oldest tokens after
 *  the sinks (`first` tokens in). */
export function dequantizeListing(listing: GroupListing, exact: ArrayLike<number>, tokens: number, kvHeads: number, D: number, first = 0): Float64Array {
  const into = Float64Array.from({ length: tokens * kvHeads * D }, (_, i) => exact[i]!);
  const n = listing.groupLength;
  for (let g = 0; g < listing.scales.length; g++) {
    const s = f16BitsToF32(listing.scales[g]!);
    const z = f16BitsToF32(listing.zeros[g]!);
    if (listing.grouping === 'channel') {
      // chunk of n tokens → kv head → channel: n codes in token order
      const channel = g % D;
      const head = Math.floor(g / D) % kvHeads;
      const chunk = Math.floor(g / (D * kvHeads));
      for (let t = 0; t < n; t++) into[((first + chunk * n + t) * kvHeads + head) * D + channel] = listing.codes[g * n + t]! * s + z;
    } else {
      // token → kv head → group of n channels: n codes in channel order
      const perHead = D / n;
      const group = g % perHead;
      const head = Math.floor(g / perHead) % kvHeads;
      const token = Math.floor(g / (perHead * kvHeads));
      const base = ((first + token) * kvHeads + head) * D + group * n;
      for (let c = 0; c < n; c++) into[base + c] = listing.codes[g * n + c]! * s + z;
    }
  }
  return into;
}

/** float64 attention per SPEC over given dequantized keys/values [N][kvHeads][D]: used by tests and the demo */
export function attentionF64(
  queries: Float32Array | Float64Array,
  keys: Float64Array | Float32Array,
  values: Float64Array | Float32Array,
  tokens: number, qTokens: number, queryHeads: number, kvHeads: number, headDim: number, scale?: number,
): Float64Array {
  const D = headDim;
  if (queryHeads % kvHeads !== 0) throw new Error('attentionF64: queryHeads must be a multiple of kvHeads');
  if (qTokens < 1 || qTokens > tokens) throw new Error('attentionF64: need 1 <= qTokens <= tokens');
  if (queries.length !== qTokens * queryHeads * D) throw new Error('attentionF64: queries length');
  if (keys.length < tokens * kvHeads * D || values.length < tokens * kvHeads * D) {
    throw new Error('attentionF64: keys/values shorter than tokens');
  }
  const sc = scale ?? 1 / Math.sqrt(D);
  const groupRatio = queryHeads / kvHeads;
  const out = new Float64Array(qTokens * queryHeads * D);
  const scores = new Float64Array(tokens);
  for (let i = 0; i < qTokens; i++) {
    const visible = tokens - qTokens + i + 1; // tokens 0 .. len - qTokens + i
    for (let h = 0; h < queryHeads; h++) {
      const kvh = Math.floor(h / groupRatio);
      const qOff = (i * queryHeads + h) * D;
      let max = -Infinity;
      for (let t = 0; t < visible; t++) {
        const kOff = (t * kvHeads + kvh) * D;
        let dot = 0;
        for (let c = 0; c < D; c++) dot += queries[qOff + c]! * keys[kOff + c]!;
        const s = sc * dot;
        scores[t] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let t = 0; t < visible; t++) {
        const p = Math.exp(scores[t]! - max);
        scores[t] = p;
        sum += p;
      }
      for (let t = 0; t < visible; t++) {
        const p = scores[t]! / sum;
        const vOff = (t * kvHeads + kvh) * D;
        for (let c = 0; c < D; c++) out[qOff + c] = out[qOff + c]! + p * values[vOff + c]!;
      }
    }
  }
  return out;
}

/**
 * The same attention as attentionF64, evaluated as SPEC.md's split-K: ranges of `rangeTokens` tokens
 * after the first `sinks` (range 0 = [0, sinks + L)), each giving (max, Σ exp, Σ exp·v), folded in
 * range order and divided at the end. In float64 it equals attentionF64 to rounding: the fold is an
 * identity of the softmax, not an approximation.
 */
export function attentionSplitF64(
  queries: Float32Array | Float64Array, keys: Float64Array | Float32Array, values: Float64Array | Float32Array,
  tokens: number, qTokens: number, queryHeads: number, kvHeads: number, headDim: number, sinks: number, rangeTokens: number, scale?: number,
): Float64Array {
  const D = headDim;
  const sc = scale ?? 1 / Math.sqrt(D);
  const groupRatio = queryHeads / kvHeads;
  const out = new Float64Array(qTokens * queryHeads * D);
  const starts = [0];
  for (let at = sinks + rangeTokens; at < tokens; at += rangeTokens) starts.push(at);
  for (let i = 0; i < qTokens; i++) {
    const visible = tokens - qTokens + i + 1;
    for (let h = 0; h < queryHeads; h++) {
      const kvh = Math.floor(h / groupRatio);
      const qOff = (i * queryHeads + h) * D;
      let M = -Infinity;
      let S = 0;
      const O = new Float64Array(D);
      starts.forEach((start, r) => {
        const end = Math.min(visible, r + 1 < starts.length ? starts[r + 1]! : tokens);
        if (end <= start) return;
        const scores: number[] = [];
        for (let t = start; t < end; t++) {
          let dot = 0;
          for (let c = 0; c < D; c++) dot += queries[qOff + c]! * keys[(t * kvHeads + kvh) * D + c]!;
          scores.push(sc * dot);
        }
        const m = Math.max(...scores);
        let s = 0;
        const o = new Float64Array(D);
        scores.forEach((score, j) => {
          const p = Math.exp(score - m);
          s += p;
          for (let c = 0; c < D; c++) o[c]! += p * values[((start + j) * kvHeads + kvh) * D + c]!;
        });
        const next = Math.max(M, m);
        const a = Math.exp(M - next);
        const b = Math.exp(m - next);
        S = S * a + s * b;
        for (let c = 0; c < D; c++) O[c] = O[c]! * a + o[c]! * b;
        M = next;
      });
      for (let c = 0; c < D; c++) out[qOff + c] = O[c]! / S;
    }
  }
  return out;
}

/** relative L2 error ||a-b|| / ||b|| */
export function relativeL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error('relativeL2: length mismatch');
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    num += d * d;
    den += b[i]! * b[i]!;
  }
  return Math.sqrt(num) / Math.sqrt(den);
}

// ---------------------------------------------------------------------------------------------
// Test data

/** seeded PRNG (mulberry32) with next() in [0,1) and normal() (Box-Muller) — used by all tests */
export class Rng {
  /** the seed this generator was created with (syntheticKv derives its fixed outlier channels from it) */
  readonly seed: number;
  private state: number;
  private spare: number | undefined;

  constructor(seed: number) {
    this.seed = seed >>> 0;
    this.state = this.seed;
  }

  /** uniform in [0, 1), 32 bits of resolution */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** standard normal (Box-Muller, the second value of each pair is kept for the next call) */
  normal(): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    const u1 = 1 - this.next(); // (0, 1]
    const u2 = this.next();
    const r = Math.sqrt(-2 * Math.log(u1));
    this.spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  }
}

/** Outlier channels of one head: drawn from a generator derived from (seed, head), so they are the same in
 *  every syntheticKv call made with the same Rng (prefill and decode share them, like real keys). */
function outlierProfile(seed: number, head: number, headDim: number, forced?: number[]): { channel: number; scale: number; offset: number }[] {
  const g = new Rng((Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) + Math.imul(head + 1, 0xc2b2ae35)) >>> 0);
  let channels: number[];
  if (forced !== undefined) {
    channels = forced.filter((c) => Number.isInteger(c) && c >= 0 && c < headDim);
  } else {
    const count = Math.min(headDim, 2 + Math.floor(g.next() * 3)); // 2..4
    const set = new Set<number>();
    while (set.size < count) set.add(Math.floor(g.next() * headDim));
    channels = [...set];
  }
  return channels.map((channel) => {
    const scale = 10 + 10 * g.next(); // 10..20x
    const offset = (g.next() < 0.5 ? -1 : 1) * scale * (0.5 + g.next()); // a few sigmas off zero
    return { channel, scale, offset };
  });
}

/** seeded Llama-like data [n][heads][D]: normal values; for keys, a few fixed outlier channels per head (2-4 channels
 *  chosen from the seed, scaled by 10-20x and offset), like real post-RoPE keys. Values and queries plain normal.
 *  Never zeros. `outlierChannels` (keys only) forces the outlier channels of every head. */
export function syntheticKv(rng: Rng, n: number, heads: number, headDim: number, kind: 'keys' | 'values' | 'queries', outlierChannels?: number[]): Float32Array {
  const out = new Float32Array(n * heads * headDim);
  const profiles = kind === 'keys'
    ? Array.from({ length: heads }, (_, h) => outlierProfile(rng.seed, h, headDim, outlierChannels))
    : undefined;
  for (let t = 0; t < n; t++) {
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * headDim;
      for (let c = 0; c < headDim; c++) {
        let x = 0;
        while (x === 0) x = Math.fround(rng.normal()); // never exactly zero
        out[base + c] = x;
      }
      if (profiles !== undefined) {
        for (const { channel, scale, offset } of profiles[h]!) {
          const x = Math.fround(out[base + channel]! * scale + offset);
          out[base + channel] = x !== 0 ? x : Math.fround(offset); // never exactly zero
        }
      }
    }
  }
  return out;
}

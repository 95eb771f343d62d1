// KiviCache: per-layer state, the flush schedule of SPEC.md, validation, and the calls into the
// kernels. All storage lives in the wasm memory of the Kivi instance that created the cache.
//
// Per layer and per stream (keys, values), each region holding every kv head one after another
// (head h at base + h · capacity · unit bytes), so that attention over a head reads contiguous memory:
//
//   sinks     f32 [Hkv][S][D]                          the first S tokens, forever
//   quantized [Hkv][capacity] key blocks (G tokens) or value blocks (32 tokens): assembly/layout.ts
//   residual  f32 [Hkv][capacity][D], live rows [start, start + count): the newest tokens
//
// Attention sees the tokens in order sinks | quantized | residual; keys and values may split the
// same tokens differently (keys flush R at a time, values one at a time), so each stream has its
// own segments, and scores are indexed by absolute token position.

import type { WasmRuntime } from './wasm';
import { describe, resolveOptions, type ResolvedOptions } from './options';
import { bytesPerToken, decodeGroups, streamLayout, VALUE_BLOCK, type GroupListing, type StreamLayout } from './layout';
import { parseCache, serializeCache, type ParsedStream } from './serialize';

/** Largest magnitude a key or value may have: the stored halves must hold a group's min and scale. */
export const MAX_ABS_INPUT = 65504;

/** Score rows × tokens held at once in the workspace (floats); multi-token queries are tiled to fit. */
const SCORE_BUDGET_FLOATS = 1 << 20;

/** The shared workspace is kept after an append up to this size (attention needs at most about
 *  SCORE_BUDGET_FLOATS·4 bytes of it); a larger staging area is freed when the append ends. */
const WORKSPACE_KEEP_BYTES = 16 << 20;

export interface AttendOptions {
  /** Multiplies q·k; default 1/sqrt(headDim). */
  scale?: number;
}

export interface CacheStats {
  /** Tokens cached (summed over layers when no layer is given). */
  tokens: number;
  /** Tokens held as f32 sinks. */
  sinkTokens: number;
  quantizedKeys: number;
  residualKeys: number;
  quantizedValues: number;
  residualValues: number;
  /** Bytes the stored tokens occupy: codes, halves, f32 residual and sinks (spare capacity excluded). */
  bytes: number;
  /** bytes·8 per cached number (keys and values), metadata and f32 parts included. */
  bitsPerElement: number;
}

class Stream {
  readonly layout: StreamLayout;
  quantizedPtr = 0;
  /** Units (blocks) per head. */
  quantizedCapacity = 0;
  quantizedTokens = 0;
  residualPtr = 0;
  /** Rows per head. */
  residualCapacity = 0;
  residualStart = 0;
  residualCount = 0;
  sinkPtr = 0;
  /** Sink rows per head held (grows up to S as sink tokens arrive, or reserved by maxTokens). */
  sinkCapacity = 0;

  constructor(layout: StreamLayout) {
    this.layout = layout;
  }

  get quantizedUnits(): number {
    return Math.ceil(this.quantizedTokens / this.layout.unitTokens);
  }
}

/** A run of stored tokens of one kv head: `count` f32 rows, key blocks, or value-block tokens,
 *  `stride` bytes per row or block. */
interface Segment {
  kind: 'f32' | 'channel' | 'token';
  data: number;
  count: number;
  stride: number;
}

interface StreamPlan {
  stream: Stream;
  flushTokens: number;
  /** New quantized capacity in units per head, or 0 to keep the current region. */
  quantizedCapacity: number;
  /** New residual capacity in rows per head, or 0 to keep the current region. */
  residualCapacity: number;
  compact: boolean;
  /** New sink capacity in rows per head, or 0 to keep the current region. */
  sinkCapacity: number;
  freshQuantized: number;
  freshResidual: number;
  freshSinks: number;
}

class Layer {
  tokens = 0;
  sinkCount = 0;
  readonly keys: Stream;
  readonly values: Stream;

  constructor(keyLayout: StreamLayout, valueLayout: StreamLayout) {
    this.keys = new Stream(keyLayout);
    this.values = new Stream(valueLayout);
  }
}

function checkFinite(where: string, name: string, data: Float32Array): void {
  for (let i = 0; i < data.length; i++) {
    const x = data[i]!;
    if (!Number.isFinite(x)) throw new RangeError(`${where}: ${name} must hold finite numbers, got ${x} at index ${i}`);
  }
}

export class KiviCache {
  readonly options: ResolvedOptions;
  private readonly runtime: WasmRuntime;
  private readonly layerStates: Layer[];
  /** Bytes of one f32 row of one head. */
  private readonly rowBytes: number;
  private disposed = false;

  /** @internal Use `kivi.createCache(options)`. `reserve: false` skips the maxTokens reservation
   *  (a restored cache holds only what its stored tokens need; its options keep maxTokens). */
  constructor(runtime: WasmRuntime, options: unknown, reserve = true) {
    this.options = resolveOptions(options);
    this.runtime = runtime;
    const o = this.options;
    this.rowBytes = o.headDim * 4;
    const keyLayout = streamLayout(o, o.keyGrouping);
    const valueLayout = streamLayout(o, o.valueGrouping);
    this.layerStates = [];
    try {
      for (let l = 0; l < o.layers; l++) {
        const layer = new Layer(keyLayout, valueLayout);
        this.layerStates.push(layer);
        // Without a capacity hint nothing is allocated until tokens arrive, so an empty (or
        // restored) cache holds memory in proportion to its tokens, not to its options.
        if (reserve && o.maxTokens !== undefined) for (const stream of [layer.keys, layer.values]) this.reserve(stream, o.maxTokens);
      }
    } catch (error) {
      this.release();
      throw error;
    }
  }

  /** f32 rows of a quantized stream in steady decoding: the window (R keys, R+1 values, or under G
   *  keys when R = 0) plus slack for appends of up to max(G, 16) tokens, so the live rows are
   *  moved to the front only every few appends. */
  private residualWindow(): number {
    const o = this.options;
    return (o.residual > 0 ? o.residual : o.groupSize) + Math.max(o.groupSize, 16);
  }

  /** Reserves room for `maxTokens` (the capacity hint) so that decoding up to it never moves memory.
   *  A prompt longer than the residual window appended in one call still needs f32 room of its size
   *  until the next append quantizes it. */
  private reserve(stream: Stream, maxTokens: number): void {
    const o = this.options;
    const { unitTokens, headUnitBytes, kind } = stream.layout;
    const stored = Math.max(0, maxTokens - o.sinkTokens);
    const sinks = Math.min(o.sinkTokens, maxTokens);
    if (sinks > 0) {
      stream.sinkPtr = this.runtime.alloc(o.kvHeads * sinks * this.rowBytes, 'sink tokens');
      stream.sinkCapacity = sinks;
    }
    const residualRows = kind === 'f32' ? Math.max(stored, 16) : this.residualWindow();
    stream.residualPtr = this.runtime.alloc(o.kvHeads * residualRows * this.rowBytes, 'residual tokens');
    stream.residualCapacity = residualRows;
    if (kind !== 'f32') {
      const units = Math.ceil(stored / unitTokens);
      if (units > 0) {
        stream.quantizedPtr = this.runtime.alloc(o.kvHeads * units * headUnitBytes, 'quantized tokens');
        stream.quantizedCapacity = units;
      }
    }
  }

  private release(): void {
    for (const layer of this.layerStates) {
      for (const stream of [layer.keys, layer.values]) {
        this.runtime.free(stream.quantizedPtr);
        this.runtime.free(stream.residualPtr);
        this.runtime.free(stream.sinkPtr);
        stream.quantizedPtr = stream.residualPtr = stream.sinkPtr = 0;
        stream.quantizedCapacity = stream.residualCapacity = stream.sinkCapacity = 0;
      }
    }
  }

  private checkUsable(where: string): void {
    if (this.disposed) throw new TypeError(`${where}: the cache was disposed`);
  }

  private checkLayer(where: string, layer: unknown): Layer {
    if (typeof layer !== 'number') throw new TypeError(`${where}: layer must be a number, got ${describe(layer)}`);
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.options.layers) {
      throw new RangeError(`${where}: layer must be an integer from 0 to ${this.options.layers - 1}, got ${describe(layer)}`);
    }
    return this.layerStates[layer]!;
  }

  /** Checks the type and length of a [tokens][heads][headDim] array and returns its token count. */
  private checkShape(where: string, name: string, data: unknown, heads: number): number {
    if (!(data instanceof Float32Array)) throw new TypeError(`${where}: ${name} must be a Float32Array, got ${describe(data)}`);
    const rowLength = heads * this.options.headDim;
    if (data.length === 0 || data.length % rowLength !== 0) {
      throw new RangeError(
        `${where}: ${name} must hold a whole number (>= 1) of tokens of ${heads} heads × ${this.options.headDim} = ${rowLength} numbers, ` +
        `got length ${data.length}`,
      );
    }
    return data.length / rowLength;
  }

  /** The tokens the schedule of SPEC.md quantizes from a residual of `count` tokens at the start of an append. */
  private tokensToFlush(stream: Stream, isKeys: boolean, count: number): number {
    const { residual: R, groupSize: G, keyWindow } = this.options;
    switch (stream.layout.kind) {
      case 'f32':
        return 0;
      case 'token':
        return Math.max(0, count - R);
      case 'channel':
        if (R === 0) return Math.floor(count / G) * G;
        if (isKeys && keyWindow === 'sliding') return count >= R ? (Math.floor((count - R) / G) + 1) * G : 0;
        return Math.floor(count / R) * R;
    }
  }

  private planStream(stream: Stream, isKeys: boolean, added: number, sinksNeeded: number): StreamPlan {
    const flushTokens = this.tokensToFlush(stream, isKeys, stream.residualCount);
    const unitsNeeded = Math.ceil((stream.quantizedTokens + flushTokens) / stream.layout.unitTokens);
    const quantizedCapacity = flushTokens > 0 && unitsNeeded > stream.quantizedCapacity
      ? Math.max(unitsNeeded, Math.ceil(stream.quantizedCapacity * 1.5), 4)
      : 0;
    const live = stream.residualCount - flushTokens + added;
    const start = stream.residualStart + flushTokens;
    let residualCapacity = 0;
    let compact = false;
    if (stream.layout.kind === 'f32') {
      if (live > stream.residualCapacity) {
        compact = true;
        residualCapacity = Math.max(live, Math.ceil(stream.residualCapacity * 1.5));
      }
    } else {
      const wanted = Math.max(live, this.residualWindow());
      if (live > stream.residualCapacity || stream.residualCapacity > 2 * wanted) {
        // Grow for a long append, or give back the room of a long prompt once it is quantized:
        // f32 memory stays bounded by the window plus the newest append (SPEC.md).
        compact = true;
        residualCapacity = wanted;
      } else if (start + live > stream.residualCapacity) {
        compact = true;
      }
    }
    // Sinks arrive a few at a time: grow geometrically up to S.
    const sinkCapacity = sinksNeeded > stream.sinkCapacity
      ? Math.min(this.options.sinkTokens, Math.max(sinksNeeded, 2 * stream.sinkCapacity, 4))
      : 0;
    return { stream, flushTokens, quantizedCapacity, residualCapacity, compact, sinkCapacity, freshQuantized: 0, freshResidual: 0, freshSinks: 0 };
  }

  /**
   * Appends n >= 1 tokens of keys and values, each a Float32Array [n][kvHeads][headDim].
   * Residual tokens left beyond the window by earlier appends are quantized first (SPEC.md), so the
   * appended tokens are always attended in full precision right after.
   */
  append(layer: number, keys: Float32Array, values: Float32Array): void {
    const where = 'KiviCache.append';
    this.checkUsable(where);
    const state = this.checkLayer(where, layer);
    const o = this.options;
    const n = this.checkShape(where, 'keys', keys, o.kvHeads);
    const nValues = this.checkShape(where, 'values', values, o.kvHeads);
    if (n !== nValues) throw new RangeError(`${where}: keys and values must hold the same number of tokens, got ${n} and ${nValues}`);
    if (state.tokens + n > 2 ** 31 - 1) throw new RangeError(`${where}: a layer holds at most 2^31-1 tokens, got ${state.tokens} + ${n}`);

    // The input goes to a staging area of the shared workspace (one copy each), is checked there,
    // and is scattered into per-head rows by the kernels. The workspace is not cache state, so a
    // refused input changes nothing.
    const rt = this.runtime;
    const inputBytes = keys.length * 4;
    const staging = rt.workspace(2 * inputBytes + this.quantizeScratchBytes(), 'append staging');
    try {
      const stagedKeys = staging;
      const stagedValues = staging + inputBytes;
      const scratch = staging + 2 * inputBytes; // the quantizers' scratch, after the staged input
      rt.f32.set(keys, stagedKeys / 4);
      rt.f32.set(values, stagedValues / 4);
      for (const [name, data, ptr] of [['keys', keys, stagedKeys], ['values', values, stagedValues]] as const) {
        const bad = rt.kernels.f32_first_invalid(data.length, ptr, MAX_ABS_INPUT);
        if (bad >= 0) {
          const x = data[bad]!;
          const why = Number.isFinite(x) ? `|x| <= ${MAX_ABS_INPUT} (a half must hold it)` : 'finite numbers';
          throw new RangeError(`${where}: ${name} must hold ${why}, got ${x} at index ${bad}`);
        }
      }

      const sinkTake = Math.min(n, o.sinkTokens - state.sinkCount);
      const added = n - sinkTake;
      const sinksNeeded = state.sinkCount + sinkTake;
      const plans = [this.planStream(state.keys, true, added, sinksNeeded), this.planStream(state.values, false, added, sinksNeeded)];
      this.allocate(plans);

      // From here on nothing can fail: the state changes.
      const staged = [stagedKeys, stagedValues];
      plans.forEach((plan) => {
        const s = plan.stream;
        if (plan.freshSinks === 0) return;
        this.moveHeads(s.sinkPtr, s.sinkCapacity, plan.freshSinks, plan.sinkCapacity, this.rowBytes, state.sinkCount);
        rt.free(s.sinkPtr);
        s.sinkPtr = plan.freshSinks;
        s.sinkCapacity = plan.sinkCapacity;
      });
      if (sinkTake > 0) {
        [state.keys, state.values].forEach((stream, i) => {
          rt.kernels.f32_scatter_heads(sinkTake, o.kvHeads, o.headDim, staged[i]!, stream.sinkPtr + state.sinkCount * this.rowBytes, stream.sinkCapacity * this.rowBytes);
        });
        state.sinkCount += sinkTake;
      }
      const skipBytes = sinkTake * o.kvHeads * this.rowBytes;
      plans.forEach((plan, i) => this.flushAndAdd(plan, staged[i]! + skipBytes, added, scratch));
      state.tokens += n;
    } finally {
      rt.trimWorkspace(WORKSPACE_KEEP_BYTES); // a long prompt's staging does not stay allocated
    }
  }

  /** Allocates everything the plans need, all or nothing. */
  private allocate(plans: StreamPlan[]): void {
    const rt = this.runtime;
    const o = this.options;
    try {
      for (const plan of plans) {
        if (plan.residualCapacity > 0) plan.freshResidual = rt.alloc(o.kvHeads * plan.residualCapacity * this.rowBytes, 'residual tokens');
        if (plan.quantizedCapacity > 0) {
          plan.freshQuantized = rt.alloc(o.kvHeads * plan.quantizedCapacity * plan.stream.layout.headUnitBytes, 'quantized tokens');
        }
        if (plan.sinkCapacity > 0) plan.freshSinks = rt.alloc(o.kvHeads * plan.sinkCapacity * this.rowBytes, 'sink tokens');
      }
    } catch (error) {
      for (const plan of plans) {
        rt.free(plan.freshResidual);
        rt.free(plan.freshQuantized);
        rt.free(plan.freshSinks);
        plan.freshResidual = plan.freshQuantized = plan.freshSinks = 0;
      }
      throw error;
    }
  }

  private quantizeScratchBytes(): number {
    return this.options.groupSize * this.options.headDim + 64;
  }

  /** Copies `used` units (or rows) of every head from one per-head region to another. */
  private moveHeads(from: number, fromCapacity: number, to: number, toCapacity: number, unitBytes: number, used: number, fromOffset = 0): void {
    const u8 = this.runtime.u8;
    for (let h = 0; h < this.options.kvHeads; h++) {
      const src = from + (h * fromCapacity + fromOffset) * unitBytes;
      u8.copyWithin(to + h * toCapacity * unitBytes, src, src + used * unitBytes);
    }
  }

  /** Quantizes what the plan flushes, compacts or moves the residual rows, then adds `added` staged
   *  tokens ([added][kvHeads][D] at `staged`) as residual rows. */
  private flushAndAdd(plan: StreamPlan, staged: number, added: number, scratch: number): void {
    const rt = this.runtime;
    const k = rt.kernels;
    const o = this.options;
    const s = plan.stream;
    const layout = s.layout;
    if (plan.freshQuantized !== 0) {
      this.moveHeads(s.quantizedPtr, s.quantizedCapacity, plan.freshQuantized, plan.quantizedCapacity, layout.headUnitBytes, s.quantizedUnits);
      rt.free(s.quantizedPtr);
      s.quantizedPtr = plan.freshQuantized;
      s.quantizedCapacity = plan.quantizedCapacity;
    }
    if (plan.flushTokens > 0) {
      const src = s.residualPtr + s.residualStart * this.rowBytes;
      const srcHeadStride = s.residualCapacity * this.rowBytes;
      const dstHeadStride = s.quantizedCapacity * layout.headUnitBytes;
      if (layout.kind === 'channel') {
        const dst = s.quantizedPtr + (s.quantizedTokens / layout.unitTokens) * layout.headUnitBytes;
        k.f32_qchannel_quantize(o.kvHeads, plan.flushTokens / layout.unitTokens, o.headDim, o.groupSize, o.bits, src, srcHeadStride, dst, dstHeadStride, scratch);
      } else {
        k.f32_qtoken_quantize(o.kvHeads, plan.flushTokens, s.quantizedTokens, o.headDim, layout.groupLength, o.bits, src, srcHeadStride, s.quantizedPtr, dstHeadStride, scratch);
      }
      s.quantizedTokens += plan.flushTokens;
      s.residualStart += plan.flushTokens;
      s.residualCount -= plan.flushTokens;
    }
    if (plan.compact) {
      const target = plan.freshResidual || s.residualPtr;
      const capacity = plan.freshResidual ? plan.residualCapacity : s.residualCapacity;
      this.moveHeads(s.residualPtr, s.residualCapacity, target, capacity, this.rowBytes, s.residualCount, s.residualStart);
      if (plan.freshResidual !== 0) {
        rt.free(s.residualPtr);
        s.residualPtr = plan.freshResidual;
        s.residualCapacity = plan.residualCapacity;
      }
      s.residualStart = 0;
    }
    if (added > 0) {
      const dst = s.residualPtr + (s.residualStart + s.residualCount) * this.rowBytes;
      k.f32_scatter_heads(added, o.kvHeads, o.headDim, staged, dst, s.residualCapacity * this.rowBytes);
      s.residualCount += added;
    }
  }

  /**
   * Attention of the newest `qTokens` tokens over the cache of one layer (causal: query i sees
   * tokens 0 .. tokens - qTokens + i). queries: Float32Array [qTokens][queryHeads][headDim].
   * Returns (or fills `out`) Float32Array [qTokens][queryHeads][headDim].
   */
  attend(layer: number, queries: Float32Array, out?: Float32Array, options?: AttendOptions): Float32Array {
    const where = 'KiviCache.attend';
    this.checkUsable(where);
    const state = this.checkLayer(where, layer);
    const o = this.options;
    const D = o.headDim;
    const qTokens = this.checkShape(where, 'queries', queries, o.queryHeads);
    checkFinite(where, 'queries', queries);
    if (qTokens > state.tokens) {
      throw new RangeError(`${where}: queries must be at most the ${state.tokens} tokens cached in layer ${layer}, got ${qTokens}`);
    }
    const outLength = qTokens * o.queryHeads * D;
    if (out !== undefined) {
      if (!(out instanceof Float32Array)) throw new TypeError(`${where}: out must be a Float32Array, got ${describe(out)}`);
      if (out.length !== outLength) throw new RangeError(`${where}: out must have length ${outLength} (${qTokens} × ${o.queryHeads} × ${D}), got ${out.length}`);
    }
    if (options !== undefined && (typeof options !== 'object' || options === null)) {
      throw new TypeError(`${where}: options must be an object, got ${describe(options)}`);
    }
    const scale = options?.scale ?? 1 / Math.sqrt(D);
    if (typeof scale !== 'number') throw new TypeError(`${where}: scale must be a number, got ${describe(scale)}`);
    if (!Number.isFinite(scale) || scale <= 0) {
      throw new RangeError(`${where}: scale must be a finite number > 0, got ${describe(scale)}`);
    }
    const result = out ?? new Float32Array(outLength);

    const N = state.tokens;
    const headsPerKv = o.queryHeads / o.kvHeads;
    const tileTokens = Math.max(1, Math.min(qTokens, Math.floor(SCORE_BUDGET_FLOATS / (headsPerKv * N))));
    const maxRows = tileTokens * headsPerKv;
    const G = o.groupSize;
    const groups = D / Math.min(G, D);
    // The largest scratch any kernel of this layer may use (assembly/attention.ts, per kernel).
    const scratchFloats = Math.max(
      G * D + 3 * D + maxRows * D, // qchannel_f32_scores, qchannel_f32_accumulate
      VALUE_BLOCK * D + maxRows * groups + 2 * VALUE_BLOCK * groups, // qtoken_f32_scores
      2 * VALUE_BLOCK * groups + 2 * maxRows * groups + VALUE_BLOCK + maxRows * groups * (VALUE_BLOCK / 4) * 8, // qtoken_f32_accumulate
    );
    const queryFloats = maxRows * D;
    const rt = this.runtime;
    const base = rt.workspace((2 * queryFloats + maxRows * N + scratchFloats) * 4 + 64);
    const queryPtr = base;
    const outPtr = queryPtr + queryFloats * 4;
    const scorePtr = outPtr + queryFloats * 4;
    const scratchPtr = scorePtr + maxRows * N * 4;
    const f32 = rt.f32;

    for (let first = 0; first < qTokens; first += tileTokens) {
      const tile = Math.min(tileTokens, qTokens - first);
      const rows = tile * headsPerKv;
      for (let h = 0; h < o.kvHeads; h++) {
        // Query rows of this kv head: [tile token][head in group][D], scaled.
        for (let i = 0; i < tile; i++) {
          for (let j = 0; j < headsPerKv; j++) {
            const src = ((first + i) * o.queryHeads + h * headsPerKv + j) * D;
            const dst = queryPtr / 4 + (i * headsPerKv + j) * D;
            for (let c = 0; c < D; c++) f32[dst + c] = queries[src + c]! * scale;
          }
        }
        f32.fill(0, outPtr / 4, outPtr / 4 + rows * D);
        this.scores(state, h, rows, queryPtr, scorePtr, N, scratchPtr);
        rt.kernels.f32_softmax(rows, N, N - qTokens + first + 1, headsPerKv, scorePtr, N);
        this.accumulate(state, h, rows, scorePtr, N, outPtr, scratchPtr);
        for (let i = 0; i < tile; i++) {
          for (let j = 0; j < headsPerKv; j++) {
            const dst = ((first + i) * o.queryHeads + h * headsPerKv + j) * D;
            const src = outPtr / 4 + (i * headsPerKv + j) * D;
            result.set(f32.subarray(src, src + D), dst);
          }
        }
      }
    }
    return result;
  }

  /** The stored runs of one stream for kv head h, oldest first: sinks | quantized | residual. */
  private segments(state: Layer, s: Stream, h: number): Segment[] {
    const row = this.rowBytes;
    const list: Segment[] = [];
    if (state.sinkCount > 0) list.push({ kind: 'f32', data: s.sinkPtr + h * s.sinkCapacity * row, count: state.sinkCount, stride: row });
    if (s.quantizedTokens > 0) {
      const { kind, unitTokens, headUnitBytes } = s.layout;
      const data = s.quantizedPtr + h * s.quantizedCapacity * headUnitBytes;
      // Key blocks are counted in blocks, value blocks in tokens (the last block may be partial).
      list.push({ kind, data, count: kind === 'channel' ? s.quantizedTokens / unitTokens : s.quantizedTokens, stride: headUnitBytes });
    }
    if (s.residualCount > 0) {
      list.push({ kind: 'f32', data: s.residualPtr + (h * s.residualCapacity + s.residualStart) * row, count: s.residualCount, stride: row });
    }
    return list;
  }

  /** Scores of `rows` query rows of kv head h against every token, in token order. */
  private scores(state: Layer, h: number, rows: number, queries: number, scores: number, N: number, scratch: number): void {
    const k = this.runtime.kernels;
    const { headDim: D, groupSize: G, bits } = this.options;
    let column = 0;
    for (const seg of this.segments(state, state.keys, h)) {
      const at = scores + column * 4;
      if (seg.kind === 'f32') k.f32_f32_scores(rows, seg.count, D, queries, seg.data, seg.stride, at, N);
      else if (seg.kind === 'channel') k.qchannel_f32_scores(rows, seg.count, D, G, bits, queries, seg.data, seg.stride, at, N, scratch);
      else k.qtoken_f32_scores(rows, seg.count, D, state.keys.layout.groupLength, bits, queries, seg.data, seg.stride, at, N, scratch);
      column += seg.kind === 'channel' ? seg.count * G : seg.count;
    }
  }

  /** out += weights · values of kv head h, in token order. */
  private accumulate(state: Layer, h: number, rows: number, weights: number, N: number, out: number, scratch: number): void {
    const k = this.runtime.kernels;
    const { headDim: D, groupSize: G, bits } = this.options;
    let column = 0;
    for (const seg of this.segments(state, state.values, h)) {
      const at = weights + column * 4;
      if (seg.kind === 'f32') k.f32_f32_accumulate(rows, seg.count, D, at, N, seg.data, seg.stride, out);
      else if (seg.kind === 'channel') k.qchannel_f32_accumulate(rows, seg.count, D, G, bits, at, N, seg.data, seg.stride, out, scratch);
      else k.qtoken_f32_accumulate(rows, seg.count, D, state.values.layout.groupLength, bits, at, N, seg.data, seg.stride, out, scratch);
      column += seg.kind === 'channel' ? seg.count * G : seg.count;
    }
  }

  /** Tokens cached in `layer`. */
  tokens(layer: number): number {
    const where = 'KiviCache.tokens';
    this.checkUsable(where);
    return this.checkLayer(where, layer).tokens;
  }

  /** Bytes this cache holds in wasm memory (allocated capacity, including room not yet filled). */
  get byteLength(): number {
    if (this.disposed) return 0;
    let bytes = 0;
    for (const layer of this.layerStates) {
      for (const s of [layer.keys, layer.values]) {
        bytes += s.quantizedCapacity * s.layout.headUnitBytes + s.residualCapacity * this.rowBytes;
        bytes += s.sinkCapacity * this.rowBytes;
      }
    }
    return bytes * this.options.kvHeads;
  }

  /** Counts and bytes of one layer, or summed over all layers when `layer` is omitted. */
  stats(layer?: number): CacheStats {
    const where = 'KiviCache.stats';
    this.checkUsable(where);
    const layers = layer === undefined ? this.layerStates : [this.checkLayer(where, layer)];
    const total: CacheStats = { tokens: 0, sinkTokens: 0, quantizedKeys: 0, residualKeys: 0, quantizedValues: 0, residualValues: 0, bytes: 0, bitsPerElement: 0 };
    for (const l of layers) {
      total.tokens += l.tokens;
      total.sinkTokens += l.sinkCount;
      total.quantizedKeys += l.keys.quantizedTokens;
      total.residualKeys += l.keys.residualCount;
      total.quantizedValues += l.values.quantizedTokens;
      total.residualValues += l.values.residualCount;
      for (const s of [l.keys, l.values]) {
        total.bytes += this.options.kvHeads * (s.quantizedTokens * bytesPerToken(s.layout) + (s.residualCount + l.sinkCount) * this.rowBytes);
      }
    }
    const numbers = total.tokens * 2 * this.options.kvHeads * this.options.headDim;
    total.bitsPerElement = numbers === 0 ? 0 : (total.bytes * 8) / numbers;
    return total;
  }

  /** The stored quantized groups of one layer in canonical order (for debugging and for comparing with the reference). */
  inspect(layer: number): { keys: GroupListing | null; values: GroupListing | null } {
    const where = 'KiviCache.inspect';
    this.checkUsable(where);
    const state = this.checkLayer(where, layer);
    const u8 = this.runtime.u8;
    const listing = (s: Stream) => s.layout.kind === 'f32' ? null
      : decodeGroups(s.layout, this.options, u8, s.quantizedPtr, s.quantizedCapacity * s.layout.headUnitBytes, s.quantizedTokens);
    return { keys: listing(state.keys), values: listing(state.values) };
  }

  /** The cache in the persistent format of docs/FORMAT.md (only the used bytes, with a CRC-32). */
  serialize(): Uint8Array {
    this.checkUsable('KiviCache.serialize');
    return serializeCache(this.options, this.layerStates, () => this.runtime.u8);
  }

  /** @internal Use `kivi.restoreCache(bytes)`. Everything is checked (src/serialize.ts) before wasm memory is touched. */
  static restore(runtime: WasmRuntime, bytes: unknown): KiviCache {
    const parsed = parseCache(bytes);
    // Only what the stored tokens need is allocated (below); appends grow the regions as usual.
    const cache = new KiviCache(runtime, parsed.options, false);
    try {
      parsed.layers.forEach((p, l) => {
        const state = cache.layerStates[l]!;
        state.tokens = p.tokens;
        state.sinkCount = p.sinkCount;
        cache.restoreStream(state.keys, p.streams[0], parsed.bytes, p.sinkCount);
        cache.restoreStream(state.values, p.streams[1], parsed.bytes, p.sinkCount);
      });
    } catch (error) {
      cache.dispose();
      throw error;
    }
    return cache;
  }

  private restoreStream(s: Stream, p: ParsedStream, bytes: Uint8Array, sinkCount: number): void {
    const rt = this.runtime;
    const { kvHeads: H } = this.options;
    const row = this.rowBytes;
    const unitBytes = s.layout.headUnitBytes;
    if (sinkCount > 0) {
      s.sinkPtr = rt.alloc(H * sinkCount * row, 'sink tokens');
      s.sinkCapacity = sinkCount;
    }
    if (p.units > 0) {
      s.quantizedPtr = rt.alloc(H * p.units * unitBytes, 'quantized tokens');
      s.quantizedCapacity = p.units;
    }
    // A restored cache starts with nothing reserved (see the constructor's `reserve`).
    if (p.residualCount > 0) {
      s.residualPtr = rt.alloc(H * p.residualCount * row, 'residual tokens');
      s.residualCapacity = p.residualCount;
    }
    const u8 = rt.u8;
    for (let h = 0; h < H; h++) {
      u8.set(bytes.subarray(p.sinks + h * sinkCount * row, p.sinks + (h + 1) * sinkCount * row), s.sinkPtr + h * sinkCount * row);
      u8.set(bytes.subarray(p.quantized + h * p.units * unitBytes, p.quantized + (h + 1) * p.units * unitBytes), s.quantizedPtr + h * p.units * unitBytes);
      u8.set(bytes.subarray(p.residual + h * p.residualCount * row, p.residual + (h + 1) * p.residualCount * row), s.residualPtr + h * s.residualCapacity * row);
    }
    s.quantizedTokens = p.quantizedTokens;
    s.residualStart = 0;
    s.residualCount = p.residualCount;
  }

  /** Frees the cache's memory for reuse by later caches; later calls throw. A second dispose() does nothing. */
  dispose(): void {
    if (this.disposed) return;
    this.release();
    this.disposed = true;
  }

  get isDisposed(): boolean {
    return this.disposed;
  }
}

// KiviCache: per-layer state, validation, and the jobs that append to it and attend over it. All
// storage lives in the wasm memory of the Kivi instance that created the cache (storage.ts draws the
// regions); when tokens are quantized is schedule.ts's; how a job reaches the kernels (one thread or
// the pool) is the runtime's (wasm.ts).
//
// Every call checks its input and plans its allocations before it changes anything, and writes only
// into memory no cache reads yet (new chunks, the free rows after the live ones, fresh regions) until
// the jobs have run: a call that throws — bad input, no memory, a worker that failed — leaves every
// cache as it was.

import type { WasmRuntime } from './wasm';
import { describe, resolveOptions, type ResolvedOptions } from './options';
import { bytesPerToken, decodeGroups, halfToNumber, streamLayout, VALUE_BLOCK, type GroupListing, type StreamLayout } from './layout';
import { parseCache, serializeCache, type ParsedStream } from './serialize';
import { Chunk, copyHeads, releaseChunk, Stream, type Rows, type View } from './storage';
import { serializeStream, type CacheStream, type SerializeStreamOptions } from './stream';
import { tokensToFlush, undoRows, type StreamRole } from './schedule';
import {
  Areas, ATTEND_JOB_BYTES, AttendMode, attendRanges, attendScratchBytes, attendTiles, COPY_JOB_BYTES, COPY_RECORD_BYTES,
  ElementType, FLUSH_JOB_BYTES, FLUSH_RECORD_BYTES, FlushOp, JobKind, partialBytes, SEGMENT_BYTES, segmentKind,
  VALIDATE_JOB_BYTES, validateTasks, writeAttend, writeCopy, writeFlush, writeHeader, writeSegments, writeValidate,
  type AttendShape, type CopyRecord, type FlushRecord, type Segment,
} from './jobs';

/** Largest magnitude a key or value may have: the stored halves must hold a group's min and scale. */
export const MAX_ABS_INPUT = 65504;

/** The shared workspace is kept after a call up to this size; a long prompt's staging is freed. */
const WORKSPACE_KEEP_BYTES = 16 << 20;
/** Bytes of keys (and as many of values) an append stages at a time: longer prompts go in slices. */
const STAGE_SLICE_BYTES = 128 << 20;
let stageSliceBytes = STAGE_SLICE_BYTES;
/** Tests: stage appends in slices of this many bytes (undefined: the default), to cross slices cheaply. */
export function setStageSliceBytesForTests(bytes: number | undefined): void {
  stageSliceBytes = bytes ?? STAGE_SLICE_BYTES;
}

/**
 * Tokens per attention range, from the number of kv heads (rounded up to a multiple of every block
 * size): a decode step has kvHeads × N / L range tasks, enough for 16 threads at 4K tokens with
 * L = 64·kvHeads, and each range costs a little on its own (its softmax, its share of the fold), so
 * layers with many heads take longer ranges (up to 2048: Llama-2-7B's 32 heads) and those with few
 * shorter ones (down to 256: MQA). It depends on the options only, never on the threads.
 */
function rangeTarget(kvHeads: number): number {
  return Math.min(2048, Math.max(256, 64 * kvHeads));
}

/** SPLIT spreads the ranges of a head over the threads when heads and tiles alone are too few. */
function attendMode(threads: number, ranges: number, headTiles: number, partialsBytes: number): AttendMode {
  return threads > 1 && ranges > 1 && headTiles < 4 * threads && partialsBytes <= PARTIALS_BUDGET ? AttendMode.SPLIT : AttendMode.WHOLE;
}

/** Query rows per attention tile (a tile is a few query tokens of one kv head's GQA group). */
const TILE_ROWS = 16;

/** Bytes the SPLIT partials of one attend may take; beyond, each task folds its ranges itself. */
const PARTIALS_BUDGET = 32 << 20;

export interface AttendOptions {
  /** Multiplies q·k; default 1/sqrt(headDim). */
  scale?: number;
}

/** Keys, values and queries: f32, or IEEE half (a Float16Array, or a Uint16Array of half bits). */
export type Tensor = Float32Array | Uint16Array | Float16ArrayLike;

/** A Float16Array where the runtime has one (typed structurally: TypeScript's lib may lack it). */
export interface Float16ArrayLike extends ArrayBufferView {
  readonly length: number;
  readonly BYTES_PER_ELEMENT: 2;
  [index: number]: number;
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
  /** Of `bytes`, those in quantized blocks this cache shares with forks (held once for all of them). */
  sharedBytes: number;
  /** bytes·8 per cached number (keys and values), metadata and f32 parts included. */
  bitsPerElement: number;
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

  stream(role: StreamRole): Stream {
    return role === 'keys' ? this.keys : this.values;
  }
}

/** What an append does to one stream, decided before anything is allocated. */
interface StreamPlan {
  readonly stream: Stream;
  readonly role: StreamRole;
  /** Residual tokens it quantizes (the oldest). */
  readonly flush: number;
  /** Of those, the ones written after the tokens of the writable tail view. */
  readonly inTail: number;
  /** Units of a new chunk (0: none). */
  readonly chunkUnits: number;
  /** Tokens of a shared, partly filled last value block that the new chunk starts with (a copy). */
  readonly carried: number;
  /** Rows of a fresh residual region (0: the current one, in place). */
  readonly residualCapacity: number;
  /** History rows (the newest flushed inputs) moved into a fresh region. */
  readonly keep: number;
  /** Rows of a fresh sink region (0: the current one). */
  readonly sinkCapacity: number;
  chunk: Chunk | null;
  residualPtr: number;
  sinkPtr: number;
}

const Float16ArrayConstructor = (globalThis as { Float16Array?: new (...args: never[]) => Float16ArrayLike }).Float16Array;

/** The element type of an input or output array, or null if it is neither f32 nor f16. */
function elementType(data: unknown): ElementType | null {
  if (data instanceof Float32Array) return ElementType.F32;
  if (data instanceof Uint16Array || (Float16ArrayConstructor !== undefined && data instanceof Float16ArrayConstructor)) return ElementType.F16;
  return null;
}

const TENSOR_TYPES = `a Float32Array, ${Float16ArrayConstructor ? 'a Float16Array, ' : ''}or a Uint16Array of IEEE half bits`;

function lcm(a: number, b: number): number {
  const gcd = (x: number, y: number): number => (y === 0 ? x : gcd(y, x % y));
  return (a / gcd(a, b)) * b;
}

export class KiviCache {
  readonly options: ResolvedOptions;
  private readonly runtime: WasmRuntime;
  private readonly layerStates: Layer[];
  /** Bytes of one f32 row of one head. */
  private readonly rowBytes: number;
  /** Tokens per attention range: a multiple of every block size (G, 32). */
  private readonly rangeTokens: number;
  private disposed = false;
  /** Counts the changes of the stored tokens (a stream being read checks it, stream.ts). */
  private revision = 0;

  /** @internal Use `kivi.createCache(options)`. `reserve: false` skips the maxTokens reservation
   *  (a restored or forked cache holds only what its tokens need; its options keep maxTokens). */
  constructor(runtime: WasmRuntime, options: unknown, reserve = true) {
    this.options = resolveOptions(options);
    this.runtime = runtime;
    const o = this.options;
    this.rowBytes = o.headDim * 4;
    const unit = lcm(o.groupSize, VALUE_BLOCK);
    this.rangeTokens = unit * Math.ceil(rangeTarget(o.kvHeads) / unit);
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

  /** f32 rows a quantized stream keeps in steady decoding: the window (R keys, R+1 values, or under
   *  G keys when R = 0), the undo history (schedule.ts) and slack for appends of up to max(G, 16)
   *  tokens, so that the rows move to a fresh region only every few appends. */
  private residualRows(stream: Stream): number {
    const o = this.options;
    // The window, the undo history, and room to append into before the rows move to a new region
    // (a move copies the history and the window: with R of room, decoding moves a row per R/2 tokens).
    return (o.residual > 0 ? o.residual + 1 : o.groupSize) + undoRows(o, stream.layout.kind) + Math.max(o.residual, o.groupSize, 16);
  }

  /** Reserves room for `maxTokens` (the capacity hint) so that decoding up to it never moves memory. */
  private reserve(stream: Stream, maxTokens: number): void {
    const o = this.options;
    const rt = this.runtime;
    const H = o.kvHeads;
    const { unitTokens, headUnitBytes, kind } = stream.layout;
    const stored = Math.max(0, maxTokens - o.sinkTokens);
    const sinks = Math.min(o.sinkTokens, maxTokens);
    if (sinks > 0) stream.sinks = { ptr: rt.alloc(H * sinks * this.rowBytes, 'sink tokens'), capacity: sinks };
    const rows = kind === 'f32' ? Math.max(stored, 16) : this.residualRows(stream);
    stream.residual = { ptr: rt.alloc(H * rows * this.rowBytes, 'residual tokens'), capacity: rows };
    if (kind !== 'f32') {
      const units = Math.ceil(stored / unitTokens);
      if (units > 0) stream.views.push({ chunk: new Chunk(rt.alloc(H * units * headUnitBytes, 'quantized tokens'), units), tokens: 0 });
    }
  }

  private release(): void {
    for (const layer of this.layerStates) {
      layer.keys.release(this.runtime);
      layer.values.release(this.runtime);
    }
  }

  private checkUsable(where: string): void {
    if (this.disposed) throw new TypeError(`${where}: the cache was disposed`);
    if (this.runtime.isClosed) throw new TypeError(`${where}: the Kivi instance that made this cache was closed`);
  }

  private checkLayer(where: string, layer: unknown): Layer {
    if (typeof layer !== 'number') throw new TypeError(`${where}: layer must be a number, got ${describe(layer)}`);
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.options.layers) {
      throw new RangeError(`${where}: layer must be an integer from 0 to ${this.options.layers - 1}, got ${describe(layer)}`);
    }
    return this.layerStates[layer]!;
  }

  /** Checks the type and length of a [tokens][heads][headDim] array; returns its token count and type. */
  private checkShape(where: string, name: string, data: unknown, heads: number): { tokens: number; type: ElementType } {
    const type = elementType(data);
    if (type === null) throw new TypeError(`${where}: ${name} must be ${TENSOR_TYPES}, got ${describe(data)}`);
    const length = (data as Tensor).length;
    const rowLength = heads * this.options.headDim;
    if (length === 0 || length % rowLength !== 0) {
      throw new RangeError(
        `${where}: ${name} must hold a whole number (>= 1) of tokens of ${heads} heads × ${this.options.headDim} = ${rowLength} numbers, ` +
        `got length ${length}`,
      );
    }
    return { tokens: length / rowLength, type };
  }

  /** Copies elements first … first + count − 1 of an input into wasm memory at `at` (f32 values, or half bits). */
  private stage(data: Tensor, type: ElementType, at: number, first: number, count: number): void {
    const rt = this.runtime;
    if (type === ElementType.F32) rt.f32.set(first === 0 && count === data.length ? (data as Float32Array) : (data as Float32Array).subarray(first, first + count), at >>> 2);
    else rt.u16.set(new Uint16Array(data.buffer, data.byteOffset + 2 * first, count), at >>> 1);
  }

  /** Index of the first element of the `count` staged at `at` that is not finite or exceeds maxAbs, or -1. */
  private firstInvalid(areas: Areas, base: number, count: number, at: number, type: ElementType, maxAbs: number): number {
    const rt = this.runtime;
    const tasks = validateTasks(count);
    const job = base + areas.add(VALIDATE_JOB_BYTES);
    const results = base + areas.add(tasks * 4);
    writeHeader(rt.i32, job, JobKind.VALIDATE, tasks, 0, 0);
    writeValidate(rt.i32, rt.f32, job, count, at, type, maxAbs, results);
    rt.run(job, count);
    const found = rt.i32.subarray(results >>> 2, (results >>> 2) + tasks).find((i) => i >= 0);
    return found ?? -1;
  }

  /**
   * Appends n >= 1 tokens of keys and values, each [n][kvHeads][headDim] as f32 or f16.
   * Residual tokens left beyond the window by earlier appends are quantized first (SPEC.md), so the
   * appended tokens are always attended in full precision right after.
   */
  append(layer: number, keys: Tensor, values: Tensor): void {
    const where = 'KiviCache.append';
    this.checkUsable(where);
    const state = this.checkLayer(where, layer);
    const o = this.options;
    const k = this.checkShape(where, 'keys', keys, o.kvHeads);
    const v = this.checkShape(where, 'values', values, o.kvHeads);
    if (k.tokens !== v.tokens) throw new RangeError(`${where}: keys and values must hold the same number of tokens, got ${k.tokens} and ${v.tokens}`);
    if (k.type !== v.type) throw new TypeError(`${where}: keys and values must have the same element type, got ${describe(keys)} and ${describe(values)}`);
    const n = k.tokens;
    if (state.tokens + n > 2 ** 31 - 1) throw new RangeError(`${where}: a layer holds at most 2^31-1 tokens, got ${state.tokens} + ${n}`);

    const rt = this.runtime;
    const type = k.type;
    const elementBytes = type === ElementType.F32 ? 4 : 2;
    const rowLength = o.kvHeads * o.headDim;
    // A long prompt is staged in slices of tokens (one block of wasm memory holds at most 1 GiB):
    // every slice is checked before anything changes, then staged again to be copied in.
    const sliceTokens = Math.max(1, Math.min(n, Math.floor(stageSliceBytes / (rowLength * elementBytes))));
    const sliced = sliceTokens < n;
    const sliceCount = sliceTokens * rowLength;
    const sinkTake = Math.min(n, o.sinkTokens - state.sinkCount);
    const added = n - sinkTake;
    const plans = (['keys', 'values'] as const).map((role) => this.planStream(state, role, added, state.sinkCount + sinkTake));
    // The workspace: staged keys and values (of one slice), then the jobs and their records, then per-thread scratch.
    const areas = new Areas();
    const stagedKeys = areas.add(sliceCount * elementBytes);
    const stagedValues = areas.add(sliceCount * elementBytes);
    const jobs = areas.add(Math.max(VALIDATE_JOB_BYTES + validateTasks(2 * sliceCount) * 4, FLUSH_JOB_BYTES + 4 * FLUSH_RECORD_BYTES, COPY_JOB_BYTES + 4 * COPY_RECORD_BYTES) + 64);
    const scratch = areas.add(rt.threads * this.quantizeScratchBytes());
    const base = rt.workspace(areas.size, 'append staging');
    const stageSlice = (first: number, tokens: number) => {
      this.stage(keys, type, base + stagedKeys, first * rowLength, tokens * rowLength);
      this.stage(values, type, base + stagedValues, first * rowLength, tokens * rowLength);
    };
    try {
      for (let first = 0; first < n; first += sliceTokens) {
        const tokens = Math.min(sliceTokens, n - first);
        stageSlice(first, tokens);
        // A whole slice's keys and values lie one after the other: one check covers both.
        const count = tokens * rowLength;
        const runs = tokens === sliceTokens ? [[base + stagedKeys, 2 * count, 0]] : [[base + stagedKeys, count, 0], [base + stagedValues, count, count]];
        for (const [at, length, offset] of runs as [number, number, number][]) {
          const found = this.firstInvalid(new Areas(), base + jobs, length, at, type, MAX_ABS_INPUT);
          if (found < 0) continue;
          const bad = offset + found;
          const [name, data, inSlice] = bad < count ? ['keys', keys, bad] as const : ['values', values, bad - count] as const;
          const index = first * rowLength + inSlice;
          const x = data[index]!;
          const shown = type === ElementType.F32 ? x : `half bits 0x${x.toString(16).padStart(4, '0')}`;
          const why = type === ElementType.F32 && Number.isFinite(x) ? `|x| <= ${MAX_ABS_INPUT} (a half must hold it)` : 'finite numbers';
          throw new RangeError(`${where}: ${name} must hold ${why}, got ${shown} at index ${index}`);
        }
      }
      this.allocate(plans);
      try {
        this.runFlush(plans, base + jobs, base + scratch);
        this.moveRows(state, plans);
        for (let first = 0; first < n; first += sliceTokens) {
          const tokens = Math.min(sliceTokens, n - first);
          if (sliced) stageSlice(first, tokens); // else still staged from the check
          this.runCopy(state, plans, sinkTake, first, tokens, type, [base + stagedKeys, base + stagedValues], base + jobs);
        }
      } catch (error) {
        this.freePlanned(plans);
        throw error;
      }
      // From here on nothing can fail: the state changes.
      const position = state.tokens;
      for (const plan of plans) this.commit(state, plan, position, added);
      state.sinkCount += sinkTake;
      state.tokens += n;
      this.revision++;
    } finally {
      rt.trimWorkspace(WORKSPACE_KEEP_BYTES);
    }
  }

  private quantizeScratchBytes(): number {
    return Math.ceil((this.options.groupSize * this.options.headDim + 64) / 16) * 16;
  }

  private planStream(state: Layer, role: StreamRole, added: number, sinksNeeded: number): StreamPlan {
    const o = this.options;
    const s = state.stream(role);
    const { kind, unitTokens } = s.layout;
    const flush = tokensToFlush(o, role, kind, s.residualCount);
    // Quantized: after the writable tail's tokens, then in a new chunk.
    let inTail = 0;
    let chunkUnits = 0;
    let carried = 0;
    if (flush > 0) {
      const tail = s.views[s.views.length - 1];
      const writable = s.writableTail;
      if (writable) inTail = Math.min(flush, writable.chunk.capacity * unitTokens - writable.tokens);
      // A shared chunk ending in a partly filled value block: the block continues in the new chunk.
      if (!writable && tail !== undefined) carried = tail.tokens % unitTokens;
      if (flush > inTail) {
        // Chunks grow with what this stream holds alone, so that a fork starts small.
        const needed = Math.ceil((carried + flush - inTail) / unitTokens);
        chunkUnits = Math.max(needed, Math.ceil(s.ownUnits / 2), 4);
      }
    }
    // Residual rows: the rows after the flush, then the new ones, with the undo history before them.
    const start = s.residualStart + flush;
    const live = s.residualCount - flush;
    let residualCapacity = 0;
    let keep = 0;
    if (kind === 'f32') {
      if (start + live + added > s.residual.capacity) residualCapacity = Math.max(live + added, Math.ceil(s.residual.capacity * 1.5), 16);
    } else {
      const history = undoRows(o, kind);
      const wanted = Math.max(live + added + history, this.residualRows(s));
      // Grow for a long append, or give back the room of a long prompt once it is quantized: f32
      // memory stays bounded by the window, the history and the newest append (SPEC.md).
      if (start + live + added > s.residual.capacity || s.residual.capacity > 2 * wanted) {
        keep = Math.min(history, start);
        residualCapacity = Math.max(wanted, keep + live + added);
      }
    }
    // Sinks arrive a few at a time: grow geometrically up to S.
    const sinkCapacity = sinksNeeded > s.sinks.capacity ? Math.min(o.sinkTokens, Math.max(sinksNeeded, 2 * s.sinks.capacity, 4)) : 0;
    return { stream: s, role, flush, inTail, chunkUnits, carried, residualCapacity, keep, sinkCapacity, chunk: null, residualPtr: 0, sinkPtr: 0 };
  }

  /** Allocates everything the plans need, all or nothing. */
  private allocate(plans: StreamPlan[]): void {
    const rt = this.runtime;
    const H = this.options.kvHeads;
    try {
      for (const plan of plans) {
        if (plan.chunkUnits > 0) plan.chunk = new Chunk(rt.alloc(H * plan.chunkUnits * plan.stream.layout.headUnitBytes, 'quantized tokens'), plan.chunkUnits);
        if (plan.residualCapacity > 0) plan.residualPtr = rt.alloc(H * plan.residualCapacity * this.rowBytes, 'residual tokens');
        if (plan.sinkCapacity > 0) plan.sinkPtr = rt.alloc(H * plan.sinkCapacity * this.rowBytes, 'sink tokens');
      }
    } catch (error) {
      this.freePlanned(plans);
      throw error;
    }
  }

  private freePlanned(plans: StreamPlan[]): void {
    const rt = this.runtime;
    for (const plan of plans) {
      if (plan.chunk) rt.free(plan.chunk.ptr);
      rt.free(plan.residualPtr);
      rt.free(plan.sinkPtr);
      plan.chunk = null;
      plan.residualPtr = plan.sinkPtr = 0;
    }
  }

  /** Quantizes what the plans flush: after the writable tail, then into the new chunk (which starts
   *  with a copy of a carried partial block). Writes only memory no view holds yet. */
  private runFlush(plans: StreamPlan[], job: number, scratch: number): void {
    const rt = this.runtime;
    const o = this.options;
    const H = o.kvHeads;
    const records: FlushRecord[] = [];
    for (const plan of plans) {
      if (plan.flush === 0) continue;
      const s = plan.stream;
      const { kind, unitTokens, headUnitBytes, groupLength } = s.layout;
      const op = kind === 'channel' ? FlushOp.CHANNEL : FlushOp.TOKEN;
      const src = s.residual.ptr + s.residualStart * this.rowBytes;
      const srcHeadStride = s.residual.capacity * this.rowBytes;
      const record = (chunk: Chunk, firstToken: number, tokens: number, from: number): FlushRecord => ({
        op, heads: H, D: o.headDim, group: groupLength, bits: o.bits,
        units: op === FlushOp.CHANNEL ? tokens / unitTokens : tokens,
        firstSlot: op === FlushOp.CHANNEL ? 0 : firstToken,
        src: src + from * this.rowBytes, srcHeadStride,
        dst: chunk.ptr + (op === FlushOp.CHANNEL ? (firstToken / unitTokens) * headUnitBytes : 0), dstHeadStride: chunk.capacity * headUnitBytes,
      });
      const tail = s.views[s.views.length - 1];
      if (plan.inTail > 0) records.push(record(tail!.chunk, tail!.tokens, plan.inTail, 0));
      if (plan.chunk) {
        if (plan.carried > 0) {
          const block = Math.floor(tail!.tokens / unitTokens);
          const from = tail!.chunk;
          copyHeads(rt.u8, H, from.ptr + block * headUnitBytes, from.capacity, plan.chunk.ptr, plan.chunk.capacity, headUnitBytes, 1);
        }
        records.push(record(plan.chunk, plan.carried, plan.flush - plan.inTail, plan.inTail));
      }
    }
    if (records.length === 0) return;
    const recordsAt = job + FLUSH_JOB_BYTES;
    const tasks = writeFlush(rt.i32, job, recordsAt, records);
    writeHeader(rt.i32, job, JobKind.FLUSH, tasks, scratch, this.quantizeScratchBytes());
    const work = plans.reduce((sum, p) => sum + p.flush, 0) * H * o.headDim;
    rt.run(job, work);
  }

  /** The row after a stream's live residual rows once the plan's flush is applied (in the plan's new
   *  region when it has one): where the append's rows go. */
  private liveRowsEnd(plan: StreamPlan): number {
    const s = plan.stream;
    return (plan.residualPtr !== 0 ? plan.keep : s.residualStart + plan.flush) + s.residualCount - plan.flush;
  }

  /** Into fresh regions: the residual's history and live rows, and the sinks held so far. */
  private moveRows(state: Layer, plans: StreamPlan[]): void {
    const u8 = this.runtime.u8;
    const H = this.options.kvHeads;
    for (const plan of plans) {
      const s = plan.stream;
      if (plan.residualPtr !== 0) {
        const first = s.residualStart + plan.flush - plan.keep;
        const rows = plan.keep + s.residualCount - plan.flush;
        copyHeads(u8, H, s.residual.ptr + first * this.rowBytes, s.residual.capacity, plan.residualPtr, plan.residualCapacity, this.rowBytes, rows);
      }
      if (plan.sinkPtr !== 0) copyHeads(u8, H, s.sinks.ptr, s.sinks.capacity, plan.sinkPtr, plan.sinkCapacity, this.rowBytes, state.sinkCount);
    }
  }

  /** The new tokens into their rows: the first ones to the sinks, the rest after the live residual rows. */
  /** Copies tokens first … first + tokens − 1 of the append (staged from its first) into the sinks and residual rows. */
  private runCopy(state: Layer, plans: StreamPlan[], sinkTake: number, first: number, tokens: number, type: ElementType, staged: number[], job: number): void {
    const rt = this.runtime;
    const o = this.options;
    const end = first + tokens;
    const records: CopyRecord[] = [];
    plans.forEach((plan, i) => {
      const s = plan.stream;
      // The append's tokens 0 … sinkTake − 1 complete the sinks, the rest follow the live residual rows.
      const s0 = first, s1 = Math.min(end, sinkTake);
      if (s1 > s0) {
        const sinks = plan.sinkPtr !== 0 ? { ptr: plan.sinkPtr, capacity: plan.sinkCapacity } : s.sinks;
        records.push({ firstToken: s0 - first, tokens: s1 - s0, src: staged[i]!, dst: sinks.ptr + (state.sinkCount + s0) * this.rowBytes, dstHeadStride: sinks.capacity * this.rowBytes });
      }
      const r0 = Math.max(first, sinkTake), r1 = end;
      if (r1 > r0) {
        const fresh = plan.residualPtr !== 0;
        const region = fresh ? { ptr: plan.residualPtr, capacity: plan.residualCapacity } : s.residual;
        const row = this.liveRowsEnd(plan) + (r0 - sinkTake);
        records.push({ firstToken: r0 - first, tokens: r1 - r0, src: staged[i]!, dst: region.ptr + row * this.rowBytes, dstHeadStride: region.capacity * this.rowBytes });
      }
    });
    if (records.length === 0) return;
    const recordsAt = job + COPY_JOB_BYTES;
    const tasks = writeCopy(rt.i32, job, o.kvHeads, o.headDim, type, recordsAt, records);
    writeHeader(rt.i32, job, JobKind.COPY_ROWS, tasks, 0, 0);
    rt.run(job, tokens * o.kvHeads * o.headDim);
  }

  private commit(state: Layer, plan: StreamPlan, position: number, added: number): void {
    const rt = this.runtime;
    const s = plan.stream;
    const before = s.views.map((view) => ({ ...view }));
    const tail = s.views[s.views.length - 1];
    if (plan.inTail > 0) tail!.tokens += plan.inTail;
    if (plan.chunk) {
      if (plan.carried > 0) tail!.tokens -= plan.carried;
      s.views.push({ chunk: plan.chunk, tokens: plan.carried + plan.flush - plan.inTail });
    }
    s.quantizedTokens += plan.flush;
    s.residualStart += plan.flush;
    s.residualCount -= plan.flush;
    if (plan.residualPtr !== 0) {
      rt.free(s.residual.ptr);
      s.residual = { ptr: plan.residualPtr, capacity: plan.residualCapacity };
      s.residualStart = plan.keep;
    }
    s.residualCount += added;
    if (plan.sinkPtr !== 0) {
      rt.free(s.sinks.ptr);
      s.sinks = { ptr: plan.sinkPtr, capacity: plan.sinkCapacity };
    }
    if (plan.flush > 0) {
      s.undo.push({ position, tokens: plan.flush, views: before });
      // Only the newest flushes, undoRows of them in all, can be undone: their rows are the ones
      // kept before the live rows (planStream keeps that many when it moves them).
      const window = undoRows(this.options, s.layout.kind);
      let total = 0;
      for (let i = s.undo.length - 1; i >= 0; i--) {
        total += s.undo[i]!.tokens;
        if (total > window) {
          s.undo.splice(0, i + 1);
          break;
        }
      }
    }
  }

  /**
   * Keeps the first `tokens` tokens of every layer (or of `layer`) and drops the rest: a rejected
   * speculative draft, a regenerated reply, an edit. First the flushes of the dropped appends are
   * undone (the f32 rows they quantized come back, as far as the undo window of SPEC.md holds them),
   * so dropping up to R tokens leaves the cache bit-identical to one that never saw them. A cut
   * into quantized tokens keeps their codes and halves, except that the surviving tokens of a partly
   * dropped per-channel group return to the f32 residual as their values code·s + z (SPEC.md).
   */
  truncate(tokens: number, layer?: number): void {
    const where = 'KiviCache.truncate';
    this.checkUsable(where);
    const layers = layer === undefined ? this.layerStates : [this.checkLayer(where, layer)];
    if (typeof tokens !== 'number') throw new TypeError(`${where}: tokens must be a number, got ${describe(tokens)}`);
    const held = Math.min(...layers.map((l) => l.tokens));
    if (!Number.isInteger(tokens) || tokens < 0 || tokens > held) {
      throw new RangeError(`${where}: tokens must be an integer from 0 to ${held} (the tokens ${layer === undefined ? 'every layer holds' : `layer ${layer} holds`}), got ${describe(tokens)}`);
    }
    // Rows for the tokens of partly dropped groups, allocated before anything changes.
    const fresh: { stream: Stream; ptr: number; capacity: number }[] = [];
    try {
      for (const l of layers) {
        for (const s of [l.keys, l.values]) {
          const rows = this.truncatedGroupRows(l, s, tokens);
          if (rows > s.residual.capacity) {
            const capacity = Math.max(rows, this.residualRows(s));
            fresh.push({ stream: s, ptr: this.runtime.alloc(this.options.kvHeads * capacity * this.rowBytes, 'residual tokens'), capacity });
          }
        }
      }
    } catch (error) {
      for (const f of fresh) this.runtime.free(f.ptr);
      throw error;
    }
    for (const l of layers) {
      const sinks = Math.min(l.sinkCount, tokens);
      for (const s of [l.keys, l.values]) {
        this.undoFlushes(s, tokens);
        const region = fresh.find((f) => f.stream === s);
        this.cut(s, tokens - sinks, region);
      }
      l.sinkCount = sinks;
      l.tokens = tokens;
    }
    this.revision++;
  }

  /** Tokens of a partly dropped per-channel group that truncate(tokens) returns to the residual. */
  private truncatedGroupRows(l: Layer, s: Stream, tokens: number): number {
    if (s.layout.kind !== 'channel') return 0;
    // The flushes truncate undoes first (undoFlushes).
    let quantized = s.quantizedTokens;
    for (let i = s.undo.length - 1; i >= 0 && s.undo[i]!.position >= tokens; i--) quantized -= s.undo[i]!.tokens;
    const stored = tokens - Math.min(l.sinkCount, tokens);
    return stored < quantized ? stored % s.layout.unitTokens : 0;
  }

  /** Undoes, newest first, the flushes of the appends that began at or after `position`. */
  private undoFlushes(s: Stream, position: number): void {
    while (s.undo.length > 0 && s.undo[s.undo.length - 1]!.position >= position) {
      const entry = s.undo.pop()!;
      const kept = new Set(entry.views.map((v) => v.chunk));
      for (const view of s.views) if (!kept.has(view.chunk)) releaseChunk(this.runtime, view.chunk);
      s.views = entry.views.map((v) => ({ chunk: v.chunk, tokens: v.tokens }));
      s.quantizedTokens -= entry.tokens;
      s.residualStart -= entry.tokens;
      s.residualCount += entry.tokens;
    }
  }

  /** Keeps the first `stored` tokens of a stream (after the sinks). */
  private cut(s: Stream, stored: number, fresh: { ptr: number; capacity: number } | undefined): void {
    if (stored >= s.quantizedTokens) {
      s.residualCount = stored - s.quantizedTokens;
      return;
    }
    s.undo = [];
    const { kind, unitTokens } = s.layout;
    const keep = kind === 'channel' ? Math.floor(stored / unitTokens) * unitTokens : stored;
    if (fresh !== undefined) {
      this.runtime.free(s.residual.ptr);
      s.residual = { ptr: fresh.ptr, capacity: fresh.capacity };
    }
    s.residualStart = 0;
    s.residualCount = stored - keep;
    let first = 0;
    const views: View[] = [];
    for (const view of s.views) {
      const end = first + view.tokens;
      if (end <= keep) {
        views.push(view);
      } else {
        // Holds tokens past `keep`: those of a partly dropped group (keep .. stored) come back as f32.
        if (first <= keep && keep < end && s.residualCount > 0) this.dequantizeRows(s, view, keep - first, s.residualCount);
        if (first < keep) views.push({ chunk: view.chunk, tokens: keep - first });
        else releaseChunk(this.runtime, view.chunk);
      }
      first = end;
    }
    s.views = views;
    s.quantizedTokens = keep;
  }

  /** Writes tokens [from, from + count) of a view's per-channel key blocks into residual rows 0.. as
   *  f32 code·s + z (each product and sum rounded to f32, as SPEC.md's x'). */
  private dequantizeRows(s: Stream, view: View, from: number, count: number): void {
    const o = this.options;
    const D = o.headDim;
    const G = s.layout.unitTokens;
    const bits = o.bits;
    const mask = (1 << bits) - 1;
    const codesPerPlane = ((G * bits) / 8) * D;
    const rt = this.runtime;
    const u8 = rt.u8;
    const f32 = rt.f32;
    const u16 = rt.u16;
    for (let h = 0; h < o.kvHeads; h++) {
      const block = view.chunk.ptr + h * s.chunkHeadStride(view.chunk) + Math.floor(from / G) * s.layout.headUnitBytes;
      for (let t = 0; t < count; t++) {
        const j = (from % G) + t;
        const row = (s.residual.ptr + (h * s.residual.capacity + t) * this.rowBytes) >>> 2;
        for (let c = 0; c < D; c++) {
          const scale = halfToNumber(u16[(block + 2 * c) >>> 1]!);
          const zero = halfToNumber(u16[(block + 2 * (D + c)) >>> 1]!);
          const index = j * D + c;
          const code = (u8[block + 4 * D + (index % codesPerPlane)]! >> (Math.floor(index / codesPerPlane) * bits)) & mask;
          f32[row + c] = Math.fround(Math.fround(code * scale) + zero);
        }
      }
    }
  }

  /**
   * A new cache that continues from the same tokens: the quantized blocks are shared (held once
   * for every fork; blocks never change once written), the f32 rows (sinks, residual) are copied.
   * First the flush the next append would make is applied to this cache (SPEC.md), so that a prompt
   * appended just before forking is quantized once and shared rather than copied in f32 into every
   * fork. Appending, truncating or disposing one never changes another; each serializes on its own.
   */
  fork(): KiviCache {
    const where = 'KiviCache.fork';
    this.checkUsable(where);
    const rt = this.runtime;
    const H = this.options.kvHeads;
    const copy = new KiviCache(rt, this.options, false);
    const plans = this.layerStates.map((l) => (['keys', 'values'] as const).map((role) => this.planStream(l, role, 0, l.sinkCount)));
    const flat = plans.flat();
    // Everything allocated first (the flush's regions and the fork's rows), all or nothing.
    const rows: { residual: Rows; sinks: Rows }[] = [];
    try {
      this.allocate(flat);
      for (const plan of flat) {
        const s = plan.stream;
        const held = plan.residualPtr !== 0 ? plan.residualCapacity : s.residual.capacity;
        // A fork takes its rows with a little room: many forks that never grow stay small, and one
        // that decodes moves to a region of full size at its first move.
        const residual = s.layout.kind === 'f32' ? held : Math.min(held, this.liveRowsEnd(plan) + Math.max(this.options.groupSize, 16));
        rows.push({
          residual: { ptr: residual > 0 ? rt.alloc(H * residual * this.rowBytes, 'residual tokens') : 0, capacity: residual },
          sinks: { ptr: s.sinks.capacity > 0 ? rt.alloc(H * s.sinks.capacity * this.rowBytes, 'sink tokens') : 0, capacity: s.sinks.capacity },
        });
      }
    } catch (error) {
      this.freePlanned(flat);
      for (const r of rows) {
        rt.free(r.residual.ptr);
        rt.free(r.sinks.ptr);
      }
      copy.dispose();
      throw error;
    }
    const areas = new Areas();
    const job = areas.add(FLUSH_JOB_BYTES + 4 * FLUSH_RECORD_BYTES + 64);
    const scratch = areas.add(rt.threads * this.quantizeScratchBytes());
    try {
      const base = rt.workspace(areas.size, 'fork');
      for (const layerPlans of plans) this.runFlush(layerPlans, base + job, base + scratch);
    } catch (error) {
      this.freePlanned(flat);
      for (const r of rows) {
        rt.free(r.residual.ptr);
        rt.free(r.sinks.ptr);
      }
      copy.dispose();
      throw error;
    } finally {
      rt.trimWorkspace(WORKSPACE_KEEP_BYTES);
    }
    // From here on nothing can fail.
    this.layerStates.forEach((l, i) => {
      this.moveRows(l, plans[i]!);
      for (const plan of plans[i]!) this.commit(l, plan, l.tokens, 0);
    });
    if (flat.some((p) => p.flush > 0)) this.revision++;
    this.layerStates.forEach((l, i) => {
      const c = copy.layerStates[i]!;
      c.tokens = l.tokens;
      c.sinkCount = l.sinkCount;
      (['keys', 'values'] as const).forEach((role, j) => {
        const from = l.stream(role);
        const to = c.stream(role);
        const own = rows[2 * i + j]!;
        to.residual = own.residual;
        to.sinks = own.sinks;
        if (own.residual.ptr !== 0) copyHeads(rt.u8, H, from.residual.ptr, from.residual.capacity, own.residual.ptr, own.residual.capacity, this.rowBytes, from.residualStart + from.residualCount);
        if (own.sinks.ptr !== 0) copyHeads(rt.u8, H, from.sinks.ptr, from.sinks.capacity, own.sinks.ptr, own.sinks.capacity, this.rowBytes, l.sinkCount);
        to.residualStart = from.residualStart;
        to.residualCount = from.residualCount;
        to.quantizedTokens = from.quantizedTokens;
        to.views = from.views.map((v) => {
          v.chunk.refs++;
          return { chunk: v.chunk, tokens: v.tokens };
        });
        to.undo = from.undo.map((e) => ({ ...e, views: e.views.map((v) => ({ ...v })) }));
      });
    });
    return copy;
  }

  /** How an attend of `qTokens` queries over `state` is cut into tasks on `threads` threads: by kv
   *  head and query tile, and in SPLIT mode by token range as well (either mode gives the same bits,
   *  assembly/attend.ts). */
  private planAttend(state: Layer, qTokens: number, threads: number) {
    const o = this.options;
    const headsPerKv = o.queryHeads / o.kvHeads;
    const shape: AttendShape = {
      D: o.headDim, headsPerKv, kvHeads: o.kvHeads, queryHeads: o.queryHeads, qTokens, tokens: state.tokens, sinks: state.sinkCount,
      tileTokens: qTokens === 1 ? 1 : Math.max(1, Math.min(qTokens, Math.floor(TILE_ROWS / headsPerKv))),
      rangeTokens: this.rangeTokens, groupSize: o.groupSize, bits: o.bits,
      keyGroup: state.keys.layout.groupLength, valueGroup: state.values.layout.groupLength,
    };
    const tiles = attendTiles(shape);
    const ranges = attendRanges(shape);
    const partialsBytes = tiles * o.kvHeads * ranges * partialBytes(shape.tileTokens * headsPerKv, o.headDim);
    const mode = attendMode(threads, ranges, tiles * o.kvHeads, partialsBytes);
    const tasks = tiles * o.kvHeads * (mode === AttendMode.SPLIT ? ranges : 1);
    return { shape, tiles, ranges, partialsBytes, mode, tasks };
  }

  /** @internal Benchmarks: the tasks a decode step of `layer` splits into on `threads` threads
   *  (the thread-scaling prediction's; attend plans the same way). */
  decodeTasksAt(layer: number, threads: number): { mode: 'whole' | 'split'; tasks: number } {
    const { mode, tasks } = this.planAttend(this.layerStates[layer]!, 1, threads);
    return { mode: mode === AttendMode.SPLIT ? 'split' : 'whole', tasks };
  }

  /**
   * Attention of the newest `qTokens` tokens over the cache of one layer (causal: query i sees
   * tokens 0 .. tokens - qTokens + i). queries: [qTokens][queryHeads][headDim], f32 or f16.
   * Returns (or fills `out`) [qTokens][queryHeads][headDim]: a new Float32Array, or `out` as given
   * (f32, or f16 for a Float16Array or Uint16Array).
   */
  attend(layer: number, queries: Tensor, out?: Tensor, options?: AttendOptions): Float32Array;
  attend<T extends Tensor>(layer: number, queries: Tensor, out: T, options?: AttendOptions): T;
  attend(layer: number, queries: Tensor, out?: Tensor, options?: AttendOptions): Tensor {
    const where = 'KiviCache.attend';
    this.checkUsable(where);
    const state = this.checkLayer(where, layer);
    const o = this.options;
    const D = o.headDim;
    const { tokens: qTokens, type: queryType } = this.checkShape(where, 'queries', queries, o.queryHeads);
    if (qTokens > state.tokens) {
      throw new RangeError(`${where}: queries must be at most the ${state.tokens} tokens cached in layer ${layer}, got ${qTokens}`);
    }
    const outLength = qTokens * o.queryHeads * D;
    let outType = ElementType.F32;
    if (out !== undefined) {
      const type = elementType(out);
      if (type === null) throw new TypeError(`${where}: out must be ${TENSOR_TYPES}, got ${describe(out)}`);
      if (out.length !== outLength) throw new RangeError(`${where}: out must have length ${outLength} (${qTokens} × ${o.queryHeads} × ${D}), got ${out.length}`);
      outType = type;
    }
    if (options !== undefined && (typeof options !== 'object' || options === null)) {
      throw new TypeError(`${where}: options must be an object, got ${describe(options)}`);
    }
    const scale = options?.scale ?? 1 / Math.sqrt(D);
    if (typeof scale !== 'number') throw new TypeError(`${where}: scale must be a number, got ${describe(scale)}`);
    if (!Number.isFinite(scale) || scale <= 0 || !Number.isFinite(Math.fround(scale)) || Math.fround(scale) === 0) {
      throw new RangeError(`${where}: scale must be a finite number > 0 (as an f32), got ${describe(scale)}`);
    }

    const rt = this.runtime;
    const { shape, tiles, ranges, partialsBytes, mode, tasks } = this.planAttend(state, qTokens, rt.threads);
    const keySegments = this.segments(state, state.keys);
    const valueSegments = this.segments(state, state.values);
    const elementBytes = (type: ElementType) => (type === ElementType.F32 ? 4 : 2);

    const areas = new Areas();
    const job = areas.add(Math.max(ATTEND_JOB_BYTES, VALIDATE_JOB_BYTES + validateTasks(queries.length) * 4) + 64);
    const keyAt = areas.add(keySegments.length * SEGMENT_BYTES);
    const valueAt = areas.add(valueSegments.length * SEGMENT_BYTES);
    const stagedQueries = areas.add(queries.length * elementBytes(queryType));
    const stagedOut = areas.add(outLength * elementBytes(outType));
    const partials = areas.add(mode === AttendMode.SPLIT ? partialsBytes : 0);
    const counters = areas.add(mode === AttendMode.SPLIT ? tiles * o.kvHeads * 4 : 0);
    const scratchBytes = attendScratchBytes(shape, VALUE_BLOCK);
    const scratch = areas.add(rt.threads * scratchBytes);
    const base = rt.workspace(areas.size);
    try {
      this.stage(queries, queryType, base + stagedQueries, 0, queries.length);
      const bad = this.firstInvalid(new Areas(), base + job, queries.length, base + stagedQueries, queryType, 3.4028234663852886e38);
      if (bad >= 0) {
        const x = queries[bad]!;
        throw new RangeError(`${where}: queries must hold finite numbers, got ${queryType === ElementType.F32 ? x : `half bits 0x${x.toString(16).padStart(4, '0')}`} at index ${bad}`);
      }
      const i32 = rt.i32;
      writeSegments(i32, base + keyAt, keySegments);
      writeSegments(i32, base + valueAt, valueSegments);
      if (mode === AttendMode.SPLIT) i32.fill(0, (base + counters) >>> 2, ((base + counters) >>> 2) + tiles * o.kvHeads);
      writeHeader(i32, base + job, JobKind.ATTEND, tasks, base + scratch, scratchBytes);
      writeAttend(i32, rt.f32, base + job, shape, mode, Math.fround(scale), {
        queries: base + stagedQueries, queryType, out: base + stagedOut, outType, partials: base + partials, counters: base + counters,
        keySegments: base + keyAt, keySegmentCount: keySegments.length, valueSegments: base + valueAt, valueSegmentCount: valueSegments.length,
      });
      rt.run(base + job, qTokens * o.queryHeads * state.tokens * D);
      if (outType === ElementType.F32) {
        const result = (out as Float32Array | undefined) ?? new Float32Array(outLength);
        result.set(rt.f32.subarray((base + stagedOut) >>> 2, ((base + stagedOut) >>> 2) + outLength));
        return result;
      }
      const halves = out!;
      new Uint16Array(halves.buffer, halves.byteOffset, outLength).set(rt.u16.subarray((base + stagedOut) >>> 1, ((base + stagedOut) >>> 1) + outLength));
      return halves;
    } finally {
      rt.trimWorkspace(WORKSPACE_KEEP_BYTES);
    }
  }

  /** The stored runs of one stream, oldest first: sinks | views of quantized chunks | residual. */
  private segments(state: Layer, s: Stream): Segment[] {
    const row = this.rowBytes;
    const list: Segment[] = [];
    const rows = segmentKind('f32');
    if (state.sinkCount > 0) list.push({ kind: rows, first: 0, tokens: state.sinkCount, data: s.sinks.ptr, headStride: s.sinks.capacity * row, unitBytes: row });
    let first = state.sinkCount;
    const kind = segmentKind(s.layout.kind);
    for (const view of s.views) {
      if (view.tokens === 0) continue;
      list.push({ kind, first, tokens: view.tokens, data: view.chunk.ptr, headStride: s.chunkHeadStride(view.chunk), unitBytes: s.layout.headUnitBytes });
      first += view.tokens;
    }
    if (s.residualCount > 0) {
      list.push({ kind: rows, first, tokens: s.residualCount, data: s.residual.ptr + s.residualStart * row, headStride: s.residual.capacity * row, unitBytes: row });
    }
    return list;
  }

  /** Tokens cached in `layer`. */
  tokens(layer: number): number {
    const where = 'KiviCache.tokens';
    this.checkUsable(where);
    return this.checkLayer(where, layer).tokens;
  }

  /** Bytes this cache holds in wasm memory (allocated capacity, including room not yet filled, and
   *  chunks it shares with forks). */
  get byteLength(): number {
    if (this.disposed) return 0;
    return this.capacityBytes(() => true);
  }

  /** Of `byteLength`, the bytes of chunks this cache shares with other caches (forks). */
  get sharedByteLength(): number {
    if (this.disposed) return 0;
    return this.capacityBytes((chunk) => chunk.refs > 1, false);
  }

  private capacityBytes(counts: (chunk: Chunk) => boolean, ownRegions = true): number {
    let bytes = 0;
    for (const layer of this.layerStates) {
      for (const s of [layer.keys, layer.values]) {
        for (const view of s.views) if (counts(view.chunk)) bytes += view.chunk.capacity * s.layout.headUnitBytes;
        if (ownRegions) bytes += (s.residual.capacity + s.sinks.capacity) * this.rowBytes;
      }
    }
    return bytes * this.options.kvHeads;
  }

  /** Counts and bytes of one layer, or summed over all layers when `layer` is omitted. */
  stats(layer?: number): CacheStats {
    const where = 'KiviCache.stats';
    this.checkUsable(where);
    const layers = layer === undefined ? this.layerStates : [this.checkLayer(where, layer)];
    const total: CacheStats = { tokens: 0, sinkTokens: 0, quantizedKeys: 0, residualKeys: 0, quantizedValues: 0, residualValues: 0, bytes: 0, sharedBytes: 0, bitsPerElement: 0 };
    const H = this.options.kvHeads;
    for (const l of layers) {
      total.tokens += l.tokens;
      total.sinkTokens += l.sinkCount;
      total.quantizedKeys += l.keys.quantizedTokens;
      total.residualKeys += l.keys.residualCount;
      total.quantizedValues += l.values.quantizedTokens;
      total.residualValues += l.values.residualCount;
      for (const s of [l.keys, l.values]) {
        const perToken = bytesPerToken(s.layout);
        total.bytes += H * (s.quantizedTokens * perToken + (s.residualCount + l.sinkCount) * this.rowBytes);
        for (const view of s.views) if (view.chunk.refs > 1) total.sharedBytes += H * view.tokens * perToken;
      }
    }
    const numbers = total.tokens * 2 * H * this.options.headDim;
    total.bitsPerElement = numbers === 0 ? 0 : (total.bytes * 8) / numbers;
    return total;
  }

  /** The stored quantized groups of one layer in canonical order (for debugging and for comparing with the reference). */
  inspect(layer: number): { keys: GroupListing | null; values: GroupListing | null } {
    const where = 'KiviCache.inspect';
    this.checkUsable(where);
    const state = this.checkLayer(where, layer);
    const u8 = this.runtime.u8;
    const listing = (s: Stream): GroupListing | null => {
      if (s.layout.kind === 'f32') return null;
      const parts = s.views.map((view) => decodeGroups(s.layout, this.options, u8, view.chunk.ptr, s.chunkHeadStride(view.chunk), view.tokens));
      const join = <T extends Uint8Array | Uint16Array>(arrays: T[], make: (n: number) => T): T => {
        const all = make(arrays.reduce((n, a) => n + a.length, 0));
        let at = 0;
        for (const a of arrays) {
          all.set(a, at);
          at += a.length;
        }
        return all;
      };
      return {
        grouping: s.layout.kind === 'channel' ? 'channel' : 'token', groupLength: s.layout.groupLength,
        scales: join(parts.map((p) => p.scales), (n) => new Uint16Array(n)),
        zeros: join(parts.map((p) => p.zeros), (n) => new Uint16Array(n)),
        codes: join(parts.map((p) => p.codes), (n) => new Uint8Array(n)),
      };
    };
    return { keys: listing(state.keys), values: listing(state.values) };
  }

  /** The cache in the persistent format of docs/FORMAT.md (only the used bytes, with a CRC-32). */
  serialize(): Uint8Array {
    this.checkUsable('KiviCache.serialize');
    return serializeCache(this.options, this.layerStates, () => this.runtime.u8);
  }

  /** The cache in the streamed format (docs/FORMAT.md, version 2): a ReadableStream (also
   *  async-iterable) of chunks of at most `chunkBytes`, each read from wasm memory when the consumer
   *  asks for it. Appending to, truncating or disposing the cache before the stream ends makes its
   *  next read fail with a TypeError. */
  serializeStream(options?: SerializeStreamOptions): CacheStream {
    this.checkUsable('KiviCache.serializeStream');
    return serializeStream(this, options);
  }

  /** @internal The regions behind the cache, for the streamed format (src/stream.ts). */
  get storage(): { readonly runtime: WasmRuntime; readonly layers: readonly Layer[]; readonly revision: number } {
    return { runtime: this.runtime, layers: this.layerStates, revision: this.revision };
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
    if (sinkCount > 0) s.sinks = { ptr: rt.alloc(H * sinkCount * row, 'sink tokens'), capacity: sinkCount };
    if (p.units > 0) s.views.push({ chunk: new Chunk(rt.alloc(H * p.units * unitBytes, 'quantized tokens'), p.units), tokens: p.quantizedTokens });
    // A restored cache starts with nothing reserved (see the constructor's `reserve`).
    if (p.residualCount > 0) s.residual = { ptr: rt.alloc(H * p.residualCount * row, 'residual tokens'), capacity: p.residualCount };
    const u8 = rt.u8;
    const chunk = s.views[0]?.chunk;
    for (let h = 0; h < H; h++) {
      u8.set(bytes.subarray(p.sinks + h * sinkCount * row, p.sinks + (h + 1) * sinkCount * row), s.sinks.ptr + h * sinkCount * row);
      if (chunk) u8.set(bytes.subarray(p.quantized + h * p.units * unitBytes, p.quantized + (h + 1) * p.units * unitBytes), chunk.ptr + h * p.units * unitBytes);
      u8.set(bytes.subarray(p.residual + h * p.residualCount * row, p.residual + (h + 1) * p.residualCount * row), s.residual.ptr + h * s.residual.capacity * row);
    }
    s.quantizedTokens = p.quantizedTokens;
    s.residualStart = 0;
    s.residualCount = p.residualCount;
  }

  /** Frees the cache's memory for reuse by later caches; later calls throw. A second dispose() does nothing. */
  dispose(): void {
    if (this.disposed) return;
    this.revision++;
    this.release();
    this.disposed = true;
  }

  get isDisposed(): boolean {
    return this.disposed;
  }
}


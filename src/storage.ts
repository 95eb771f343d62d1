// Where a stream's tokens live in wasm memory, and the bookkeeping that the cache (cache.ts), the
// persistent format (serialize.ts) and attention (jobs.ts) share.
//
// Per layer, each stream (keys, values) holds its tokens in three places, oldest first:
//
//   sinks      f32 rows   [Hkv][capacity][D]           the first S tokens, forever (own)
//   quantized  views of chunks of blocks, in order     key blocks (G tokens) or value blocks (32 tokens)
//   residual   f32 rows   [Hkv][capacity][D]           live rows [start, start + count) (own)
//
// A chunk holds `capacity` units of every kv head (head h's units at ptr + h·capacity·unitBytes), so
// attention over a head streams through contiguous memory. Quantized blocks never change once
// written, so forks share chunks: a chunk counts the caches that hold a view of it, and only a chunk
// held once may be written into (appending after its last unit). A view of a shared chunk whose last
// value block is partly filled is continued in a new chunk that starts with a copy of that block.
//
// The residual rows just before `start` are the f32 inputs of the newest flushes: they are kept (up
// to undoRows, schedule.ts) so that truncating the appends that triggered those flushes can undo
// them exactly (`undo`).

import type { StreamLayout } from './layout';
import type { WasmRuntime } from './wasm';

/** Units of every kv head in one allocation; shared by the views of forked caches. */
export class Chunk {
  /** Caches (streams) holding a view of this chunk. */
  refs = 1;
  constructor(readonly ptr: number, readonly capacity: number) {}
}

/** The first `tokens` tokens of a chunk (value blocks may end partly filled; key blocks never). */
export interface View {
  readonly chunk: Chunk;
  tokens: number;
}

/** A region of f32 rows per kv head: head h's rows at ptr + h·capacity·rowBytes. */
export interface Rows {
  ptr: number;
  capacity: number;
}

/** One flush of an append, kept so that truncating that append can undo it. */
export interface UndoEntry {
  /** The layer position of the first token of the append that flushed. */
  readonly position: number;
  /** Tokens it quantized (the oldest residual rows). */
  readonly tokens: number;
  /** The views before it. */
  readonly views: readonly View[];
}

export class Stream {
  readonly layout: StreamLayout;
  views: View[] = [];
  quantizedTokens = 0;
  residual: Rows = { ptr: 0, capacity: 0 };
  residualStart = 0;
  residualCount = 0;
  sinks: Rows = { ptr: 0, capacity: 0 };
  undo: UndoEntry[] = [];

  constructor(layout: StreamLayout) {
    this.layout = layout;
  }

  /** Units a view occupies. */
  viewUnits(view: View): number {
    return Math.ceil(view.tokens / this.layout.unitTokens);
  }

  get quantizedUnits(): number {
    let units = 0;
    for (const view of this.views) units += this.viewUnits(view);
    return units;
  }

  /** Units of the chunks this stream alone holds. */
  get ownUnits(): number {
    let units = 0;
    for (const view of this.views) if (view.chunk.refs === 1) units += this.viewUnits(view);
    return units;
  }

  /** The last view, if this stream may write after its tokens (it alone holds the chunk). */
  get writableTail(): View | undefined {
    const tail = this.views[this.views.length - 1];
    return tail !== undefined && tail.chunk.refs === 1 ? tail : undefined;
  }

  /** Bytes of head 0's units of a chunk to head 1's. */
  chunkHeadStride(chunk: Chunk): number {
    return chunk.capacity * this.layout.headUnitBytes;
  }

  /** Gives up every region (chunks: this stream's hold on them). */
  release(runtime: WasmRuntime): void {
    for (const view of this.views) releaseChunk(runtime, view.chunk);
    this.views = [];
    this.undo = [];
    runtime.free(this.residual.ptr);
    runtime.free(this.sinks.ptr);
    this.residual = { ptr: 0, capacity: 0 };
    this.sinks = { ptr: 0, capacity: 0 };
    this.quantizedTokens = this.residualStart = this.residualCount = 0;
  }
}

export function releaseChunk(runtime: WasmRuntime, chunk: Chunk): void {
  if (--chunk.refs === 0) runtime.free(chunk.ptr);
}

/** Copies `units` units (or rows) of every head from one per-head region to another. */
export function copyHeads(u8: Uint8Array, heads: number, from: number, fromCapacity: number, to: number, toCapacity: number, unitBytes: number, units: number): void {
  for (let h = 0; h < heads; h++) {
    const src = from + h * fromCapacity * unitBytes;
    u8.copyWithin(to + h * toCapacity * unitBytes, src, src + units * unitBytes);
  }
}

// Streams of the persistent format: `cache.serializeStream()` as a ReadableStream that reads wasm
// memory one frame at a time when its consumer asks (stream-format.ts makes the frames), and
// `kivi.restoreCacheStream(source)` over a ReadableStream, an async iterable or an array of pieces.
//
// A stream being read refers to the cache's live memory: an append, a truncation or a dispose of the
// cache (or closing its Kivi instance) before the last frame was read makes the next read fail
// with a TypeError, never a frame of mixed states.

import { describe, type ResolvedOptions } from './options';
import { parseCache } from './serialize';
import {
  blockUnitTokens, DEFAULT_BLOCK_TOKENS, DEFAULT_CHUNK_BYTES, FrameReader, FrameWriter, FRAME_OVERHEAD, headerFrameBytes, MAX_CHUNK_BYTES,
  STREAM_FORMAT_VERSION, type LayerState, type RestoreTarget,
} from './stream-format';
import type { WasmRuntime } from './wasm';
import type { KiviCache } from './cache';

export interface SerializeStreamOptions {
  /** The largest chunk the stream yields, in bytes (frame framing included): default 1 MiB. At
   *  least the header frame (68 + 24 · layers bytes), at most 2^30. Workers KV takes values up to
   *  25 MiB. */
  chunkBytes?: number;
  /** Tokens of quantized units per block (the reader allocates one block at a time): default 4096,
   *  rounded up to a multiple of lcm(groupSize, 32). */
  blockTokens?: number;
}

/** A ReadableStream of the frames that is also async-iterable in every runtime. */
export type CacheStream = ReadableStream<Uint8Array> & AsyncIterable<Uint8Array>;

/** What serializeStream needs of a cache (KiviCache's internal accessor). */
export interface StreamSource {
  readonly options: ResolvedOptions;
  readonly isDisposed: boolean;
  readonly storage: { readonly runtime: WasmRuntime; readonly layers: readonly LayerState[]; readonly revision: number };
}

const WRITE = 'KiviCache.serializeStream';

function integerOption(where: string, name: string, value: unknown, min: number, max: number, why: string): number {
  if (typeof value !== 'number') throw new TypeError(`${where}: ${name} must be a number, got ${describe(value)}`);
  if (!Number.isInteger(value) || value < min || value > max) throw new RangeError(`${where}: ${name} must be an integer from ${min}${why} to ${max}, got ${describe(value)}`);
  return value;
}

export function serializeStream(cache: StreamSource, options: SerializeStreamOptions | undefined): CacheStream {
  if (options !== undefined && (typeof options !== 'object' || options === null)) throw new TypeError(`${WRITE}: options must be an object, got ${describe(options)}`);
  const o = cache.options;
  const minChunk = Math.max(headerFrameBytes(o.layers), FRAME_OVERHEAD + 1);
  const chunkBytes = options?.chunkBytes === undefined ? Math.max(DEFAULT_CHUNK_BYTES, minChunk)
    : integerOption(WRITE, 'chunkBytes', options.chunkBytes, minChunk, MAX_CHUNK_BYTES, ` (the header frame of ${o.layers} layers)`);
  const unit = blockUnitTokens(o);
  let blockTokens = unit * Math.ceil(DEFAULT_BLOCK_TOKENS / unit);
  if (options?.blockTokens !== undefined) {
    blockTokens = integerOption(WRITE, 'blockTokens', options.blockTokens, unit, 2 ** 31 - 1, '');
    if (blockTokens % unit !== 0) throw new RangeError(`${WRITE}: blockTokens must be a multiple of ${unit} (whole key blocks of ${o.groupSize} and value blocks of 32 tokens), got ${blockTokens}`);
  }
  const { runtime, layers, revision } = cache.storage;
  const writer = new FrameWriter(o, layers, chunkBytes, blockTokens, () => runtime.u8);
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      try {
        const changed = cache.isDisposed ? 'disposed' : runtime.isClosed ? 'closed with its Kivi instance' : cache.storage.revision !== revision ? 'changed (appended to or truncated)' : null;
        if (changed !== null) {
          throw new TypeError(`${WRITE}: the cache was ${changed} after its stream began, so frame ${writer.framesWritten} of ${writer.header.frames} cannot be read; serialize it again`);
        }
        const frame = writer.next();
        if (frame === null) controller.close();
        else controller.enqueue(frame);
      } catch (error) {
        controller.error(error);
      }
    },
  }, { highWaterMark: 0 }); // a frame is made only when the consumer reads: one in flight
  return asyncIterable(stream);
}

/** Gives a ReadableStream async iteration where the runtime's lacks it (Safari before 26, for one). */
function asyncIterable(stream: ReadableStream<Uint8Array>): CacheStream {
  if (typeof (stream as Partial<AsyncIterable<Uint8Array>>)[Symbol.asyncIterator] === 'function') return stream as CacheStream;
  Object.defineProperty(stream, Symbol.asyncIterator, {
    configurable: true,
    writable: true,
    value: async function* iterate(this: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
      const reader = this.getReader();
      let finished = false;
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) {
            finished = true;
            return;
          }
          yield value;
        }
      } finally {
        // Leaving the loop early cancels the stream, as the native iterator does.
        if (!finished) await reader.cancel().catch(() => undefined);
        reader.releaseLock();
      }
    },
  });
  return stream as CacheStream;
}

// ── Restoring ──────────────────────────────────────────────────────────────────────────────────

export interface RestoreStreamOptions {
  /** Called as each layer becomes complete (in order), with the cache being restored: that layer
   *  can be attended at once while later layers still arrive (awaited before more is read). Do not
   *  append before the restore resolves; if the restore fails later, the cache is disposed. */
  onLayer?: (layer: number, cache: KiviCache) => void | Promise<void>;
}

/** Anything restoreCacheStream reads: a ReadableStream, an async iterable or an iterable of pieces. */
export type CacheSource =
  | ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array | ArrayBuffer>
  | Iterable<Uint8Array | ArrayBuffer>
  | Uint8Array
  | ArrayBuffer;

const READ = 'restoreCacheStream';

/** The pieces of a source, one at a time; cancel() stops the source when the restore fails. */
interface Pieces {
  next(): Promise<unknown | typeof END>;
  cancel(reason: unknown): Promise<void>;
}
const END = Symbol('end');

function piecesOf(source: unknown): Pieces {
  if (source instanceof Uint8Array || source instanceof ArrayBuffer) {
    let given = false;
    return { next: async () => (given ? END : ((given = true), source)), cancel: async () => undefined };
  }
  if (typeof source === 'object' && source !== null && typeof (source as ReadableStream).getReader === 'function') {
    const reader = (source as ReadableStream<unknown>).getReader();
    return {
      async next() {
        const { done, value } = await reader.read();
        return done ? END : value;
      },
      async cancel(reason) {
        await reader.cancel(reason).catch(() => undefined);
      },
    };
  }
  const iterable = source as Partial<AsyncIterable<unknown> & Iterable<unknown>> | null;
  const asyncIterator = typeof iterable === 'object' && iterable !== null ? iterable[Symbol.asyncIterator] : undefined;
  const syncIterator = typeof iterable === 'object' && iterable !== null ? iterable[Symbol.iterator] : undefined;
  const iterator = typeof asyncIterator === 'function' ? asyncIterator.call(iterable) as AsyncIterator<unknown>
    : typeof syncIterator === 'function' ? syncIterator.call(iterable) as Iterator<unknown> : null;
  if (iterator === null) {
    throw new TypeError(`${READ}: source must be a ReadableStream, an async iterable or an array of Uint8Array chunks, got ${describe(source)}`);
  }
  return {
    async next() {
      const r = await iterator.next();
      return r.done ? END : r.value;
    },
    async cancel() {
      await Promise.resolve(iterator.return?.()).catch(() => undefined);
    },
  };
}

/** What the reader writes into: a new cache's layers. */
function targetOf(cache: KiviCache): RestoreTarget {
  return {
    get layers() {
      return cache.storage.layers;
    },
    get isDisposed() {
      return cache.isDisposed;
    },
    dispose: () => cache.dispose(),
  };
}

/** Reads a source into a cache made by `create`: version 2 frame by frame, version 1 gathered whole. */
export async function restoreFromSource(
  runtime: WasmRuntime,
  source: unknown,
  options: RestoreStreamOptions | undefined,
  create: (options: ResolvedOptions) => KiviCache,
  restoreWhole: (bytes: Uint8Array) => KiviCache,
): Promise<KiviCache> {
  if (options !== undefined && (typeof options !== 'object' || options === null)) throw new TypeError(`${READ}: options must be an object, got ${describe(options)}`);
  const onLayer = options?.onLayer;
  if (onLayer !== undefined && typeof onLayer !== 'function') throw new TypeError(`${READ}: onLayer must be a function, got ${describe(onLayer)}`);
  const pieces = piecesOf(source);
  let made: KiviCache | null = null;
  const reader = new FrameReader({ where: READ, runtime, create: (o) => targetOf((made = create(o))) });
  // The first six bytes say the version: 1 is gathered whole (its checksum ends the file), 2 streams.
  let version = 0;
  const early: Uint8Array[] = [];
  let earlyBytes = 0;
  let whole: Uint8Array | null = null;
  let wholeFill = 0;
  let index = 0;
  let received = 0;
  const feed = (piece: Uint8Array) => {
    if (version === 1) {
      if (whole === null || wholeFill + piece.length > whole.length) {
        const grown = new Uint8Array(Math.max(2 * (whole?.length ?? 0), wholeFill + piece.length, 1 << 16));
        if (whole !== null) grown.set(whole.subarray(0, wholeFill));
        whole = grown;
      }
      whole.set(piece, wholeFill);
      wholeFill += piece.length;
    } else {
      reader.push(piece);
    }
  };
  try {
    for (;;) {
      let value: unknown;
      try {
        value = await pieces.next();
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        throw new RangeError(`${READ}: truncated: the source failed after ${received} bytes (chunk ${index}): ${message}`, { cause: error });
      }
      if (value === END) break;
      let piece: Uint8Array;
      if (value instanceof Uint8Array) piece = value;
      else if (value instanceof ArrayBuffer) piece = new Uint8Array(value);
      else throw new TypeError(`${READ}: chunk ${index} of the source must be a Uint8Array or an ArrayBuffer, got ${describe(value)}`);
      index++;
      received += piece.length;
      if (version === 0) {
        early.push(piece);
        earlyBytes += piece.length;
        if (earlyBytes < 6) continue;
        const head = new Uint8Array(6);
        let at = 0;
        for (const p of early) for (let i = 0; i < p.length && at < 6; i++) head[at++] = p[i]!;
        const magic = String.fromCharCode(...head.subarray(0, 4));
        const stored = head[4]! | (head[5]! << 8);
        version = magic === 'KIVI' && stored === 1 ? 1 : STREAM_FORMAT_VERSION;
        for (const p of early.splice(0)) feed(p);
      } else {
        feed(piece);
      }
      for (const layer of reader.takeCompleted()) await onLayer?.(layer, made!);
    }
    if (version === 0) {
      // Fewer than six bytes in all: the reader says what was expected.
      for (const p of early) reader.push(p);
      reader.end();
    }
    if (version === 1) {
      const bytes = whole === null ? new Uint8Array(0) : (whole as Uint8Array).subarray(0, wholeFill);
      // Checked whole by restoreCache's parser; messages say restoreCacheStream.
      try {
        parseCache(bytes);
      } catch (error) {
        throw rename(error);
      }
      const cache = restoreWhole(bytes);
      made = cache;
      for (let l = 0; l < cache.options.layers; l++) await onLayer?.(l, cache);
      return cache;
    }
    reader.end();
    for (const layer of reader.takeCompleted()) await onLayer?.(layer, made!);
    return made!;
  } catch (error) {
    reader.abort();
    if (version === 1) (made as KiviCache | null)?.dispose();
    await pieces.cancel(error);
    throw error;
  }
}

function rename(error: unknown): unknown {
  if (!(error instanceof Error)) return error;
  const message = error.message.replace(/^restoreCache:/, `${READ}:`);
  return error instanceof TypeError ? new TypeError(message) : error instanceof RangeError ? new RangeError(message) : error;
}

/** Restores version-2 bytes held whole (restoreCache given a concatenated stream). */
export function restoreFramed(runtime: WasmRuntime, bytes: Uint8Array, create: (options: ResolvedOptions) => KiviCache): KiviCache {
  let made: KiviCache | null = null;
  const reader = new FrameReader({ where: 'restoreCache', runtime, create: (o) => targetOf((made = create(o))) });
  try {
    reader.push(bytes);
    reader.end();
  } catch (error) {
    reader.abort();
    throw error;
  }
  return made!;
}

// ── Checking in flight ─────────────────────────────────────────────────────────────────────────

/** What a checked stream held, known once its last frame has passed. */
export interface CacheStreamSummary {
  /** The cache's options, as restoreCacheStream would create it. */
  readonly options: ResolvedOptions;
  /** Tokens of each layer. */
  readonly tokens: readonly number[];
  /** Frames, the header's included, and bytes of the whole stream. */
  readonly frames: number;
  readonly bytes: number;
}

/** A TransformStream that passes a version-2 cache stream on frame by frame, once each is checked. */
export interface CheckedCacheStream extends TransformStream<Uint8Array, Uint8Array> {
  /** Resolves when the stream has ended whole and every frame passed; rejects with the stream's error. */
  readonly summary: Promise<CacheStreamSummary>;
}

const CHECK = 'checkCacheStream';

/**
 * Checks a version-2 stream as it flows (no wasm, nothing allocated but the frame in flight): the
 * bytes of a frame go on only after its sequence number, length and chained CRC-32 have passed, so
 * a relay or an upload into storage never passes on a corrupted, reordered or foreign frame, and a
 * stream that ends early fails at its end. Errors are the TypeError/RangeError restoreCacheStream
 * would give, and they error both sides of the transform.
 */
export function checkCacheStream(): CheckedCacheStream {
  const reader = new FrameReader({ where: CHECK });
  /** Pieces (or their tails) not yet passed on, and the stream offset of the first. */
  const held: Uint8Array[] = [];
  let heldStart = 0;
  let index = 0;
  let settle!: { resolve(s: CacheStreamSummary): void; reject(e: unknown): void };
  const summary = new Promise<CacheStreamSummary>((resolve, reject) => (settle = { resolve, reject }));
  summary.catch(() => undefined); // the transform's sides report the error too; this copy need not be awaited
  const passOn = (controller: TransformStreamDefaultController<Uint8Array>) => {
    let ready = reader.checkedBytes - heldStart;
    while (ready > 0) {
      const piece = held[0]!;
      if (piece.length <= ready) {
        controller.enqueue(piece);
        held.shift();
        ready -= piece.length;
        heldStart += piece.length;
      } else {
        controller.enqueue(piece.subarray(0, ready));
        held[0] = piece.subarray(ready);
        heldStart += ready;
        ready = 0;
      }
    }
  };
  const fail = (error: unknown) => {
    held.length = 0;
    settle.reject(error);
    throw error;
  };
  const stream = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      try {
        let piece: Uint8Array;
        if (chunk instanceof Uint8Array) piece = chunk;
        else if ((chunk as unknown) instanceof ArrayBuffer) piece = new Uint8Array(chunk as unknown as ArrayBuffer);
        else throw new TypeError(`${CHECK}: chunk ${index} of the source must be a Uint8Array or an ArrayBuffer, got ${describe(chunk)}`);
        index++;
        if (piece.length === 0) return;
        held.push(piece);
        reader.push(piece);
        passOn(controller);
      } catch (error) {
        fail(error);
      }
    },
    flush(controller) {
      try {
        reader.end();
        passOn(controller);
        const h = reader.header!;
        settle.resolve({ options: h.options, tokens: h.layers.map((c) => c.tokens), frames: h.frames, bytes: reader.checkedBytes });
      } catch (error) {
        fail(error);
      }
    },
  });
  return Object.assign(stream, { summary });
}

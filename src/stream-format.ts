// The streamed persistent format (docs/FORMAT.md, version 2): a cache as a sequence of frames of at
// most `chunkBytes`, written lazily from wasm memory one frame at a time (FrameWriter) and read
// back one piece at a time (FrameReader), so that neither side ever holds the whole cache outside
// wasm memory.
//
//   frame 0   "KIVI" · version 2 · chunkBytes · frames · dataBytes · blockTokens · options ·
//             counts of every layer · CRC-32
//   frame k   sequence k · payload length n · n bytes of cache data · CRC-32        (k ≥ 1)
//
// The CRC-32 of frame k continues the one of frame k − 1 (zlib's crc32(previous, bytes)), so it
// checks that frame, every frame before it and their order; the last frame's is the checksum of the
// whole stream. The header holds every count, so the reader knows before any data arrives how many
// frames follow, how long each one is and what it allocates; each frame is checked before its bytes
// reach wasm memory.
//
// Cache data, in order: per layer, keys then values, each stream as
//
//   sinks f32 [Hkv][sinkCount][D] | block 0 [Hkv][units][unitBytes] | block 1 … | residual f32 [Hkv][count][D]
//
// where a block holds the quantized units of `blockTokens` tokens (the last one fewer). Each part is
// laid out exactly as its region sits in wasm memory (head h at h · capacity · bytes), so the reader
// allocates a region when the first byte of its part arrives and copies bytes straight in: one chunk
// (storage.ts) per block, one region for the sinks and one for the residual rows.

import { KEY_GROUPINGS, KEY_WINDOWS, LIMITS, resolveOptions, VALUE_GROUPINGS, type ResolvedOptions } from './options';
import { clearValueSlots, streamLayout, VALUE_BLOCK, type StreamLayout } from './layout';
import { FORMAT_MAGIC } from './serialize';
import { Chunk, Stream } from './storage';
import type { WasmRuntime } from './wasm';

export const STREAM_FORMAT_VERSION = 2;
/** The header frame before its per-layer counts: magic … valueGrouping. */
export const STREAM_FIXED_HEADER_BYTES = 64;
/** Counts of one layer (as in version 1): tokens, sinkCount, key quantized/residual, value quantized/residual. */
export const STREAM_LAYER_BYTES = 24;
/** Sequence number, payload length and CRC-32 around the payload of a data frame. */
export const FRAME_OVERHEAD = 12;
export const DEFAULT_CHUNK_BYTES = 1 << 20;
export const MAX_CHUNK_BYTES = 1 << 30;
/** Tokens per block of quantized units, rounded up to a multiple of lcm(groupSize, 32). */
export const DEFAULT_BLOCK_TOKENS = 4096;
const MAX_BLOCK_TOKENS = 2 ** 31 - 1;

// ── CRC-32 (IEEE, as crc32() in serialize.ts), slicing by 8: eight tables, eight bytes a step. ──
let crcTables: Uint32Array | null = null;

function tables(): Uint32Array {
  if (crcTables !== null) return crcTables;
  const t = new Uint32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  // Table k: the CRC of byte n followed by k zero bytes.
  for (let k = 1; k < 8; k++) for (let n = 0; n < 256; n++) { const p = t[(k - 1) * 256 + n]!; t[k * 256 + n] = (p >>> 8) ^ t[p & 0xff]!; }
  crcTables = t;
  return t;
}

/** Typed arrays use the platform's byte order: the word loop below needs little-endian. */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** zlib's crc32(crc, data): the CRC-32 of everything `crc` covered followed by data[start, end). */
export function crc32Update(crc: number, data: Uint8Array, start = 0, end = data.length): number {
  const t = tables();
  let c = ~crc;
  let i = start;
  if (LITTLE_ENDIAN) {
    // Eight bytes a step, read as two aligned 32-bit words (about twice as fast as bytes in V8).
    while (i < end && ((data.byteOffset + i) & 3) !== 0) c = t[(c ^ data[i++]!) & 0xff]! ^ (c >>> 8);
    const words = new Uint32Array(data.buffer, data.byteOffset + i, (end - i) >>> 3 << 1);
    for (let w = 0; w < words.length; w += 2) {
      const lo = c ^ words[w]!;
      const hi = words[w + 1]!;
      c = t[1792 + (lo & 0xff)]! ^ t[1536 + ((lo >>> 8) & 0xff)]! ^ t[1280 + ((lo >>> 16) & 0xff)]! ^ t[1024 + (lo >>> 24)]! ^
        t[768 + (hi & 0xff)]! ^ t[512 + ((hi >>> 8) & 0xff)]! ^ t[256 + ((hi >>> 16) & 0xff)]! ^ t[hi >>> 24]!;
    }
    i += words.length * 4;
  }
  for (; i < end; i++) c = t[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

const hex = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;

/** The per-layer state both sides work on (KiviCache's layers). */
export interface LayerState {
  tokens: number;
  sinkCount: number;
  readonly keys: Stream;
  readonly values: Stream;
}

export interface LayerCounts {
  tokens: number;
  sinkCount: number;
  /** Keys, then values: quantized and residual tokens. */
  streams: [{ quantized: number; residual: number }, { quantized: number; residual: number }];
}

export interface StreamHeader {
  options: ResolvedOptions;
  chunkBytes: number;
  frames: number;
  dataBytes: number;
  blockTokens: number;
  layers: LayerCounts[];
  /** Bytes of the header frame. */
  bytes: number;
  /** Its CRC-32, which the first data frame's continues. */
  crc: number;
}

export function headerFrameBytes(layers: number): number {
  return STREAM_FIXED_HEADER_BYTES + STREAM_LAYER_BYTES * layers + 4;
}

/** The block size every quantized stream of these options can be cut at: whole key blocks (G) and value blocks (32). */
export function blockUnitTokens(o: ResolvedOptions): number {
  const gcd = (x: number, y: number): number => (y === 0 ? x : gcd(y, x % y));
  return (o.groupSize / gcd(o.groupSize, VALUE_BLOCK)) * VALUE_BLOCK;
}

function quantizedUnits(layout: StreamLayout, tokens: number): number {
  return layout.kind === 'f32' ? 0 : Math.ceil(tokens / layout.unitTokens);
}

/** Bytes one stream of a layer takes in the data: sinks, quantized units, residual rows. */
function streamBytes(o: ResolvedOptions, layout: StreamLayout, sinkCount: number, quantized: number, residual: number): number {
  const row = o.headDim * 4;
  return o.kvHeads * (sinkCount * row + quantizedUnits(layout, quantized) * layout.headUnitBytes + residual * row);
}

/** Frames of a stream that carries `dataBytes` in frames of at most `chunkBytes`. */
export function frameCount(dataBytes: number, chunkBytes: number): number {
  return 1 + Math.ceil(dataBytes / (chunkBytes - FRAME_OVERHEAD));
}

/** Payload bytes of data frame k (1 ≤ k < frames): every frame full but the last. */
export function payloadBytes(header: Pick<StreamHeader, 'chunkBytes' | 'dataBytes'>, k: number): number {
  const capacity = header.chunkBytes - FRAME_OVERHEAD;
  return Math.min(capacity, header.dataBytes - (k - 1) * capacity);
}

// ── Writing ────────────────────────────────────────────────────────────────────────────────────

/** A run of bytes to write: wasm memory at `ptr`, or bytes prepared in JS (a cleared last value block). */
type Piece = { ptr: number; length: number; bytes?: undefined } | { bytes: Uint8Array; ptr?: undefined };

/** Writes the header frame of a cache's current state. */
export function writeHeader(o: ResolvedOptions, layers: readonly LayerState[], chunkBytes: number, blockTokens: number): StreamHeader {
  const layouts = [streamLayout(o, o.keyGrouping), streamLayout(o, o.valueGrouping)] as const;
  const counts: LayerCounts[] = layers.map((l) => ({
    tokens: l.tokens,
    sinkCount: l.sinkCount,
    streams: [
      { quantized: l.keys.quantizedTokens, residual: l.keys.residualCount },
      { quantized: l.values.quantizedTokens, residual: l.values.residualCount },
    ],
  }));
  let dataBytes = 0;
  for (const c of counts) c.streams.forEach((s, i) => (dataBytes += streamBytes(o, layouts[i]!, c.sinkCount, s.quantized, s.residual)));
  return { options: o, chunkBytes, frames: frameCount(dataBytes, chunkBytes), dataBytes, blockTokens, layers: counts, bytes: headerFrameBytes(o.layers), crc: 0 };
}

export function encodeHeader(h: StreamHeader): Uint8Array {
  const o = h.options;
  const out = new Uint8Array(h.bytes);
  const view = new DataView(out.buffer);
  for (let i = 0; i < 4; i++) out[i] = FORMAT_MAGIC.charCodeAt(i);
  view.setUint16(4, STREAM_FORMAT_VERSION, true);
  view.setUint16(6, 0, true);
  view.setUint32(8, h.chunkBytes, true);
  view.setUint32(12, h.frames, true);
  view.setUint32(16, h.dataBytes % 2 ** 32, true);
  view.setUint32(20, Math.floor(h.dataBytes / 2 ** 32), true);
  view.setUint32(24, h.blockTokens, true);
  [o.layers, o.kvHeads, o.headDim, o.queryHeads, o.groupSize, o.residual, o.sinkTokens, o.maxTokens ?? 0]
    .forEach((v, i) => view.setUint32(28 + 4 * i, v, true));
  out[60] = o.bits;
  out[61] = KEY_WINDOWS.indexOf(o.keyWindow);
  out[62] = KEY_GROUPINGS.indexOf(o.keyGrouping);
  out[63] = VALUE_GROUPINGS.indexOf(o.valueGrouping);
  h.layers.forEach((c, l) => {
    [c.tokens, c.sinkCount, c.streams[0].quantized, c.streams[0].residual, c.streams[1].quantized, c.streams[1].residual]
      .forEach((v, i) => view.setUint32(STREAM_FIXED_HEADER_BYTES + STREAM_LAYER_BYTES * l + 4 * i, v, true));
  });
  h.crc = crc32Update(0, out, 0, h.bytes - 4);
  view.setUint32(h.bytes - 4, h.crc, true);
  return out;
}

/** The data of the layers in stream order, as runs of wasm memory read when the generator reaches them. */
function* dataPieces(o: ResolvedOptions, layers: readonly LayerState[], blockTokens: number, memory: () => Uint8Array): Generator<Piece> {
  const H = o.kvHeads;
  const row = o.headDim * 4;
  for (const l of layers) {
    for (const s of [l.keys, l.values]) {
      const { unitTokens, headUnitBytes: unitBytes, kind } = s.layout;
      if (l.sinkCount > 0) for (let h = 0; h < H; h++) yield { ptr: s.sinks.ptr + h * s.sinks.capacity * row, length: l.sinkCount * row };
      const units = quantizedUnits(s.layout, s.quantizedTokens);
      const partial = kind === 'token' ? s.quantizedTokens % unitTokens : 0;
      // Where each unit lives: views one after another, every view but the last holding whole units.
      const runs: { chunk: Chunk; first: number; units: number }[] = [];
      let first = 0;
      for (const view of s.views) {
        const n = s.viewUnits(view);
        if (n > 0) runs.push({ chunk: view.chunk, first, units: n });
        first += n;
      }
      if (first !== units) throw new Error(`kivi-wasm: internal: views hold ${first} units, the stream counts ${units}`);
      const blockUnits = blockTokens / unitTokens;
      for (let b0 = 0; b0 < units; b0 += blockUnits) {
        const b1 = Math.min(units, b0 + blockUnits);
        for (let h = 0; h < H; h++) {
          // The stream's last unit, if partly filled, is written with its unused slots cleared.
          const whole = partial > 0 && b1 === units ? b1 - 1 : b1;
          for (const run of runs) {
            const from = Math.max(b0, run.first), to = Math.min(whole, run.first + run.units);
            if (from < to) yield { ptr: run.chunk.ptr + h * run.chunk.capacity * unitBytes + (from - run.first) * unitBytes, length: (to - from) * unitBytes };
          }
          if (whole < b1) {
            const run = runs[runs.length - 1]!;
            const at = run.chunk.ptr + h * run.chunk.capacity * unitBytes + (units - 1 - run.first) * unitBytes;
            const last = memory().slice(at, at + unitBytes);
            clearValueSlots(s.layout, o, last, 0, partial);
            yield { bytes: last };
          }
        }
      }
      if (s.residualCount > 0) {
        for (let h = 0; h < H; h++) yield { ptr: s.residual.ptr + (h * s.residual.capacity + s.residualStart) * row, length: s.residualCount * row };
      }
    }
  }
}

/** Produces the frames of one cache state, one per call; reads wasm memory only for the frame it makes. */
export class FrameWriter {
  readonly header: StreamHeader;
  private sequence = 0;
  private crc = 0;
  private readonly pieces: Generator<Piece>;
  private piece: Piece | null = null;
  private pieceOffset = 0;

  constructor(o: ResolvedOptions, layers: readonly LayerState[], chunkBytes: number, blockTokens: number, private readonly memory: () => Uint8Array) {
    this.header = writeHeader(o, layers, chunkBytes, blockTokens);
    this.pieces = dataPieces(o, layers, blockTokens, memory);
  }

  get framesWritten(): number {
    return this.sequence;
  }

  /** The next frame, or null after the last. */
  next(): Uint8Array | null {
    const h = this.header;
    if (this.sequence >= h.frames) return null;
    if (this.sequence === 0) {
      const bytes = encodeHeader(h);
      this.crc = h.crc;
      this.sequence = 1;
      return bytes;
    }
    const n = payloadBytes(h, this.sequence);
    const out = new Uint8Array(FRAME_OVERHEAD + n);
    const view = new DataView(out.buffer);
    view.setUint32(0, this.sequence, true);
    view.setUint32(4, n, true);
    let at = 8;
    const end = 8 + n;
    while (at < end) {
      if (this.piece === null) {
        const next = this.pieces.next();
        if (next.done) throw new Error(`kivi-wasm: internal: the cache data ended ${end - at} bytes before frame ${this.sequence} did`);
        this.piece = next.value;
        this.pieceOffset = 0;
      }
      const p = this.piece;
      const length = p.bytes ? p.bytes.length : p.length;
      const take = Math.min(length - this.pieceOffset, end - at);
      if (p.bytes) out.set(p.bytes.subarray(this.pieceOffset, this.pieceOffset + take), at);
      else out.set(this.memory().subarray(p.ptr + this.pieceOffset, p.ptr + this.pieceOffset + take), at);
      at += take;
      this.pieceOffset += take;
      if (this.pieceOffset === length) this.piece = null;
    }
    this.crc = crc32Update(this.crc, out, 0, end);
    view.setUint32(end, this.crc, true);
    this.sequence++;
    return out;
  }
}

// ── Reading ────────────────────────────────────────────────────────────────────────────────────

function enumCode<T extends string>(where: string, name: string, code: number, names: readonly T[]): T {
  const value = names[code];
  if (value === undefined) throw new RangeError(`${where}: ${name} code must be ${names.map((n, i) => `${i} (${n})`).join(' or ')}, got ${code}`);
  return value;
}

/** Checks a complete header frame (its CRC-32 first, then every field and count) and returns it. */
export function parseHeader(bytes: Uint8Array, where: string): StreamHeader {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u32 = (at: number) => view.getUint32(at, true);
  const length = bytes.length;
  const stored = u32(length - 4);
  const computed = crc32Update(0, bytes, 0, length - 4);
  if (stored !== computed) {
    throw new RangeError(`${where}: header frame checksum mismatch: the stored CRC-32 is ${hex(stored)}, its ${length - 4} bytes give ${hex(computed)} (the data is corrupted)`);
  }
  const reserved = bytes[6]! | (bytes[7]! << 8);
  if (reserved !== 0) throw new RangeError(`${where}: the reserved header field must be 0, got ${reserved}`);
  const raw = {
    layers: u32(28), kvHeads: u32(32), headDim: u32(36), queryHeads: u32(40), bits: bytes[60]!, groupSize: u32(44), residual: u32(48), sinkTokens: u32(52),
    keyWindow: enumCode(where, 'keyWindow', bytes[61]!, KEY_WINDOWS),
    keyGrouping: enumCode(where, 'keyGrouping', bytes[62]!, KEY_GROUPINGS),
    valueGrouping: enumCode(where, 'valueGrouping', bytes[63]!, VALUE_GROUPINGS),
    ...(u32(56) === 0 ? {} : { maxTokens: u32(56) }),
  };
  let o: ResolvedOptions;
  try {
    o = resolveOptions(raw);
  } catch (error) {
    const message = error instanceof Error ? error.message.replace(/^createCache: /, '') : String(error);
    throw error instanceof TypeError ? new TypeError(`${where}: stored options: ${message}`) : new RangeError(`${where}: stored options: ${message}`);
  }
  const chunkBytes = u32(8);
  const minChunk = Math.max(headerFrameBytes(o.layers), FRAME_OVERHEAD + 1);
  if (chunkBytes < minChunk || chunkBytes > MAX_CHUNK_BYTES) {
    throw new RangeError(`${where}: chunkBytes must be from ${minChunk} (the header frame of ${o.layers} layers) to ${MAX_CHUNK_BYTES}, got ${chunkBytes}`);
  }
  const blockTokens = u32(24);
  const unit = blockUnitTokens(o);
  if (blockTokens === 0 || blockTokens % unit !== 0 || blockTokens > MAX_BLOCK_TOKENS) {
    throw new RangeError(`${where}: blockTokens must be a positive multiple of ${unit} (whole key and value blocks), got ${blockTokens}`);
  }
  const layouts = [streamLayout(o, o.keyGrouping), streamLayout(o, o.valueGrouping)] as const;
  const layers: LayerCounts[] = [];
  let dataBytes = 0;
  for (let l = 0; l < o.layers; l++) {
    const at = STREAM_FIXED_HEADER_BYTES + STREAM_LAYER_BYTES * l;
    const [tokens, sinkCount, kq, kr, vq, vr] = [0, 1, 2, 3, 4, 5].map((i) => u32(at + 4 * i)) as [number, number, number, number, number, number];
    const bad = (what: string) => new RangeError(`${where}: layer ${l}: ${what}`);
    // The same checks as version 1 (serialize.ts): any count the layout can hold is a reachable state.
    if (tokens > 2 ** 31 - 1) throw bad(`tokens must be at most 2^31-1, got ${tokens}`);
    const wantSinks = Math.min(tokens, o.sinkTokens);
    if (sinkCount !== wantSinks) throw bad(`sink count must be min(tokens ${tokens}, sinkTokens ${o.sinkTokens}) = ${wantSinks}, got ${sinkCount}`);
    const rest = tokens - sinkCount;
    const streams = ([[kq, kr], [vq, vr]] as const).map(([quantized, residual], i) => {
      const name = i === 0 ? 'keys' : 'values';
      const layout = layouts[i]!;
      if (quantized + residual !== rest) throw bad(`${name}: quantized ${quantized} + residual ${residual} tokens must add up to the ${rest} tokens after the sinks`);
      if (layout.kind === 'f32' && quantized !== 0) throw bad(`${name}: a bits-32 cache quantizes nothing, got ${quantized} quantized tokens`);
      if (layout.kind === 'channel' && quantized % layout.unitTokens !== 0) {
        throw bad(`${name}: quantized tokens must be a multiple of the group size ${layout.unitTokens} (whole per-channel groups), got ${quantized}`);
      }
      dataBytes += streamBytes(o, layout, sinkCount, quantized, residual);
      return { quantized, residual };
    });
    layers.push({ tokens, sinkCount, streams: streams as LayerCounts['streams'] });
  }
  const storedData = u32(16) + u32(20) * 2 ** 32;
  if (storedData !== dataBytes) throw new RangeError(`${where}: the header says ${storedData} bytes of cache data, its counts make ${dataBytes}`);
  const frames = u32(12);
  const wantFrames = frameCount(dataBytes, chunkBytes);
  if (frames !== wantFrames) {
    throw new RangeError(`${where}: the header says ${frames} frames, but ${dataBytes} bytes of data in frames of at most ${chunkBytes} bytes make ${wantFrames}`);
  }
  return { options: o, chunkBytes, frames, dataBytes, blockTokens, layers, bytes: length, crc: computed };
}

/** One region the data fills: a stream's sinks, one block of its quantized units, or its residual rows. */
interface Part {
  stream: 0 | 1;
  kind: 'sinks' | 'block' | 'residual';
  bytes: number;
  /** Block: units per head and tokens. */
  units: number;
  tokens: number;
}

/** Creates the cache a stream restores into (KiviCache, with nothing reserved) and reaches its layers. */
export interface RestoreTarget {
  readonly layers: readonly LayerState[];
  readonly isDisposed: boolean;
  dispose(): void;
}

export interface ReaderOptions {
  /** Error messages begin with this (restoreCache, restoreCacheStream or checkCacheStream). */
  where: string;
  /** Where the data goes; without both, the reader only checks the stream (nothing is allocated). */
  runtime?: WasmRuntime;
  create?(options: ResolvedOptions): RestoreTarget;
}

/**
 * Reads a version-2 stream pushed in pieces of any size. Every frame is checked (sequence number,
 * length, chained CRC-32) before its bytes are copied into the cache; a region is allocated when
 * the first byte of its part arrives. takeCompleted() returns the layers that became complete. On
 * any error the caller calls abort(), which frees everything the reader allocated. Without a runtime
 * and a target it only checks (checkCacheStream): checkedBytes says how much of the stream passed.
 */
export class FrameReader {
  private readonly where: string;
  private readonly runtime: WasmRuntime | undefined;
  private readonly create: ReaderOptions['create'];
  private readonly checkOnly: boolean;
  private headBytes = new Uint8Array(STREAM_FIXED_HEADER_BYTES);
  private headFill = 0;
  header: StreamHeader | null = null;
  target: RestoreTarget | null = null;
  /** Bytes of the stream consumed so far (for messages). */
  offset = 0;
  /** The frame being read (1 … frames − 1) and the bytes of it gathered when it spans pieces. */
  private frame = 1;
  private frameBuffer: Uint8Array | null = null;
  private frameFill = 0;
  private crc = 0;
  // Where the data goes: the part being filled, its region and how much of it is filled.
  private layer = 0;
  /** The stream (0 keys, 1 values) and step (0 sinks, 1 … blocks, then residual) of the next part. */
  private partStream: 0 | 1 | 2 = 0;
  private partStep = 0;
  private part: Part | null = null;
  private partPtr = 0;
  private partFill = 0;
  /** The layer being restored, held apart from the cache until it is complete. */
  private pending: [Stream, Stream] | null = null;
  private completed: number[] = [];

  constructor(options: ReaderOptions) {
    this.where = options.where;
    this.runtime = options.runtime;
    this.create = options.create;
    this.checkOnly = options.runtime === undefined || options.create === undefined;
  }

  /** Bytes of the stream whose frames have passed every check (0 until the header frame has). */
  get checkedBytes(): number {
    return this.header === null ? 0 : this.offset;
  }

  /** Layers completed by the bytes pushed since the last call. */
  takeCompleted(): number[] {
    const layers = this.completed;
    this.completed = [];
    return layers;
  }

  /** Consumes one piece of the stream. */
  push(piece: Uint8Array): void {
    let at = 0;
    while (at < piece.length) {
      if (this.header === null) {
        at = this.readHeader(piece, at);
        continue;
      }
      const h = this.header;
      if (this.frame >= h.frames) {
        throw new RangeError(`${this.where}: ${piece.length - at} bytes follow the last frame (frame ${h.frames - 1}, which ends at stream offset ${this.offset})`);
      }
      const frameBytes = FRAME_OVERHEAD + payloadBytes(h, this.frame);
      if (this.frameFill === 0 && piece.length - at >= frameBytes) {
        // The whole frame is in this piece: checked and copied from it directly.
        this.checkFrameHead(piece, at);
        this.acceptFrame(piece, at, frameBytes);
        at += frameBytes;
        continue;
      }
      this.frameBuffer ??= new Uint8Array(Math.min(h.chunkBytes, FRAME_OVERHEAD + h.dataBytes));
      const take = Math.min(frameBytes - this.frameFill, piece.length - at);
      const before = this.frameFill;
      this.frameBuffer.set(piece.subarray(at, at + take), before);
      this.frameFill += take;
      at += take;
      if (before < 8 && this.frameFill >= 8) this.checkFrameHead(this.frameBuffer, 0);
      if (this.frameFill === frameBytes) {
        this.frameFill = 0;
        this.acceptFrame(this.frameBuffer, 0, frameBytes);
      }
    }
  }

  /** Checks that the stream is complete; call after the last piece. */
  end(): void {
    if (this.header === null) {
      const need = this.headFill < STREAM_FIXED_HEADER_BYTES ? STREAM_FIXED_HEADER_BYTES : this.headBytes.length;
      throw new RangeError(`${this.where}: truncated: the stream ended after ${this.offset} bytes, inside its header frame of ${need} bytes`);
    }
    const h = this.header;
    if (this.frame < h.frames) {
      const inFrame = this.frameFill > 0 ? ` (${this.frameFill} of its ${FRAME_OVERHEAD + payloadBytes(h, this.frame)} bytes)` : '';
      throw new RangeError(`${this.where}: truncated: the stream ended after ${this.offset + this.frameFill} bytes, in frame ${this.frame}${inFrame} of the ${h.frames} its header announces`);
    }
    if (!this.checkOnly) this.finishLayers();
  }

  /** Frees what the reader allocated and disposes the cache it was restoring into. */
  abort(): void {
    if (this.runtime !== undefined) this.pending?.forEach((s) => s.release(this.runtime!));
    this.pending = null;
    this.part = null;
    this.partPtr = 0;
    this.target?.dispose();
  }

  private readHeader(piece: Uint8Array, at: number): number {
    const take = Math.min(this.headBytes.length - this.headFill, piece.length - at);
    this.headBytes.set(piece.subarray(at, at + take), this.headFill);
    const before = this.headFill;
    this.headFill += take;
    this.offset += take;
    if (before < 4 && this.headFill >= 4) {
      const magic = String.fromCharCode(...this.headBytes.subarray(0, 4));
      if (magic !== FORMAT_MAGIC) throw new TypeError(`${this.where}: not a serialized KiviCache: expected the magic "KIVI", got ${JSON.stringify(magic)}`);
    }
    if (before < 6 && this.headFill >= 6) {
      const version = this.headBytes[4]! | (this.headBytes[5]! << 8);
      if (version === 1 && this.checkOnly) {
        throw new RangeError(`${this.where}: format version 1 cannot be checked as it streams (its one checksum ends the file); restore it and serialize it again with serializeStream for version ${STREAM_FORMAT_VERSION}`);
      }
      if (version !== STREAM_FORMAT_VERSION) throw new RangeError(`${this.where}: unsupported format version ${version}; this build reads versions 1 and ${STREAM_FORMAT_VERSION}`);
    }
    if (this.headBytes.length === STREAM_FIXED_HEADER_BYTES && this.headFill === STREAM_FIXED_HEADER_BYTES) {
      const layers = new DataView(this.headBytes.buffer).getUint32(28, true);
      if (layers < 1 || layers > LIMITS.layers) throw new RangeError(`${this.where}: stored options: layers must be an integer from 1 to ${LIMITS.layers}, got ${layers}`);
      const full = new Uint8Array(headerFrameBytes(layers));
      full.set(this.headBytes);
      this.headBytes = full;
    } else if (this.headFill === this.headBytes.length && this.headFill > STREAM_FIXED_HEADER_BYTES) {
      const h = parseHeader(this.headBytes, this.where);
      if (this.checkOnly) {
        this.header = h;
        this.crc = h.crc;
        return at + take;
      }
      this.target = this.create!(h.options);
      this.header = h;
      this.crc = h.crc;
      this.startLayer();
      if (h.frames === 1) this.finishLayers();
    }
    return at + take;
  }

  private checkFrameHead(bytes: Uint8Array, at: number): void {
    const h = this.header!;
    const view = new DataView(bytes.buffer, bytes.byteOffset + at, 8);
    const sequence = view.getUint32(0, true);
    const length = view.getUint32(4, true);
    const k = this.frame;
    if (sequence !== k) {
      const why = sequence < k ? `frame ${sequence} came again (a repeated or reordered frame)`
        : sequence < h.frames ? `frame${sequence === k + 1 ? ` ${k} is` : `s ${k} to ${sequence - 1} are`} missing or out of order`
        : `not a frame number of this stream (0 to ${h.frames - 1}): the previous frame may be longer than announced, or the data is corrupted`;
      throw new RangeError(`${this.where}: frame ${k} at stream offset ${this.offset}: sequence number ${sequence}, expected ${k}: ${why}`);
    }
    const want = payloadBytes(h, k);
    if (length !== want) {
      throw new RangeError(`${this.where}: frame ${k} announces ${length} payload bytes, but the header makes it ${want} (chunkBytes ${h.chunkBytes}, ${h.dataBytes} bytes of data)`);
    }
  }

  private acceptFrame(bytes: Uint8Array, at: number, frameBytes: number): void {
    const end = at + frameBytes - 4;
    const stored = new DataView(bytes.buffer, bytes.byteOffset + end, 4).getUint32(0, true);
    const computed = crc32Update(this.crc, bytes, at, end);
    if (stored !== computed) {
      throw new RangeError(
        `${this.where}: frame ${this.frame} checksum mismatch: the stored CRC-32 is ${hex(stored)}, the stream up to it gives ${hex(computed)} ` +
        `(this frame or one before it is corrupted, or frames from another stream were mixed in)`,
      );
    }
    if (this.checkOnly) {
      this.crc = computed;
      this.offset += frameBytes;
      this.frame++;
      return;
    }
    if (this.runtime!.isClosed) throw new TypeError(`${this.where}: the Kivi instance was closed during the restore`);
    if (this.target!.isDisposed) throw new TypeError(`${this.where}: the cache being restored was disposed before its last layer arrived`);
    this.crc = computed;
    this.offset += frameBytes;
    this.frame++;
    this.fill(bytes, at + 8, end);
  }

  /** The next part of the current layer with bytes in it, in stream order (keys: sinks, blocks,
   *  residual; then values); null after its last. */
  private nextPart(): Part | null {
    const h = this.header!;
    const o = h.options;
    const c = h.layers[this.layer];
    if (c === undefined) throw new Error(`kivi-wasm: internal: data after the last layer`);
    const row = o.headDim * 4;
    while (this.partStream < 2) {
      const stream = this.partStream as 0 | 1;
      const layout = this.pending![stream].layout;
      const counts = c.streams[stream];
      const units = quantizedUnits(layout, counts.quantized);
      const blockUnits = h.blockTokens / layout.unitTokens;
      const blocks = Math.ceil(units / blockUnits);
      const step = this.partStep++;
      if (step === 0) {
        if (c.sinkCount > 0) return { stream, kind: 'sinks', bytes: o.kvHeads * c.sinkCount * row, units: 0, tokens: c.sinkCount };
      } else if (step <= blocks) {
        const n = Math.min(blockUnits, units - (step - 1) * blockUnits);
        const tokens = Math.min(h.blockTokens, counts.quantized - (step - 1) * h.blockTokens);
        return { stream, kind: 'block', bytes: o.kvHeads * n * layout.headUnitBytes, units: n, tokens };
      } else if (step === blocks + 1) {
        if (counts.residual > 0) return { stream, kind: 'residual', bytes: o.kvHeads * counts.residual * row, units: 0, tokens: counts.residual };
      } else {
        this.partStream++;
        this.partStep = 0;
      }
    }
    return null;
  }

  private startLayer(): void {
    const o = this.header!.options;
    this.pending = [new Stream(streamLayout(o, o.keyGrouping)), new Stream(streamLayout(o, o.valueGrouping))];
    this.partStream = 0;
    this.partStep = 0;
  }

  /** Copies checked data bytes into their regions, allocating each region at its first byte. */
  private fill(bytes: Uint8Array, at: number, end: number): void {
    const rt = this.runtime!;
    while (at < end) {
      if (this.part === null) {
        this.part = this.nextPart();
        if (this.part === null) {
          this.completeLayer();
          continue;
        }
        this.allocatePart(this.part);
      }
      const part = this.part;
      const take = Math.min(part.bytes - this.partFill, end - at);
      rt.u8.set(bytes.subarray(at, at + take), this.partPtr + this.partFill);
      this.partFill += take;
      at += take;
      if (this.partFill === part.bytes) {
        this.part = null;
        this.partPtr = 0;
        this.partFill = 0;
      }
    }
    // Layers whose parts all arrived (the last ones, or layers without data) complete without more bytes.
    if (this.part === null && this.frame >= this.header!.frames) this.finishLayers();
  }

  private allocatePart(part: Part): void {
    const rt = this.runtime!;
    const s = this.pending![part.stream];
    const what = part.kind === 'block' ? 'quantized tokens' : part.kind === 'sinks' ? 'sink tokens' : 'residual tokens';
    const ptr = rt.alloc(part.bytes, what);
    // Attached at once, so that abort() frees it through the stream.
    if (part.kind === 'block') s.views.push({ chunk: new Chunk(ptr, part.units), tokens: part.tokens });
    else if (part.kind === 'sinks') s.sinks = { ptr, capacity: part.tokens };
    else s.residual = { ptr, capacity: part.tokens };
    this.partPtr = ptr;
    this.partFill = 0;
  }

  /** Completes every layer whose parts have all arrived (at the end of the data). */
  private finishLayers(): void {
    const layers = this.header!.options.layers;
    while (this.layer < layers) {
      if (this.part !== null) return;
      const next = this.nextPart();
      if (next !== null) {
        if (next.bytes > 0) throw new Error(`kivi-wasm: internal: layer ${this.layer} expects more data after the last frame`);
        continue;
      }
      this.completeLayer();
    }
  }

  /** Hands the restored layer to the cache (which saw it empty until now). */
  private completeLayer(): void {
    const h = this.header!;
    const c = h.layers[this.layer]!;
    const target = this.target!;
    if (target.isDisposed) throw new TypeError(`${this.where}: the cache being restored was disposed before its last layer arrived`);
    const state = target.layers[this.layer]!;
    const [keys, values] = this.pending!;
    if (state.tokens !== 0 || state.keys.views.length > 0 || state.values.views.length > 0) {
      throw new TypeError(`${this.where}: layer ${this.layer} was appended to before its restore completed (use the cache once the restore resolves, or a layer once onLayer reports it)`);
    }
    c.streams.forEach((counts, i) => {
      const from = i === 0 ? keys : values;
      const to = i === 0 ? state.keys : state.values;
      to.views = from.views;
      to.quantizedTokens = counts.quantized;
      to.sinks = from.sinks;
      to.residual = from.residual;
      to.residualStart = 0;
      to.residualCount = counts.residual;
      to.undo = [];
    });
    state.sinkCount = c.sinkCount;
    state.tokens = c.tokens;
    this.completed.push(this.layer);
    this.layer++;
    if (this.layer < h.options.layers) this.startLayer();
    else this.pending = null;
  }
}

/** The frame-0 fields a caller checks an input's format by: magic "KIVI" and version 2. */
export function isStreamFormat(bytes: Uint8Array): boolean {
  return bytes.length >= 6 && String.fromCharCode(...bytes.subarray(0, 4)) === FORMAT_MAGIC && (bytes[4]! | (bytes[5]! << 8)) === STREAM_FORMAT_VERSION;
}


// Streamed caches: cache.serializeStream() / kivi.restoreCacheStream() (docs/FORMAT.md, version 2).
import { crc32 as zlibCrc32 } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { checkCacheStream, Kivi, type CacheOptions, type KiviCache, type VariantName } from '../src/index';
import { crc32 } from '../src/serialize';
import { crc32Update, FRAME_OVERHEAD, headerFrameBytes } from '../src/stream-format';
import { Rng, syntheticKv } from '../src/reference';
import { expectSameGroups, loadAllVariants, runtimeOf, trackAllocations, VARIANT_NAMES } from './helpers';

let kivis: Map<VariantName, Kivi>;
beforeAll(async () => {
  kivis = await loadAllVariants();
});

function feed(cache: KiviCache, o: CacheOptions, random: Rng, tokens: number[], layer = 0): void {
  for (const n of tokens) cache.append(layer, syntheticKv(random, n, o.kvHeads, o.headDim, 'keys'), syntheticKv(random, n, o.kvHeads, o.headDim, 'values'));
}

function query(o: CacheOptions, random: Rng, q = 1): Float32Array {
  return syntheticKv(random, q, o.queryHeads ?? o.kvHeads, o.headDim, 'queries');
}

function expectEqualArrays(got: Float32Array, want: Float32Array, what: string): void {
  expect(got.length, what).toBe(want.length);
  let first = -1;
  for (let i = 0; i < got.length; i++) if (!Object.is(got[i], want[i])) { first = i; break; }
  expect(first, `${what}: first difference at ${first}: ${got[first]} vs ${want[first]}`).toBe(-1);
}

async function collect(stream: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** The same bytes cut at other places (pieces of 1 … max bytes). */
function resplit(bytes: Uint8Array, random: Rng, max: number): Uint8Array[] {
  const pieces: Uint8Array[] = [];
  for (let at = 0; at < bytes.length;) {
    const n = 1 + Math.floor(random.next() * max);
    pieces.push(bytes.slice(at, at + n));
    at += n;
  }
  return pieces;
}

/** A ReadableStream of the pieces, one per read. */
function streamOf(pieces: readonly Uint8Array[]): ReadableStream<Uint8Array> {
  let k = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (k < pieces.length) controller.enqueue(pieces[k++]!);
      else controller.close();
    },
  });
}

/** Reads a ReadableStream to its end into `into`. */
async function drain(stream: ReadableStream<Uint8Array>, into: Uint8Array[]): Promise<void> {
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    into.push(value);
  }
}

async function* slowly(chunks: readonly Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const c of chunks) {
    await new Promise((r) => setTimeout(r, 0));
    yield c;
  }
}

function expectSameCache(restored: KiviCache, original: KiviCache, o: CacheOptions, random: Rng, what: string): void {
  expect(restored.options, what).toEqual(original.options);
  expect(restored.stats(), what).toEqual(original.stats());
  for (let l = 0; l < o.layers; l++) {
    const got = restored.inspect(l), want = original.inspect(l);
    if (o.bits === 32) {
      expect(got).toEqual({ keys: null, values: null });
    } else {
      expectSameGroups(got.keys, want.keys!, `${what} layer ${l} keys`);
      expectSameGroups(got.values, want.values!, `${what} layer ${l} values`);
    }
    if (original.tokens(l) > 0) {
      const q = query(o, random, Math.min(3, original.tokens(l)));
      expectEqualArrays(restored.attend(l, q), original.attend(l, q), `${what} layer ${l} attend`);
    }
  }
}

const CONFIGS: [string, CacheOptions][] = [
  ['2-bit KIVI', { layers: 2, kvHeads: 2, headDim: 32, queryHeads: 4, bits: 2, groupSize: 16, residual: 32 }],
  ['4-bit sliding + sinks', { layers: 1, kvHeads: 2, headDim: 16, bits: 4, groupSize: 8, residual: 16, sinkTokens: 3, keyWindow: 'sliding' }],
  ['8-bit ablations', { layers: 1, kvHeads: 1, headDim: 16, bits: 8, groupSize: 8, residual: 8, keyGrouping: 'token', valueGrouping: 'channel' }],
  ['2-bit R = 0, maxTokens', { layers: 1, kvHeads: 3, headDim: 8, bits: 2, groupSize: 8, residual: 0, maxTokens: 100 }],
  ['f32', { layers: 1, kvHeads: 2, headDim: 8, bits: 32, sinkTokens: 2 }],
];

describe('serializeStream / restoreCacheStream', () => {
  for (const [name, o] of CONFIGS) {
    it(`${name}: restores bit-identically in blocks, from any split of the stream, and keeps appending identically`, async () => {
      for (const variant of VARIANT_NAMES) {
        const kivi = kivis.get(variant)!;
        const random = new Rng(7);
        const original = kivi.createCache(o);
        for (let l = 0; l < o.layers; l++) feed(original, o, random, [37, 1, 1, 5, 20, 1, 100, 3], l);
        // Small frames and blocks of 32 tokens (several chunks per stream in the restored cache).
        const chunks = await collect(original.serializeStream({ chunkBytes: 700, blockTokens: 32 }));
        expect(chunks.length).toBeGreaterThan(3);
        for (const c of chunks) expect(c.length).toBeLessThanOrEqual(700);
        const restored = await kivi.restoreCacheStream(chunks);
        expectSameCache(restored, original, o, random, `${variant} ${name}`);
        // The same bytes in other pieces and through other sources.
        const bytes = concat(chunks);
        const split = await kivi.restoreCacheStream(slowly(resplit(bytes, random, 300)));
        expect(split.serialize()).toEqual(original.serialize());
        const whole = kivi.restoreCache(bytes);
        expect(whole.serialize()).toEqual(original.serialize());
        split.dispose();
        whole.dispose();
        // Continue on both with the same data.
        const forOriginal = new Rng(8), forRestored = new Rng(8);
        for (const n of [1, 1, 2, 1, 40, 1, 1, 9, 1, 17]) {
          feed(original, o, forOriginal, [n]);
          feed(restored, o, forRestored, [n]);
          const q = query(o, random);
          expectEqualArrays(restored.attend(0, q), original.attend(0, q), `${variant} after +${n}`);
          expect(restored.stats()).toEqual(original.stats());
        }
        expect(restored.serialize()).toEqual(original.serialize());
        original.dispose();
        restored.dispose();
      }
    });
  }

  it('every state random appends reach round-trips, with default and small blocks', async () => {
    const kivi = kivis.get('simd')!;
    const random = new Rng(99);
    const pick = <T,>(items: T[]): T => items[Math.floor(random.next() * items.length)]!;
    for (let trial = 0; trial < 16; trial++) {
      const G = pick([8, 16, 64]);
      const keyGrouping = pick(['channel', 'token'] as const);
      const o: CacheOptions = {
        layers: pick([1, 2]), kvHeads: pick([1, 2]), headDim: 16, bits: pick([2, 4, 8, 32] as const), groupSize: G,
        residual: G * pick([0, 1, 2]), sinkTokens: pick([0, 0, 1, 5]), keyGrouping, valueGrouping: pick(['token', 'channel'] as const),
      };
      if (keyGrouping === 'channel' && (o.residual ?? 0) >= G && random.next() < 0.5) o.keyWindow = 'sliding';
      const cache = kivi.createCache(o);
      for (let step = 0; step < 8; step++) {
        for (let l = 0; l < o.layers; l++) feed(cache, o, random, [pick([1, 1, 2, 3, 7, 16, 33, 90])], l);
        const unit = G === 64 ? 64 : 32;
        const options = pick([{}, { chunkBytes: pick([200, 1000, 5000]), blockTokens: unit * pick([1, 2, 3]) }]);
        const restored = await kivi.restoreCacheStream(cache.serializeStream(options));
        expect(restored.stats()).toEqual(cache.stats());
        expect(restored.serialize()).toEqual(cache.serialize());
        const q = query(o, random);
        for (let l = 0; l < o.layers; l++) expectEqualArrays(restored.attend(l, q), cache.attend(l, q), `trial ${trial} step ${step} layer ${l}`);
        restored.dispose();
      }
      cache.dispose();
    }
  });

  it('truncated and forked caches round-trip (partly filled blocks, shared chunks); a truncation fails a stream being read', async () => {
    const kivi = kivis.get('simd')!;
    const random = new Rng(123);
    const pick = <T,>(items: T[]): T => items[Math.floor(random.next() * items.length)]!;
    const o: CacheOptions = { layers: 2, kvHeads: 2, headDim: 16, queryHeads: 4, bits: 2, groupSize: 16, residual: 32, sinkTokens: 1 };
    let cache = kivi.createCache(o);
    const live: KiviCache[] = [cache];
    for (let step = 0; step < 40; step++) {
      const action = pick(['append', 'append', 'truncate', 'fork']);
      if (action === 'append') for (let l = 0; l < 2; l++) feed(cache, o, random, [pick([1, 3, 17, 40, 70])], l);
      else if (action === 'truncate') cache.truncate(Math.floor(random.next() * (Math.min(cache.tokens(0), cache.tokens(1)) + 1)));
      else {
        cache = cache.fork();
        live.push(cache);
      }
      const restored = await kivi.restoreCacheStream(cache.serializeStream({ chunkBytes: 300, blockTokens: 32 }));
      expect(restored.serialize(), `step ${step} (${action})`).toEqual(cache.serialize());
      if (Math.min(cache.tokens(0), cache.tokens(1)) > 0) {
        const q = query(o, random);
        for (let l = 0; l < 2; l++) expectEqualArrays(restored.attend(l, q), cache.attend(l, q), `step ${step} layer ${l}`);
      }
      restored.dispose();
    }
    // A fork changing does not touch the stream of the cache it came from. (fork() itself applies the
    // flush the next append would make to the cache it forks, so it is taken before the stream.)
    const fork = cache.fork();
    const reader = cache.serializeStream({ chunkBytes: 300 }).getReader();
    await reader.read();
    feed(fork, o, random, [5], 0);
    fork.truncate(1);
    await reader.read();
    cache.truncate(Math.max(0, Math.min(cache.tokens(0), cache.tokens(1)) - 1));
    await expect(reader.read()).rejects.toThrow(/the cache was changed \(appended to or truncated\) after its stream began/);
    for (const c of [...live, fork]) c.dispose();
  });

  it('an empty cache round-trips (one frame: the header)', async () => {
    const kivi = kivis.get('simd')!;
    const o: CacheOptions = { layers: 3, kvHeads: 1, headDim: 8 };
    const chunks = await collect(kivi.createCache(o).serializeStream());
    expect(chunks.map((c) => c.length)).toEqual([headerFrameBytes(3)]);
    const seen: number[] = [];
    const restored = await kivi.restoreCacheStream(chunks, { onLayer: (l) => void seen.push(l) });
    expect(seen).toEqual([0, 1, 2]);
    expect(restored.stats().tokens).toBe(0);
    feed(restored, o, new Rng(1), [5]);
    expect(restored.tokens(0)).toBe(5);
  });

  it('version 1 files restore through restoreCacheStream, split anywhere', async () => {
    const kivi = kivis.get('simd')!;
    const o = CONFIGS[0]![1];
    const cache = kivi.createCache(o);
    feed(cache, o, new Rng(4), [80, 1], 0);
    feed(cache, o, new Rng(5), [3], 1);
    const v1 = cache.serialize();
    const seen: number[] = [];
    const restored = await kivi.restoreCacheStream(slowly(resplit(v1, new Rng(6), 100)), { onLayer: (l) => void seen.push(l) });
    expect(seen).toEqual([0, 1]);
    expect(restored.serialize()).toEqual(v1);
    await expect(kivi.restoreCacheStream([v1.slice(0, 3), v1.slice(3, -1)])).rejects.toThrow(/^restoreCacheStream: truncated/);
  });

  it('frames: at most chunkBytes each, one CRC-32 per frame that continues the last, the last one the whole stream\'s', async () => {
    const kivi = kivis.get('simd')!;
    const o: CacheOptions = { layers: 2, kvHeads: 2, headDim: 16, bits: 2, groupSize: 8, residual: 16 };
    const cache = kivi.createCache(o);
    for (let l = 0; l < 2; l++) feed(cache, o, new Rng(l), [300, 1], l);
    const chunks = await collect(cache.serializeStream({ chunkBytes: 1024 }));
    const data = chunks.slice(1);
    for (const c of data.slice(0, -1)) expect(c.length).toBe(1024);
    const header = new DataView(chunks[0]!.buffer);
    expect(header.getUint32(12, true)).toBe(chunks.length);
    expect(header.getUint32(16, true)).toBe(data.reduce((n, c) => n + c.length - FRAME_OVERHEAD, 0));
    // The stream's data is the payload of version 1: the stored bytes, the last value block whole.
    expect(header.getUint32(16, true)).toBe(cache.serialize().length - 48 - 24 * o.layers);
    expect(header.getUint32(16, true)).toBeGreaterThanOrEqual(cache.stats().bytes);
    const withoutChecksums = chunks.map((c) => c.subarray(0, c.length - 4));
    let covered: Uint8Array = new Uint8Array(0);
    chunks.forEach((c, k) => {
      if (k > 0) expect(new DataView(c.buffer).getUint32(0, true)).toBe(k);
      covered = concat([covered, withoutChecksums[k]!]);
      expect(new DataView(c.buffer, c.byteOffset).getUint32(c.length - 4, true), `frame ${k}`).toBe(zlibCrc32(covered));
    });
  });

  it('crc32Update agrees with crc32 and zlib, in any split', () => {
    const random = new Rng(3);
    for (const n of [0, 1, 7, 8, 9, 63, 1000, 4099]) {
      const bytes = new Uint8Array(n).map(() => Math.floor(random.next() * 256));
      expect(crc32Update(0, bytes)).toBe(crc32(bytes));
      expect(crc32Update(0, bytes)).toBe(zlibCrc32(bytes));
      const cut = Math.floor(n / 3);
      expect(crc32Update(crc32Update(0, bytes, 0, cut), bytes, cut, n)).toBe(crc32(bytes));
    }
  });

  it('sources: ReadableStream, async iterable, array, one Uint8Array or ArrayBuffer; ArrayBuffer pieces', async () => {
    const kivi = kivis.get('simd')!;
    const o: CacheOptions = { layers: 1, kvHeads: 2, headDim: 16, bits: 4, groupSize: 16, residual: 32 };
    const cache = kivi.createCache(o);
    feed(cache, o, new Rng(9), [200]);
    const want = cache.serialize();
    const chunks = await collect(cache.serializeStream({ chunkBytes: 512 }));
    const readable = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const c of chunks) controller.enqueue(c);
        controller.close();
      },
    });
    const sources: unknown[] = [cache.serializeStream({ chunkBytes: 512 }), readable, slowly(chunks), chunks, concat(chunks), concat(chunks).buffer, chunks.map((c) => c.slice().buffer)];
    for (const source of sources) {
      const restored = await kivi.restoreCacheStream(source as Uint8Array[]);
      expect(restored.serialize()).toEqual(want);
      restored.dispose();
    }
  });

  it('the stream reads the cache lazily: a frame is made when it is read, and a change in between fails the next read', async () => {
    const kivi = kivis.get('simd')!;
    const o: CacheOptions = { layers: 1, kvHeads: 2, headDim: 16, bits: 2, groupSize: 8, residual: 8 };
    const cache = kivi.createCache(o);
    feed(cache, o, new Rng(1), [400]);
    const reader = cache.serializeStream({ chunkBytes: 256 }).getReader();
    expect((await reader.read()).value!.length).toBe(headerFrameBytes(1));
    expect((await reader.read()).value!.length).toBe(256);
    feed(cache, o, new Rng(2), [1]);
    await expect(reader.read()).rejects.toThrow(/^KiviCache\.serializeStream: the cache was changed \(appended to or truncated\) after its stream began, so frame 2 of \d+ cannot be read/);
    const second = cache.serializeStream({ chunkBytes: 256 })[Symbol.asyncIterator]();
    await second.next();
    cache.dispose();
    await expect(second.next()).rejects.toThrow(/the cache was disposed after its stream began/);
    expect(() => cache.serializeStream()).toThrow(/^KiviCache\.serializeStream: the cache was disposed/);
  });

  it('the stream is async-iterable where ReadableStream is not (and leaving the loop early cancels it)', async () => {
    const kivi = kivis.get('simd')!;
    const o: CacheOptions = { layers: 1, kvHeads: 2, headDim: 16, bits: 2, groupSize: 8, residual: 8 };
    const cache = kivi.createCache(o);
    feed(cache, o, new Rng(4), [300]);
    const proto = ReadableStream.prototype as unknown as Record<symbol, unknown>;
    const native = Object.getOwnPropertyDescriptor(proto, Symbol.asyncIterator);
    delete proto[Symbol.asyncIterator];
    try {
      const stream = cache.serializeStream({ chunkBytes: 256 });
      expect(Object.prototype.hasOwnProperty.call(stream, Symbol.asyncIterator)).toBe(true);
      const restored = await kivi.restoreCacheStream(await collect(stream));
      expect(restored.serialize()).toEqual(cache.serialize());
      const early = cache.serializeStream({ chunkBytes: 256 });
      for await (const chunk of early) {
        expect(chunk.length).toBeGreaterThan(0);
        break;
      }
      // Cancelled: a new reader sees the stream closed.
      expect((await early.getReader().read()).done).toBe(true);
    } finally {
      if (native) Object.defineProperty(proto, Symbol.asyncIterator, native);
    }
  });

  it('onLayer reports each layer as it completes, attendable while later layers are still to come', async () => {
    const kivi = kivis.get('simd')!;
    const o: CacheOptions = { layers: 4, kvHeads: 2, headDim: 16, queryHeads: 4, bits: 2, groupSize: 16, residual: 32 };
    const original = kivi.createCache(o);
    for (let l = 0; l < 4; l++) feed(original, o, new Rng(l), [120 + l * 10, 1], l);
    const q = query(o, new Rng(50), 2);
    const wants = [0, 1, 2, 3].map((l) => original.attend(l, q));
    const chunks = await collect(original.serializeStream({ chunkBytes: 600, blockTokens: 32 }));
    let delivered = 0;
    async function* counted() {
      for (const c of chunks) {
        delivered++;
        yield c;
      }
    }
    const seen: [number, number][] = [];
    const restored = await kivi.restoreCacheStream(counted(), {
      onLayer(layer, cache) {
        seen.push([layer, delivered]);
        expectEqualArrays(cache.attend(layer, q), wants[layer]!, `layer ${layer} during the restore`);
        if (layer < 3) expect(cache.tokens(layer + 1)).toBe(0);
      },
    });
    expect(seen.map(([l]) => l)).toEqual([0, 1, 2, 3]);
    expect(seen[0]![1], 'layer 0 was reported before the last chunk arrived').toBeLessThan(chunks.length / 2);
    expect(restored.stats()).toEqual(original.stats());
  });

  it('serializeStream options are checked', () => {
    const kivi = kivis.get('simd')!;
    const cache = kivi.createCache({ layers: 2, kvHeads: 1, headDim: 8, groupSize: 8, residual: 8 });
    expect(() => cache.serializeStream({ chunkBytes: 100 })).toThrow(/^KiviCache\.serializeStream: chunkBytes must be an integer from 116 \(the header frame of 2 layers\) to 1073741824, got 100$/);
    expect(() => cache.serializeStream({ chunkBytes: 2 ** 31 })).toThrow(RangeError);
    expect(() => cache.serializeStream({ chunkBytes: '1024' as never })).toThrow(/chunkBytes must be a number, got "1024"/);
    expect(() => cache.serializeStream({ blockTokens: 48 })).toThrow(/^KiviCache\.serializeStream: blockTokens must be a multiple of 32 \(whole key blocks of 8 and value blocks of 32 tokens\), got 48$/);
    expect(() => cache.serializeStream(5 as never)).toThrow(TypeError);
  });
});

describe('restoreCacheStream refuses malformed streams with a clear error, freeing what it allocated', () => {
  const o: CacheOptions = { layers: 2, kvHeads: 2, headDim: 16, bits: 2, groupSize: 8, residual: 16, sinkTokens: 2 };
  let kivi: Kivi;
  let chunks: Uint8Array[];
  beforeAll(async () => {
    kivi = kivis.get('simd')!;
    const c = kivi.createCache(o);
    for (let l = 0; l < 2; l++) feed(c, o, new Rng(3 + l), [60, 1, 1], l);
    chunks = await collect(c.serializeStream({ chunkBytes: 400, blockTokens: 32 }));
    expect(chunks.length).toBeGreaterThan(8);
    c.dispose();
  });
  const flip = (k: number, at: number) => chunks.map((c, i) => {
    if (i !== k) return c;
    const b = c.slice();
    b[at < 0 ? b.length + at : at]! ^= 0x10;
    return b;
  });
  const without = (k: number) => chunks.filter((_, i) => i !== k);
  const swap = (a: number, b: number) => chunks.map((c, i) => (i === a ? chunks[b]! : i === b ? chunks[a]! : c));
  async function* failing(after: number) {
    for (const [i, c] of chunks.entries()) {
      if (i === after) throw new Error('connection reset');
      yield c;
    }
  }

  const cases: [string, () => unknown, ErrorConstructor, RegExp][] = [
    ['not a source', () => 42, TypeError, /^restoreCacheStream: source must be a ReadableStream, an async iterable or an array of Uint8Array chunks, got 42$/],
    ['a piece that is not bytes', () => [chunks[0], 'frame'], TypeError, /chunk 1 of the source must be a Uint8Array or an ArrayBuffer, got "frame"/],
    ['empty', () => [], RangeError, /truncated: the stream ended after 0 bytes, inside its header frame/],
    ['wrong magic', () => [new TextEncoder().encode('JIVI\x02\x00'), ...chunks.slice(1)], TypeError, /expected the magic "KIVI", got "JIVI"/],
    ['unknown version', () => flip(0, 4).map((c, i) => (i === 0 ? (c[4] = 7, c) : c)), RangeError, /^restoreCacheStream: unsupported format version 7; this build reads versions 1 and 2$/],
    ['header only', () => chunks.slice(0, 1), RangeError, /truncated: the stream ended after \d+ bytes, in frame 1 of the \d+ its header announces/],
    ['truncated in a frame', () => [...chunks.slice(0, 4), chunks[4]!.slice(0, 100)], RangeError, /truncated: .* in frame 4 \(100 of its 400 bytes\)/],
    ['last frame missing', () => chunks.slice(0, -1), RangeError, /truncated: .* in frame \d+ of the \d+ its header announces/],
    ['a frame missing', () => without(3), RangeError, /frame 3 at stream offset \d+: sequence number 4, expected 3: frame 3 is missing or out of order/],
    ['two frames missing', () => [...chunks.slice(0, 3), ...chunks.slice(5)], RangeError, /sequence number 5, expected 3: frames 3 to 4 are missing/],
    ['a frame repeated', () => [...chunks.slice(0, 4), chunks[3]!, ...chunks.slice(4)], RangeError, /sequence number 3, expected 4: frame 3 came again/],
    ['frames swapped', () => swap(2, 5), RangeError, /sequence number 5, expected 2/],
    ['header checksum', () => flip(0, 70), RangeError, /header frame checksum mismatch/],
    ['flipped payload byte', () => flip(3, 50), RangeError, /frame 3 checksum mismatch/],
    ['flipped checksum byte', () => flip(6, -2), RangeError, /frame 6 checksum mismatch/],
    ['flipped sequence byte', () => flip(2, 1), RangeError, /frame 2 .*sequence number 4098, expected 2: not a frame number of this stream/],
    ['length field larger than announced', () => chunks.map((c, i) => { if (i !== 2) return c; const b = c.slice(); new DataView(b.buffer).setUint32(4, 1 << 28, true); return b; }), RangeError, /frame 2 announces 268435456 payload bytes, but the header makes it 388/],
    ['a chunk far larger than announced', () => [...chunks.slice(0, 2), concat([chunks[2]!, new Uint8Array(1 << 20).fill(7)]), ...chunks.slice(3)], RangeError, /frame 3 .*sequence number 117901063, expected 3: not a frame number/],
    ['bytes after the last frame', () => [...chunks, new Uint8Array(5)], RangeError, /5 bytes follow the last frame/],
    ['a frame of another stream', () => { const other = chunks.slice(); other[4] = chunks[5]!; return other; }, RangeError, /sequence number 5, expected 4/],
    ['the source fails midway', () => failing(5), RangeError, /^restoreCacheStream: truncated: the source failed after \d+ bytes \(chunk 5\): connection reset$/],
  ];
  for (const [name, make, type, message] of cases) {
    it(name, async () => {
      const other = kivi.createCache(o);
      feed(other, o, new Rng(1), [20]);
      const before = other.serialize();
      const tracker = trackAllocations(runtimeOf(kivi));
      let error: unknown;
      try {
        await kivi.restoreCacheStream(make() as Uint8Array[]);
      } catch (e) {
        error = e;
      }
      const live = tracker.stop();
      expect(error, 'it must throw').toBeInstanceOf(type);
      expect((error as Error).message).toMatch(message);
      expect((error as Error).message).toMatch(/^restoreCacheStream: /);
      // The failed restore freed what it allocated, and the other cache is as it was.
      expect(live.size).toBe(0);
      expect(other.serialize()).toEqual(before);
      other.dispose();
    });
  }

  // The same streams through checkCacheStream: the same error (named for it), and what it passed on
  // is a prefix of the valid stream, so no byte of a bad frame, nor any frame after it, went on.
  for (const [name, make, type, message] of cases) {
    if (name === 'not a source' || name === 'the source fails midway') continue; // about restore's sources
    it(`checkCacheStream: ${name}`, async () => {
      const pieces = [...(make() as Iterable<Uint8Array>)];
      const passed: Uint8Array[] = [];
      const checked = checkCacheStream();
      let error: unknown;
      try {
        await drain(streamOf(pieces).pipeThrough(checked), passed);
      } catch (e) {
        error = e;
      }
      expect(error, 'it must throw').toBeInstanceOf(type);
      expect((error as Error).message).toMatch(new RegExp(message.source.replace('restoreCacheStream', 'checkCacheStream')));
      expect((error as Error).message).toMatch(/^checkCacheStream: /);
      await expect(checked.summary).rejects.toBe(error);
      const out = concat(passed);
      const valid = concat(chunks);
      expect(out.length).toBeLessThanOrEqual(valid.length);
      expect(out, 'what passed is a prefix of the valid stream').toEqual(valid.subarray(0, out.length));
      if (name !== 'bytes after the last frame') expect(out.length).toBeLessThan(valid.length);
    });
  }

  it('a chunk of another stream with the same header is refused by the chained CRC', async () => {
    const c = kivi.createCache(o);
    for (let l = 0; l < 2; l++) feed(c, o, new Rng(30 + l), [60, 1, 1], l);
    const other = await collect(c.serializeStream({ chunkBytes: 400, blockTokens: 32 }));
    expect(other[0]).toEqual(chunks[0]); // the same counts: the same header
    const mixed = chunks.map((chunk, i) => (i === 4 ? other[4]! : chunk));
    await expect(kivi.restoreCacheStream(mixed)).rejects.toThrow(/^restoreCacheStream: frame 4 checksum mismatch: .*frames from another stream were mixed in/);
  });

  it('restoreCache refuses the same in whole version-2 bytes', () => {
    expect(() => kivi.restoreCache(concat(without(3)))).toThrow(/^restoreCache: frame 3 at stream offset \d+: sequence number 4/);
    expect(() => kivi.restoreCache(concat(chunks).subarray(0, 1000))).toThrow(/^restoreCache: truncated/);
  });

  it('a restore allocates quantized blocks only as their bytes arrive', async () => {
    // A header that announces 2^20 tokens in one layer, followed by one frame: the restore
    // allocates the first block, not the whole announced cache, before it finds the stream short.
    const big: CacheOptions = { layers: 1, kvHeads: 8, headDim: 128, bits: 2, groupSize: 32, residual: 128 };
    const limited = await Kivi.load({ variant: 'simd', maxMemoryBytes: 256 << 20 });
    const cache = limited.createCache(big);
    feed(cache, big, new Rng(1), new Array(8).fill(1024));
    const stream = cache.serializeStream({ chunkBytes: 65536, blockTokens: 1024 });
    const reader = stream.getReader();
    const head = (await reader.read()).value!;
    const first = (await reader.read()).value!;
    await reader.cancel();
    const memory = limited.memoryBytes;
    await expect(limited.restoreCacheStream([head, first])).rejects.toThrow(/truncated: the stream ended after \d+ bytes, in frame 2 of the/);
    // One block of keys is 8 heads × 1024 tokens × 48 bytes = 384 KiB; the cache holds 8192 tokens.
    expect(limited.memoryBytes - memory).toBeLessThan(1 << 20);
    limited.close();
  });
});

describe('checkCacheStream', () => {
  const o: CacheOptions = { layers: 3, kvHeads: 2, headDim: 32, queryHeads: 4, bits: 2, groupSize: 32, residual: 32, sinkTokens: 1 };

  it('passes a valid stream on unchanged, split anywhere, each frame once it is checked; the output restores bit-identically', async () => {
    const kivi = kivis.get('simd')!;
    const cache = kivi.createCache(o);
    for (let l = 0; l < o.layers; l++) feed(cache, o, new Rng(40 + l), [300, 7, 1], l);
    const chunks = await collect(cache.serializeStream({ chunkBytes: 2048, blockTokens: 64 }));
    const whole = concat(chunks);
    const random = new Rng(41);
    for (const max of [1, 37, 1000, 5000, whole.length]) {
      const pieces = resplit(whole, random, max);
      const checked = checkCacheStream();
      const passed: Uint8Array[] = [];
      const writer = checked.writable.getWriter();
      const reading = drain(checked.readable, passed);
      let fed = 0;
      for (const piece of pieces) {
        await writer.write(piece);
        fed += piece.length;
        // Frames pass as soon as they are whole: what is held back is less than one frame.
        await new Promise((r) => setImmediate(r));
        const out = passed.reduce((n, p) => n + p.length, 0);
        expect(fed - out).toBeLessThan(2048);
      }
      await writer.close();
      await reading;
      expect(concat(passed)).toEqual(whole);
      const summary = await checked.summary;
      expect(summary).toMatchObject({ frames: chunks.length, bytes: whole.length, tokens: [308, 308, 308] });
      expect(summary.options).toEqual(cache.options);
    }
    const restored = await kivi.restoreCacheStream(streamOf(chunks).pipeThrough(checkCacheStream()));
    const q = query(o, new Rng(42));
    for (let l = 0; l < o.layers; l++) expectEqualArrays(restored.attend(l, q), cache.attend(l, q), `layer ${l}`);
    restored.dispose();
    cache.dispose();
  });

  it('refuses version 1 (its one checksum ends the file) and chunks that are not bytes', async () => {
    const kivi = kivis.get('simd')!;
    const cache = kivi.createCache(o);
    feed(cache, o, new Rng(43), [40]);
    const v1 = cache.serialize();
    await expect(drain(streamOf([v1]).pipeThrough(checkCacheStream()), [])).rejects.toThrow(/^checkCacheStream: format version 1 cannot be checked as it streams/);
    const checked = checkCacheStream();
    const writer = checked.writable.getWriter();
    checked.readable.pipeTo(new WritableStream()).catch(() => undefined);
    await expect(writer.write('frame' as unknown as Uint8Array)).rejects.toThrow(/^checkCacheStream: chunk 0 of the source must be a Uint8Array or an ArrayBuffer, got "frame"$/);
    cache.dispose();
  });
});

// npm run fuzz — feeds kivi.restoreCache() malformed serialized caches (docs/FORMAT.md),
// kivi.restoreCacheStream() malformed streams (--target stream), and parseGguf() malformed GGUF
// files (--target gguf).
//
// Every case must either restore a cache that then attends, appends and attends again without
// throwing, with consistent stats(), or throw a TypeError/RangeError: anything else (another error
// type, a trap, an inconsistent restored cache) is a failure. Cases: bit flips, byte changes,
// insertions and deletions, truncations, random bytes, and the same mutations with the CRC-32
// recomputed (so the parser's own checks run, not only the checksum), plus targeted rewrites of
// header and count fields with boundary values.
//
// Streams (--target stream; checkCacheStream must agree with every restore): streams of the seed caches in small frames (version 2), fed as arrays,
// async iterables or ReadableStreams, with frames dropped, repeated, swapped or taken from another
// stream, bytes flipped or changed (with the chained CRCs recomputed in most cases, so the header
// and frame checks run), length fields rewritten, truncations, garbage appended to a chunk, a chunk
// far larger than any frame, the stream cut into other pieces (which must restore), and a source
// that throws midway. Every case must restore a cache that then works, or reject with a
// TypeError/RangeError having freed every block it allocated.
//
// GGUF (--target gguf): every case must either parse into a model and tokenizer that then encode,
// decode and run two tokens through a LlamaRunner (a RangeError from the run is allowed: a
// well-formed file may hold weights that make the activations non-finite, which the cache refuses),
// or throw a TypeError/RangeError. Seeds: small random-weight models in F32, F16, Q8_0 and Q4_0;
// mutations as above, mostly inside the header (where the counts, lengths, types and offsets are),
// plus u32/u64 boundary values written at random header offsets.
//
// Usage: npx tsx scripts/fuzz.ts [--target restore|stream|gguf] [--cases N] [--seconds S] [--seed K]
//                               [--variant auto|relaxed-simd|simd|scalar]
//                               [--max-memory BYTES (Kivi.load's maxMemoryBytes, default 512 MiB)]
// Stops at whichever of N cases or S seconds comes first; exits 1 on any failure.

import { checkCacheStream, Kivi, type CacheOptions, type KiviCache } from '../src/index';
import { Rng } from '../src/reference';
import { crc32, HEADER_BYTES, LAYER_HEADER_BYTES } from '../src/serialize';
import { crc32Update, FRAME_OVERHEAD, STREAM_FIXED_HEADER_BYTES } from '../src/stream-format';
import type { WasmRuntime } from '../src/wasm';
import { randomGguf } from '../src/gguf/convert';
import { parseGguf } from '../src/gguf/model';
import { readGguf } from '../src/gguf/read';
import { LlamaRunner } from '../src/llama2c/model';

export interface FuzzResult {
  cases: number;
  restored: number;
  typeErrors: number;
  rangeErrors: number;
  failures: string[];
  slowestMs: number;
  seconds: number;
  byKind: Record<string, number>;
}

/** The reference's seeded generator (mulberry32), with integer and choice helpers. */
class FuzzRng extends Rng {
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
}

const SEED_CONFIGS: [CacheOptions, number[]][] = [
  [{ layers: 2, kvHeads: 2, headDim: 16, queryHeads: 4, bits: 2, groupSize: 8, residual: 16 }, [30, 1, 1]],
  [{ layers: 1, kvHeads: 1, headDim: 16, bits: 4, groupSize: 8, residual: 16, sinkTokens: 2, keyWindow: 'sliding' }, [40, 1]],
  [{ layers: 1, kvHeads: 2, headDim: 8, bits: 8, groupSize: 8, residual: 8, keyGrouping: 'token', valueGrouping: 'channel' }, [20, 3]],
  [{ layers: 1, kvHeads: 1, headDim: 8, bits: 2, groupSize: 8, residual: 0, maxTokens: 64 }, [17, 1]],
  [{ layers: 1, kvHeads: 2, headDim: 8, bits: 32, sinkTokens: 1 }, [5, 1]],
  [{ layers: 2, kvHeads: 1, headDim: 8, bits: 2, groupSize: 8, residual: 8 }, []],
];

function fill(rng: FuzzRng, n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.next() * 4 - 2;
  return a;
}

/** Valid serialized caches to mutate. */
export function seedInputs(kivi: Kivi): Uint8Array[] {
  const rng = new FuzzRng(1);
  return SEED_CONFIGS.map(([o, appends]) => {
    const cache = kivi.createCache(o);
    for (let l = 0; l < o.layers; l++) for (const n of appends) cache.append(l, fill(rng, n * o.kvHeads * o.headDim), fill(rng, n * o.kvHeads * o.headDim));
    const bytes = cache.serialize();
    cache.dispose();
    return bytes;
  });
}

function resign(b: Uint8Array): Uint8Array {
  if (b.length >= 4) new DataView(b.buffer, b.byteOffset, b.byteLength).setUint32(b.length - 4, crc32(b, 0, b.length - 4), true);
  return b;
}

const INTERESTING = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 127, 128, 255, 256, 4095, 4096, 4097, 65535, 1 << 20, 1 << 26, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1];

function mutate(rng: FuzzRng, seed: Uint8Array): { bytes: Uint8Array; kind: string } {
  let b = seed.slice();
  const choice = rng.int(10);
  let kind: string;
  switch (choice) {
    case 0: {
      kind = 'bit flips';
      for (let i = 1 + rng.int(3); i > 0; i--) { const at = rng.int(b.length); b[at]! ^= 1 << rng.int(8); }
      break;
    }
    case 1: {
      kind = 'byte changes';
      for (let i = 1 + rng.int(4); i > 0; i--) b[rng.int(b.length)] = rng.int(256);
      break;
    }
    case 2: {
      kind = 'insertion';
      const at = rng.int(b.length + 1);
      const extra = new Uint8Array(1 + rng.int(64)).map(() => rng.int(256));
      b = new Uint8Array([...b.subarray(0, at), ...extra, ...b.subarray(at)]);
      break;
    }
    case 3: {
      kind = 'deletion';
      const at = rng.int(b.length);
      const n = 1 + rng.int(Math.min(64, b.length - at));
      b = new Uint8Array([...b.subarray(0, at), ...b.subarray(at + n)]);
      break;
    }
    case 4: {
      kind = 'truncation';
      b = b.slice(0, rng.int(b.length));
      break;
    }
    case 5: {
      kind = 'random bytes';
      b = new Uint8Array(rng.int(256)).map(() => rng.int(256));
      if (rng.next() < 0.5 && b.length >= 6) b.set([0x4b, 0x49, 0x56, 0x49, 1, 0]);
      break;
    }
    default: {
      // A header or layer-count field set to a boundary value: the parser's checks, not the CRC.
      kind = 'field rewrite';
      const view = new DataView(b.buffer);
      const fields: number[] = [];
      for (let at = 8; at < 40; at += 4) fields.push(at);
      for (let at = HEADER_BYTES; at + LAYER_HEADER_BYTES <= b.length - 4 && fields.length < 64; ) {
        for (let i = 0; i < 6; i++) fields.push(at + 4 * i);
        break; // the first layer's counts (the rest move with the payload)
      }
      const at = rng.pick(fields);
      if (rng.next() < 0.3) b[40 + rng.int(4)] = rng.pick([0, 1, 2, 3, 4, 8, 16, 32, 255]);
      else view.setUint32(at, rng.next() < 0.5 ? rng.pick(INTERESTING) : (view.getUint32(at, true) + rng.int(65) - 32) >>> 0, true);
      break;
    }
  }
  // Recompute the checksum in most cases so the structural checks are what refuses.
  if (kind !== 'random bytes' && rng.next() < 0.7) {
    resign(b);
    kind += ' + crc';
  }
  return { bytes: b, kind };
}

/** Checks a restored cache: stats consistent, attends, appends, attends again. */
function exercise(cache: KiviCache, rng: FuzzRng): string | null {
  const o = cache.options;
  const total = cache.stats();
  let tokens = 0;
  for (let l = 0; l < o.layers; l++) {
    const s = cache.stats(l);
    tokens += s.tokens;
    if (s.tokens !== cache.tokens(l)) return `layer ${l}: stats tokens ${s.tokens} vs tokens() ${cache.tokens(l)}`;
    if (s.sinkTokens + s.quantizedKeys + s.residualKeys !== s.tokens) return `layer ${l}: key counts do not add up`;
    if (s.sinkTokens + s.quantizedValues + s.residualValues !== s.tokens) return `layer ${l}: value counts do not add up`;
    if (!(s.bytes >= 0)) return `layer ${l}: bytes ${s.bytes}`;
  }
  if (tokens !== total.tokens) return 'summed stats disagree';
  const D = o.headDim;
  // Attend every layer (a few at most, to keep cases fast), append, attend again.
  for (let l = 0; l < Math.min(o.layers, 3); l++) {
    if (cache.tokens(l) > 0) cache.attend(l, fill(rng, o.queryHeads * D));
    const before = JSON.stringify(cache.stats(l));
    try {
      cache.append(l, fill(rng, o.kvHeads * D), fill(rng, o.kvHeads * D));
    } catch (error) {
      // Stored options may ask for more memory than the instance has (a residual window of 2^20
      // tokens, say): the append refuses, as any append that runs out of memory, and changes nothing.
      if (!(error instanceof RangeError && /out of WebAssembly memory/.test(error.message))) throw error;
      if (JSON.stringify(cache.stats(l)) !== before) return `layer ${l}: an append that ran out of memory changed the cache`;
      continue;
    }
    const out = cache.attend(l, fill(rng, o.queryHeads * D));
    if (out.length !== o.queryHeads * D) return 'attend output length';
  }
  return null;
}

export function runFuzz(kivi: Kivi, options: { cases: number; seconds: number; seed?: number }): FuzzResult {
  const rng = new FuzzRng(options.seed ?? 12345);
  const seeds = seedInputs(kivi);
  const result: FuzzResult = { cases: 0, restored: 0, typeErrors: 0, rangeErrors: 0, failures: [], slowestMs: 0, seconds: 0, byKind: {} };
  const started = performance.now();
  const deadline = started + options.seconds * 1000;
  while (result.cases < options.cases && performance.now() < deadline) {
    const { bytes, kind } = mutate(rng, rng.pick(seeds));
    const t0 = performance.now();
    result.cases++;
    result.byKind[kind] = (result.byKind[kind] ?? 0) + 1;
    let cache: KiviCache | null = null;
    try {
      cache = kivi.restoreCache(bytes);
    } catch (error) {
      if (error instanceof TypeError) result.typeErrors++;
      else if (error instanceof RangeError) result.rangeErrors++;
      else result.failures.push(`${kind}: restoreCache threw ${String(error)}`);
    }
    if (cache !== null) {
      result.restored++;
      try {
        const problem = exercise(cache, rng);
        if (problem !== null) result.failures.push(`${kind}: restored cache inconsistent: ${problem}`);
      } catch (error) {
        result.failures.push(`${kind}: restored cache threw ${String(error)}`);
      }
      cache.dispose();
    }
    result.slowestMs = Math.max(result.slowestMs, performance.now() - t0);
  }
  result.seconds = (performance.now() - started) / 1000;
  return result;
}

// ---------------------------------------------------------------------------------------------
// Streams (format version 2)

/** Frames of the seed caches, in small frames and blocks so that a stream has many of each. */
export async function streamSeeds(kivi: Kivi, seed = 2): Promise<Uint8Array[][]> {
  const rng = new FuzzRng(seed);
  const seeds: Uint8Array[][] = [];
  for (const [o, appends] of SEED_CONFIGS) {
    for (const chunkBytes of [200, 700]) {
      const cache = kivi.createCache(o);
      for (let l = 0; l < o.layers; l++) for (const n of appends) cache.append(l, fill(rng, n * o.kvHeads * o.headDim), fill(rng, n * o.kvHeads * o.headDim));
      const frames: Uint8Array[] = [];
      const unit = Math.max(32, o.groupSize ?? 32);
      for await (const frame of cache.serializeStream({ chunkBytes: Math.max(chunkBytes, 68 + 24 * o.layers), blockTokens: unit })) frames.push(frame);
      cache.dispose();
      seeds.push(frames);
    }
  }
  return seeds;
}

/** Recomputes the header frame's CRC-32 and the chain of every data frame after it. */
function resignFrames(frames: Uint8Array[]): void {
  let crc = 0;
  frames.forEach((f, k) => {
    if (f.length < (k === 0 ? STREAM_FIXED_HEADER_BYTES : FRAME_OVERHEAD)) return;
    crc = crc32Update(k === 0 ? 0 : crc, f, 0, f.length - 4);
    new DataView(f.buffer, f.byteOffset, f.byteLength).setUint32(f.length - 4, crc, true);
  });
}

function concatBytes(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

interface StreamCase {
  chunks: Uint8Array[];
  kind: string;
  /** Throw from the source at this chunk (a stream that errors midway). */
  failAt?: number;
  /** A valid stream cut into other pieces: it must restore. */
  mustRestore?: boolean;
}

function mutateStream(rng: FuzzRng, seed: Uint8Array[], other: Uint8Array[]): StreamCase {
  const frames: Uint8Array[] = seed.map((f) => f.slice());
  const k = 1 + rng.int(Math.max(1, frames.length - 1));
  const choice = rng.int(12);
  let kind: string;
  let resign = false;
  switch (choice) {
    case 0: kind = 'frame dropped'; frames.splice(k, 1); break;
    case 1: kind = 'frame repeated'; frames.splice(k, 0, frames[k]?.slice() ?? new Uint8Array(0)); break;
    case 2: {
      kind = 'frames swapped';
      const j = rng.int(frames.length);
      [frames[k], frames[j]] = [frames[j]!, frames[k]!];
      break;
    }
    case 3: {
      kind = 'frame of another stream';
      if (other[k] !== undefined) frames[k] = other[k]!.slice();
      break;
    }
    case 4: {
      kind = 'bit flips';
      for (let i = 1 + rng.int(3); i > 0; i--) { const f = rng.pick(frames); if (f.length) f[rng.int(f.length)]! ^= 1 << rng.int(8); }
      resign = rng.next() < 0.5;
      break;
    }
    case 5: {
      kind = 'header field rewrite';
      const h = frames[0]!;
      const view = new DataView(h.buffer);
      const at = rng.pick([8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, ...Array.from({ length: Math.min(12, (h.length - 68) / 4) }, (_, i) => 64 + 4 * i)]);
      if (rng.next() < 0.3) h[60 + rng.int(4)] = rng.pick([0, 1, 2, 3, 4, 8, 16, 32, 255]);
      else if (at + 4 <= h.length) view.setUint32(at, rng.next() < 0.5 ? rng.pick(INTERESTING) : (view.getUint32(at, true) + rng.int(65) - 32) >>> 0, true);
      resign = rng.next() < 0.8;
      break;
    }
    case 6: {
      kind = 'length field rewrite';
      const f = frames[k];
      if (f !== undefined && f.length >= 8) new DataView(f.buffer).setUint32(4, rng.pick(INTERESTING), true);
      resign = rng.next() < 0.5;
      break;
    }
    case 7: {
      kind = 'truncation';
      const bytes = concatBytes(frames);
      return { chunks: [bytes.slice(0, rng.int(bytes.length))], kind };
    }
    case 8: {
      kind = 'garbage after a chunk';
      const extra = new Uint8Array(1 + rng.int(64)).map(() => rng.int(256));
      const f = frames[k] ?? frames[0]!;
      frames[frames.indexOf(f)] = concatBytes([f, extra]);
      break;
    }
    case 9: {
      kind = 'a chunk far larger than a frame';
      frames.splice(k, 0, new Uint8Array((1 << 20) + rng.int(1 << 20)).fill(rng.int(256)));
      break;
    }
    case 10: {
      kind = 'stream cut into other pieces';
      const bytes = concatBytes(frames);
      const pieces: Uint8Array[] = [];
      for (let at = 0; at < bytes.length;) {
        const n = 1 + rng.int(rng.pick([3, 40, 500]));
        pieces.push(bytes.slice(at, at + n));
        at += n;
      }
      return { chunks: pieces, kind, mustRestore: true };
    }
    default: {
      kind = 'source fails midway';
      return { chunks: frames, kind, failAt: rng.int(frames.length) };
    }
  }
  if (resign) {
    resignFrames(frames);
    kind += ' + crc';
  }
  return { chunks: frames, kind };
}

/** The chunks as one of the three kinds of source restoreCacheStream takes. */
function sourceOf(rng: FuzzRng, c: StreamCase): unknown {
  const { chunks, failAt } = c;
  const form = failAt !== undefined ? 1 + rng.int(2) : rng.int(3);
  if (form === 0) return chunks;
  if (form === 1) {
    return (async function* () {
      for (const [i, chunk] of chunks.entries()) {
        if (i === failAt) throw new Error('the source failed');
        yield chunk;
      }
    })();
  }
  let i = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (i === failAt) controller.error(new Error('the source failed'));
      else if (i < chunks.length) controller.enqueue(chunks[i++]!);
      else controller.close();
    },
  });
}

/** The chunks through checkCacheStream: ok when it passed them on whole and byte for byte. */
async function checkThrough(chunks: readonly Uint8Array[]): Promise<{ ok: true } | { ok: false; error: string }> {
  let i = 0;
  const source = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (i < chunks.length) controller.enqueue(chunks[i++]!);
      else controller.close();
    },
  });
  const reader = source.pipeThrough(checkCacheStream()).getReader();
  const passed: Uint8Array[] = [];
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      passed.push(value);
    }
  } catch (error) {
    return { ok: false, error: error instanceof Error ? `${error.constructor.name}: ${error.message}` : String(error) };
  }
  const a = concatBytes(passed), b = concatBytes(chunks);
  if (a.length !== b.length || a.some((x, k) => x !== b[k])) return { ok: false, error: 'checkCacheStream: passed on other bytes than it was given' };
  return { ok: true };
}

/** Counts the blocks a runtime has allocated and not freed. */
function liveBlocks(rt: WasmRuntime): { count(): number; stop(): void } {
  const alloc = rt.alloc, free = rt.free;
  const live = new Set<number>();
  rt.alloc = (bytes, what) => {
    const ptr = alloc.call(rt, bytes, what);
    live.add(ptr);
    return ptr;
  };
  rt.free = (ptr) => {
    live.delete(ptr);
    free.call(rt, ptr);
  };
  return { count: () => live.size, stop: () => { rt.alloc = alloc; rt.free = free; } };
}

export async function runStreamFuzz(kivi: Kivi, options: { cases: number; seconds: number; seed?: number }): Promise<FuzzResult> {
  const rng = new FuzzRng(options.seed ?? 12345);
  const seeds = await streamSeeds(kivi);
  // The same configurations again from other data: frames that belong to another stream.
  const others = await streamSeeds(kivi, 3);
  const result: FuzzResult = { cases: 0, restored: 0, typeErrors: 0, rangeErrors: 0, failures: [], slowestMs: 0, seconds: 0, byKind: {} };
  const rt = (kivi as unknown as { runtime: WasmRuntime }).runtime;
  const started = performance.now();
  const deadline = started + options.seconds * 1000;
  while (result.cases < options.cases && performance.now() < deadline) {
    const which = rng.int(seeds.length);
    const c = mutateStream(rng, seeds[which]!, others[which]!);
    const t0 = performance.now();
    result.cases++;
    result.byKind[c.kind] = (result.byKind[c.kind] ?? 0) + 1;
    const blocks = liveBlocks(rt);
    let cache: KiviCache | null = null;
    try {
      cache = await kivi.restoreCacheStream(sourceOf(rng, c) as Uint8Array[]);
    } catch (error) {
      if (error instanceof TypeError) result.typeErrors++;
      else if (error instanceof RangeError) result.rangeErrors++;
      else result.failures.push(`${c.kind}: restoreCacheStream threw ${String(error)}`);
      if (c.mustRestore) result.failures.push(`${c.kind}: a valid stream was refused: ${String(error)}`);
      if (blocks.count() !== 0) result.failures.push(`${c.kind}: a failed restore left ${blocks.count()} blocks allocated`);
    } finally {
      blocks.stop();
    }
    // checkCacheStream must agree: it passes the stream on whole exactly when the restore accepts it.
    if (c.failAt === undefined) {
      const checked = await checkThrough(c.chunks);
      if (checked.ok !== (cache !== null)) {
        result.failures.push(`${c.kind}: checkCacheStream ${checked.ok ? 'passed' : `refused (${checked.error})`} a stream restoreCacheStream ${cache !== null ? 'restored' : 'refused'}`);
      } else if (!checked.ok && !/^(TypeError|RangeError): checkCacheStream: /.test(checked.error)) {
        result.failures.push(`${c.kind}: checkCacheStream threw ${checked.error}`);
      }
    }
    if (cache !== null) {
      result.restored++;
      try {
        const problem = exercise(cache, rng);
        if (problem !== null) result.failures.push(`${c.kind}: restored cache inconsistent: ${problem}`);
      } catch (error) {
        result.failures.push(`${c.kind}: restored cache threw ${String(error)}`);
      }
      cache.dispose();
    }
    result.slowestMs = Math.max(result.slowestMs, performance.now() - t0);
  }
  result.seconds = (performance.now() - started) / 1000;
  return result;
}

// ---------------------------------------------------------------------------------------------
// GGUF

/** Valid small GGUF files to mutate: one per weight type. */
export function ggufSeeds(): Uint8Array[] {
  const shape = { dim: 32, heads: 2, kvHeads: 1, layers: 1, context: 16, vocabSize: 262, seed: 5 };
  return (['f32', 'f16', 'q8_0', 'q4_0'] as const).map((type) => randomGguf({ ...shape, type }));
}

function mutateGguf(rng: FuzzRng, seed: Uint8Array): { bytes: Uint8Array; kind: string } {
  const header = readGguf(seed).dataOffset;
  // Most mutations land in the header, where one byte changes a count, a length, a type or an offset.
  const where = () => (rng.next() < 0.85 ? rng.int(header) : rng.int(seed.length));
  let b = seed.slice();
  const choice = rng.int(9);
  let kind: string;
  switch (choice) {
    case 8: {
      // A metadata value retyped to another type of the same size: the model's typed key lookups.
      kind = 'value retype';
      const keys = [...readGguf(seed).metadata].filter(([, v]) => ['uint32', 'int32', 'float32'].includes(v.type)).map(([k]) => k);
      const key = new TextEncoder().encode(rng.pick(keys));
      for (let i = 24; i + key.length + 4 <= header; i++) {
        if (key.every((x, j) => b[i + j] === x)) {
          new DataView(b.buffer).setUint32(i + key.length, rng.pick([4, 5, 6]), true); // uint32, int32, float32
          break;
        }
      }
      break;
    }
    case 0: {
      kind = 'bit flips';
      for (let i = 1 + rng.int(3); i > 0; i--) { const at = where(); b[at]! ^= 1 << rng.int(8); }
      break;
    }
    case 1: {
      kind = 'byte changes';
      for (let i = 1 + rng.int(4); i > 0; i--) b[where()] = rng.int(256);
      break;
    }
    case 2: {
      kind = 'insertion';
      const at = where();
      const extra = new Uint8Array(1 + rng.int(16)).map(() => rng.int(256));
      b = new Uint8Array([...b.subarray(0, at), ...extra, ...b.subarray(at)]);
      break;
    }
    case 3: {
      kind = 'deletion';
      const at = where();
      const n = 1 + rng.int(Math.min(16, b.length - at));
      b = new Uint8Array([...b.subarray(0, at), ...b.subarray(at + n)]);
      break;
    }
    case 4: {
      kind = 'truncation';
      b = b.slice(0, rng.int(b.length));
      break;
    }
    case 5: {
      kind = 'random bytes';
      b = new Uint8Array(rng.int(512)).map(() => rng.int(256));
      if (b.length >= 8 && rng.next() < 0.7) b.set([0x47, 0x47, 0x55, 0x46, 3, 0, 0, 0]);
      break;
    }
    default: {
      kind = 'field rewrite';
      const view = new DataView(b.buffer);
      const at = Math.min(rng.int(header), header - 8);
      const value = rng.pick(INTERESTING);
      if (rng.next() < 0.5) view.setUint32(at, value >>> 0, true);
      else view.setBigUint64(at, rng.next() < 0.2 ? 2n ** 63n + BigInt(value) : BigInt(value), true);
      break;
    }
  }
  return { bytes: b, kind };
}

/** A parsed model must tokenize, decode and run. Returns a problem, or null. */
function exerciseGguf(kivi: Kivi, bytes: Uint8Array): { problem: string | null; refusedAtRun: boolean } {
  const { model, tokenizer } = parseGguf(bytes);
  const ids = tokenizer.encode('Once upon a time', { bos: true });
  if (ids.some((id) => !Number.isInteger(id) || id < 0 || id >= model.config.vocabSize)) return { problem: `encode gave ids outside the vocabulary: ${ids.join(' ')}`, refusedAtRun: false };
  tokenizer.decodeAll(ids);
  let runner: LlamaRunner;
  try {
    runner = new LlamaRunner(model, kivi, { bits: 2, groupSize: 8, residual: 8, maxTokens: 4 });
  } catch (error) {
    if (error instanceof RangeError || error instanceof TypeError) return { problem: null, refusedAtRun: true };
    throw error;
  }
  try {
    for (const id of ids.slice(0, 2)) {
      const logits = runner.forward(id);
      if (logits.length !== model.config.vocabSize) return { problem: `logits of length ${logits.length}`, refusedAtRun: false };
    }
  } catch (error) {
    if (error instanceof RangeError) return { problem: null, refusedAtRun: true };
    throw error;
  } finally {
    runner.dispose();
  }
  return { problem: null, refusedAtRun: false };
}

export interface GgufFuzzResult extends FuzzResult {
  /** Parsed, but the run refused the model (a RangeError, e.g. non-finite activations). */
  refusedAtRun: number;
}

export function runGgufFuzz(kivi: Kivi, options: { cases: number; seconds: number; seed?: number }): GgufFuzzResult {
  const rng = new FuzzRng(options.seed ?? 12345);
  const seeds = ggufSeeds();
  const result: GgufFuzzResult = { cases: 0, restored: 0, typeErrors: 0, rangeErrors: 0, refusedAtRun: 0, failures: [], slowestMs: 0, seconds: 0, byKind: {} };
  const started = performance.now();
  const deadline = started + options.seconds * 1000;
  while (result.cases < options.cases && performance.now() < deadline) {
    const { bytes, kind } = mutateGguf(rng, rng.pick(seeds));
    const t0 = performance.now();
    result.cases++;
    result.byKind[kind] = (result.byKind[kind] ?? 0) + 1;
    try {
      const { problem, refusedAtRun } = exerciseGguf(kivi, bytes);
      if (problem !== null) result.failures.push(`${kind}: ${problem}`);
      else if (refusedAtRun) result.refusedAtRun++;
      else result.restored++;
    } catch (error) {
      if (error instanceof TypeError) result.typeErrors++;
      else if (error instanceof RangeError) result.rangeErrors++;
      else result.failures.push(`${kind}: threw ${String(error)}`);
    }
    result.slowestMs = Math.max(result.slowestMs, performance.now() - t0);
  }
  result.seconds = (performance.now() - started) / 1000;
  return result;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const arg = (name: string, fallback: string) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : fallback;
  };
  if (args.includes('--help')) {
    console.log('Usage: tsx scripts/fuzz.ts [--target restore|stream|gguf] [--cases N] [--seconds S] [--seed K] [--variant auto|relaxed-simd|simd|scalar] [--max-memory BYTES]');
    return;
  }
  const target = arg('target', 'restore');
  if (target !== 'restore' && target !== 'stream' && target !== 'gguf') throw new Error(`--target expects restore, stream or gguf, got ${JSON.stringify(target)}`);
  const cases = Number(arg('cases', '1000000000'));
  const seconds = Number(arg('seconds', '60'));
  const seed = Number(arg('seed', String(Date.now() % 2 ** 31)));
  const variant = arg('variant', 'auto') as 'auto';
  // Untrusted bytes may carry valid options whose up-front regions (S sink rows and the residual
  // window per head) are large: bound them as a service restoring untrusted caches would.
  const maxMemoryBytes = Number(arg('max-memory', String(512 * 2 ** 20)));
  const kivi = await Kivi.load({ variant, maxMemoryBytes });
  console.log(`fuzzing ${target === 'gguf' ? 'parseGguf' : target === 'stream' ? 'restoreCacheStream' : 'restoreCache'} on the ${kivi.variant} build (maxMemoryBytes ${maxMemoryBytes}), seed ${seed}, up to ${cases} cases or ${seconds} s`);
  const r = target === 'gguf' ? runGgufFuzz(kivi, { cases, seconds, seed }) : target === 'stream' ? await runStreamFuzz(kivi, { cases, seconds, seed }) : runFuzz(kivi, { cases, seconds, seed });
  console.log(`cases tried: ${r.cases} in ${r.seconds.toFixed(1)} s (slowest case ${r.slowestMs.toFixed(1)} ms)`);
  console.log(`${target === 'gguf' ? 'parsed and run' : 'restored and exercised'}: ${r.restored}`);
  if ('refusedAtRun' in r) console.log(`parsed, then refused by the run with RangeError: ${r.refusedAtRun}`);
  console.log(`refused with TypeError: ${r.typeErrors}`);
  console.log(`refused with RangeError: ${r.rangeErrors}`);
  console.log(`failures: ${r.failures.length}`);
  console.log(`by mutation: ${Object.entries(r.byKind).sort().map(([k, n]) => `${k} ${n}`).join(', ')}`);
  console.log(`wasm memory at the end: ${kivi.memoryBytes} bytes`);
  for (const f of r.failures.slice(0, 20)) console.log(`  FAIL ${f}`);
  if (r.failures.length > 0) process.exitCode = 1;
}

if (typeof process !== 'undefined' && process.argv[1] !== undefined && /fuzz\.ts$/.test(process.argv[1])) void main();

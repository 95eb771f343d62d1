// A cache in a file through fs streams (examples/node-fs/cache-file.mjs): written in chunks, read back
// in pieces of another size, restored bit-identically; a failed write leaves no file.
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Kivi, type CacheOptions } from '../src/index';
import { Rng, syntheticKv } from '../src/reference';
import { readCacheFile, writeCacheFile } from '../examples/node-fs/cache-file.mjs';

let kivi: Kivi;
let dir: string;
beforeAll(async () => {
  kivi = await Kivi.load();
  dir = mkdtempSync(join(tmpdir(), 'kivi-stream-fs-'));
});
afterAll(() => {
  kivi.close();
  rmSync(dir, { recursive: true, force: true });
});

const o: CacheOptions = { layers: 3, kvHeads: 4, headDim: 64, queryHeads: 8, bits: 2, groupSize: 32, residual: 64, sinkTokens: 4 };

function filled(tokens: number) {
  const random = new Rng(5);
  const cache = kivi.createCache(o);
  for (let l = 0; l < o.layers; l++) {
    for (let t = 0; t < tokens; t += 250) {
      const n = Math.min(250, tokens - t);
      cache.append(l, syntheticKv(random, n, o.kvHeads, o.headDim, 'keys'), syntheticKv(random, n, o.kvHeads, o.headDim, 'values'));
    }
  }
  return cache;
}

describe('a cache in a file (fs streams)', () => {
  it('a cache of many chunks is written, read in pieces of another size and restored bit-identically', async () => {
    const cache = filled(3000);
    const path = join(dir, 'prompt.cache');
    const chunkBytes = 64 << 10;
    await writeCacheFile(cache, path, { chunkBytes });
    const size = statSync(path).size;
    expect(size).toBeGreaterThan(10 * chunkBytes);
    expect(existsSync(`${path}.partial`)).toBe(false);
    // Version 2: the header frame, full frames, and the data is the cache's stored bytes (the last value block whole).
    const bytes = readFileSync(path);
    const frames = new DataView(bytes.buffer, bytes.byteOffset).getUint32(12, true);
    expect(frames).toBe(1 + Math.ceil((cache.serialize().length - 48 - 24 * o.layers) / (chunkBytes - 12)));
    for (const readBytes of [1000, 64 << 10, 1 << 20]) {
      const seen: number[] = [];
      const restored = await readCacheFile(kivi, path, { readBytes, onLayer: (l: number) => void seen.push(l) });
      expect(seen).toEqual([0, 1, 2]);
      expect(Buffer.compare(restored.serialize(), cache.serialize()), `read ${readBytes} bytes at a time`).toBe(0);
      const q = syntheticKv(new Rng(9), 2, o.queryHeads!, o.headDim, 'queries');
      for (let l = 0; l < o.layers; l++) expect(restored.attend(l, q)).toEqual(cache.attend(l, q));
      restored.dispose();
    }
    cache.dispose();
  });

  it('a corrupted or cut file is refused with the frame it went wrong in', async () => {
    const cache = filled(600);
    const path = join(dir, 'bad.cache');
    await writeCacheFile(cache, path, { chunkBytes: 8192 });
    const bytes = readFileSync(path);
    const flipped = Uint8Array.from(bytes);
    flipped[8192 * 3 + 100]! ^= 4;
    writeFileSync(path, flipped);
    await expect(readCacheFile(kivi, path)).rejects.toThrow(/^restoreCacheStream: frame 3 checksum mismatch/);
    writeFileSync(path, bytes.subarray(0, 8192 * 5 + 7));
    await expect(readCacheFile(kivi, path, { readBytes: 3000 })).rejects.toThrow(/^restoreCacheStream: truncated: the stream ended after \d+ bytes, in frame 5/);
    cache.dispose();
  });

  it('a write that fails leaves no file', async () => {
    const cache = filled(300);
    const path = join(dir, 'failed.cache');
    const writing = writeCacheFile(cache, path, { chunkBytes: 4096 });
    cache.dispose();
    await expect(writing).rejects.toThrow(/^KiviCache\.serializeStream: the cache was disposed after its stream began/);
    expect(existsSync(path)).toBe(false);
    expect(existsSync(`${path}.partial`)).toBe(false);
  });
});

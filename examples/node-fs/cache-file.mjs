// A KiviCache kept in a file, written and read with fs streams: the cache flows between wasm memory
// and the file one chunk at a time (cache.serializeStream and kivi.restoreCacheStream), so neither
// side holds a copy of the whole cache. Runs in Node, Deno and Bun (node:fs).
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';

/** Writes `cache` to `path` (format version 2). The file appears whole or not at all: it is written
 *  beside `path` and renamed when the last chunk is on disk. */
export async function writeCacheFile(cache, path, { chunkBytes = 1 << 20 } = {}) {
  const partial = `${path}.partial`;
  try {
    // pipeline waits for the file to drain before it reads the next chunk from the cache.
    await pipeline(cache.serializeStream({ chunkBytes }), createWriteStream(partial));
    await rename(partial, path);
  } catch (error) {
    await rm(partial, { force: true });
    throw error;
  }
}

/** Restores the cache in `path` into `kivi` (format version 2 or 1), reading `readBytes` at a time. */
export function readCacheFile(kivi, path, { readBytes = 1 << 20, onLayer } = {}) {
  return kivi.restoreCacheStream(createReadStream(path, { highWaterMark: readBytes }), { onLayer });
}

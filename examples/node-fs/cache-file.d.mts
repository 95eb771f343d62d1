// Types of cache-file.mjs, written structurally so that they fit kivi-wasm from npm or from source.
export function writeCacheFile(cache: { serializeStream(options?: { chunkBytes?: number }): ReadableStream<Uint8Array> }, path: string, options?: { chunkBytes?: number }): Promise<void>;
export function readCacheFile<C>(
  kivi: { restoreCacheStream(source: AsyncIterable<Uint8Array>, options?: { onLayer?: (layer: number, cache: C) => unknown }): Promise<C> },
  path: string,
  options?: { readBytes?: number; onLayer?: (layer: number, cache: C) => unknown },
): Promise<C>;

// node examples/node-fs/demo.mjs [file] — fills a cache (4 layers, 8 kv heads, head dim 128, KIVI-2,
// 4096 tokens of seeded data), writes it to a file in 1 MiB chunks, restores it and checks that the
// restored cache attends bit-identically. Also runs under `deno run --allow-read --allow-write` and `bun`.
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stat } from 'node:fs/promises';
import { Kivi } from 'kivi-wasm';
import { readCacheFile, writeCacheFile } from './cache-file.mjs';

const path = process.argv[2] ?? join(tmpdir(), 'kivi-demo.cache');
const options = { layers: 4, kvHeads: 8, headDim: 128, queryHeads: 32, bits: 2, groupSize: 32, residual: 128 };
let seed = 1;
const random = (n) => Float32Array.from({ length: n }, () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1);

const kivi = await Kivi.load();
const cache = kivi.createCache(options);
for (let l = 0; l < options.layers; l++) for (let t = 0; t < 4096; t += 512) cache.append(l, random(512 * 8 * 128), random(512 * 8 * 128));
await writeCacheFile(cache, path, { chunkBytes: 1 << 20 });
const restored = await readCacheFile(kivi, path);
const q = random(32 * 128);
let identical = true;
for (let l = 0; l < options.layers; l++) {
  const a = cache.attend(l, q), b = restored.attend(l, q);
  identical &&= a.every((x, i) => Object.is(x, b[i]));
}
console.log(`${path}: ${(await stat(path)).size} bytes for stats().bytes ${cache.stats().bytes}; restored attends ${identical ? 'bit-identically' : 'DIFFERENTLY'}`);
kivi.close();
if (!identical) process.exitCode = 1;

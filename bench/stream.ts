// npm run bench:stream — persistent caches, streamed (format version 2) against whole (version 1),
// on a Llama-3-8B-shaped KIVI-2 cache: 32 layers, 8 kv heads, head dim 128, G = 32, R = 128, 32768
// tokens of seeded data (about 0.84 GB stored).
//
// Per repetition, in this order (the four side by side, so that the machine's load falls on all):
//   serialize whole     cache.serialize(): one Uint8Array of the whole cache
//   serialize streamed  cache.serializeStream({ chunkBytes: 1 MiB }), each chunk dropped once read
//   restore whole       readFileSync(a version-1 file) + kivi.restoreCache(bytes)
//   restore streamed    kivi.restoreCacheStream(createReadStream(a version-2 file, 1 MiB reads))
// Time: wall clock of the call (the restores include reading the file, from the page cache after
// the first repetition). Throughput: stats().bytes / time. Peak extra memory: the growth of the
// process's peak resident memory (VmHWM, reset through /proc/self/clear_refs to the resident memory
// of the moment, after garbage collection, before each call). The restores go into an instance
// whose wasm memory is already grown (a warm-up restore was disposed), so that growth is what a
// restore holds besides the cache itself: the file's bytes (whole) or the chunks in flight
// (streamed). Medians of the repetitions are reported. Linux only (/proc).
//
// Options: --tokens N (default 32768), --reps N (default 3), --chunk BYTES (default 1 MiB).
// Writes bench/results/stream-<date>-<node>.json and .md.

import { createReadStream, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kivi, type CacheOptions, type KiviCache } from '../src/index';

const args = process.argv.slice(2);
const arg = (name: string, fallback: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const TOKENS = arg('tokens', 32768);
const REPS = arg('reps', 3);
const CHUNK = arg('chunk', 1 << 20);
const OPTIONS: CacheOptions = { layers: 32, kvHeads: 8, headDim: 128, queryHeads: 32, bits: 2, groupSize: 32, residual: 128 };
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with node --expose-gc (npm run bench:stream does)');

function memory(): { rss: number; peak: number } {
  const status = readFileSync('/proc/self/status', 'utf8');
  const kb = (key: string) => Number(status.match(new RegExp(`${key}:\\s+(\\d+) kB`))![1]) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

/** Runs fn with the peak resident memory reset before it; returns its time and the peak's growth. */
async function measured<T>(fn: () => Promise<T> | T): Promise<{ ms: number; extraBytes: number; value: T }> {
  // The last call's garbage collected and its pages given back (V8 frees large buffers on a
  // background thread) before the peak is reset to the resident memory of now.
  for (let i = 0; i < 3; i++) {
    gc!();
    await new Promise((r) => setTimeout(r, 300));
  }
  writeFileSync('/proc/self/clear_refs', '5');
  const before = memory().peak;
  const t0 = performance.now();
  const value = await fn();
  const ms = performance.now() - t0;
  return { ms, extraBytes: memory().peak - before, value };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** Seeded values in [-1, 1) (an LCG: the data only has to be the same every run). */
function filler(seed: number): (n: number) => Float32Array {
  let s = seed >>> 0;
  return (n) => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      out[i] = s / 2 ** 31 - 1;
    }
    return out;
  };
}

async function main(): Promise<void> {
  const started = new Date();
  const writer = await Kivi.load();
  const reader = await Kivi.load();
  console.log(`node ${process.version}, ${writer.variant} build, ${writer.threads} threads; ${TOKENS} tokens, chunks of ${CHUNK} bytes, ${REPS} repetitions`);
  const cache = writer.createCache(OPTIONS);
  const random = filler(1);
  const row = OPTIONS.kvHeads * OPTIONS.headDim;
  const t0 = performance.now();
  for (let l = 0; l < OPTIONS.layers; l++) {
    // A prompt in appends of up to 2048 tokens, then one decoded token, which quantizes what the
    // prompt's last append left beyond the residual window (SPEC.md), as in decoding.
    for (let t = 0; t < TOKENS - 1; t += 2048) {
      const n = Math.min(2048, TOKENS - 1 - t);
      cache.append(l, random(n * row), random(n * row));
    }
    cache.append(l, random(row), random(row));
  }
  const stats = cache.stats();
  console.log(`cache filled in ${((performance.now() - t0) / 1000).toFixed(1)} s: stats().bytes ${stats.bytes}, ${stats.bitsPerElement.toFixed(3)} bits per number`);

  const dir = mkdtempSync(join(tmpdir(), 'kivi-bench-stream-'));
  const v1 = join(dir, 'cache.v1');
  const v2 = join(dir, 'cache.v2');
  try {
    writeFileSync(v1, cache.serialize());
    const file = await open(v2, 'w');
    for await (const chunk of cache.serializeStream({ chunkBytes: CHUNK })) await file.write(chunk);
    await file.close();
    const sizes = { statsBytes: stats.bytes, v1Bytes: statSync(v1).size, v2Bytes: statSync(v2).size };
    console.log(`stored: version 1 ${sizes.v1Bytes} bytes, version 2 ${sizes.v2Bytes} bytes (stats().bytes ${stats.bytes})`);
    // The reader's wasm memory grown once, so that the measured restores reuse it.
    (await reader.restoreCacheStream(createReadStream(v2, { highWaterMark: CHUNK }))).dispose();

    const runs: Record<string, { ms: number[]; extra: number[] }> = {};
    const record = (name: string, r: { ms: number; extraBytes: number }) => {
      runs[name] ??= { ms: [], extra: [] };
      runs[name]!.ms.push(r.ms);
      runs[name]!.extra.push(r.extraBytes);
      console.log(`  ${name.padEnd(18)} ${(r.ms / 1000).toFixed(3)} s  ${(stats.bytes / r.ms / 1e6).toFixed(3)} GB/s  peak extra ${(r.extraBytes / 2 ** 20).toFixed(1)} MiB`);
    };
    for (let rep = 0; rep < REPS; rep++) {
      console.log(`repetition ${rep + 1}`);
      const whole = await measured(() => cache.serialize().length);
      record('serialize whole', whole);
      record('serialize streamed', await measured(async () => {
        let bytes = 0;
        for await (const chunk of cache.serializeStream({ chunkBytes: CHUNK })) bytes += chunk.length;
        return bytes;
      }));
      const restoredWhole = await measured(() => reader.restoreCache(readFileSync(v1)));
      record('restore whole', restoredWhole);
      restoredWhole.value.dispose();
      const restoredStreamed = await measured(() => reader.restoreCacheStream(createReadStream(v2, { highWaterMark: CHUNK })));
      record('restore streamed', restoredStreamed);
      if (rep === 0) verify(cache, restoredStreamed.value);
      restoredStreamed.value.dispose();
    }
    const summary = Object.fromEntries(Object.entries(runs).map(([name, r]) => [name, {
      medianSeconds: median(r.ms) / 1000, gbPerSecond: stats.bytes / median(r.ms) / 1e6, medianPeakExtraBytes: median(r.extra), ms: r.ms, peakExtraBytes: r.extra,
    }]));
    const result = {
      date: started.toISOString(), node: process.version, variant: writer.variant, threads: writer.threads, tokens: TOKENS, options: OPTIONS, chunkBytes: CHUNK, reps: REPS, sizes, summary,
    };
    const stamp = `${started.toISOString().slice(0, 10)}-${process.version}`;
    const out = new URL('./results/', import.meta.url).pathname;
    writeFileSync(join(out, `stream-${stamp}.json`), `${JSON.stringify(result, null, 2)}\n`);
    writeFileSync(join(out, `stream-${stamp}.md`), report(result));
    console.log(report(result));
  } finally {
    rmSync(dir, { recursive: true, force: true });
    writer.close();
    reader.close();
  }
}

/** The streamed restore attends bit-identically to the original (checked once, outside the timing). */
function verify(original: KiviCache, restored: KiviCache): void {
  const q = filler(7)(OPTIONS.queryHeads! * OPTIONS.headDim);
  for (const l of [0, OPTIONS.layers - 1]) {
    const a = original.attend(l, q), b = restored.attend(l, q);
    for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) throw new Error(`layer ${l}: the restored cache attends differently at ${i}`);
  }
}

function report(r: { date: string; node: string; variant: string; threads: number; tokens: number; chunkBytes: number; reps: number; sizes: { statsBytes: number; v1Bytes: number; v2Bytes: number }; summary: Record<string, { medianSeconds: number; gbPerSecond: number; medianPeakExtraBytes: number }> }): string {
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  const lines = [
    `# Streamed vs whole persistent caches (${r.date.slice(0, 10)}, node ${r.node}, ${r.variant})`,
    '',
    `Llama-3-8B-shaped KIVI-2 cache: 32 layers, 8 kv heads, head dim 128, G = 32, R = 128, ${r.tokens} tokens. `
      + `Streamed: chunks of ${r.chunkBytes} bytes. Medians of ${r.reps} repetitions, run side by side on a shared 2-core machine (npm run bench:stream).`,
    '',
    `Stored: stats().bytes ${r.sizes.statsBytes}; version 1 file ${r.sizes.v1Bytes} bytes (+${r.sizes.v1Bytes - r.sizes.statsBytes}); `
      + `version 2 file ${r.sizes.v2Bytes} bytes (+${r.sizes.v2Bytes - r.sizes.statsBytes}: header, 12 bytes per chunk, whole last value blocks).`,
    '',
    '| operation | median time | throughput (stats().bytes / time) | peak extra memory |',
    '|---|---:|---:|---:|',
    ...Object.entries(r.summary).map(([name, s]) => `| ${name} | ${s.medianSeconds.toFixed(3)} s | ${s.gbPerSecond.toFixed(3)} GB/s | ${mib(s.medianPeakExtraBytes)} |`),
    '',
    'Peak extra memory: growth of the process\'s peak resident memory (VmHWM, reset to the resident memory after garbage collection, before each call). '
      + 'Serialize whole holds the output; restore whole holds the file\'s bytes read whole; the streamed forms hold the chunks in flight. '
      + 'The restores go into an instance whose wasm memory was grown by a warm-up restore, so the restored cache itself is not counted; '
      + 'their times include reading the file (from the page cache).',
    '',
  ];
  return lines.join('\n');
}

void main();

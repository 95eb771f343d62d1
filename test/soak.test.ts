// Soak (bounded, about 8 s): many create/append/attend/dispose cycles with random shapes in one Kivi
// instance, its jobs on the worker pool. dispose() returns memory that later caches reuse, so once the
// largest shapes have been seen the wasm memory stops growing. Then instances loaded and closed over
// and over: the process's threads and memory stay flat (workers are terminated, not leaked).
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { Kivi, type CacheOptions } from '../src/index';
import { ReferenceCache, Rng, relativeL2, syntheticKv } from '../src/reference';
import { referenceOptions, runtimeOf } from './helpers';

const SOAK_MS = Number(process.env.KIVI_SOAK_MS ?? 8000);

function randomOptions(rng: Rng, largest: boolean): CacheOptions {
  const pick = <T>(list: readonly T[]): T => (largest ? list[list.length - 1]! : list[Math.floor(rng.next() * list.length)]!);
  const kvHeads = pick([1, 2, 3, 4]);
  const groupSize = pick([8, 16, 32]);
  return {
    layers: pick([1, 2, 3]),
    kvHeads,
    queryHeads: kvHeads * pick([1, 2, 4]),
    headDim: pick([8, 16, 32, 64]),
    bits: largest ? 32 : pick([2, 4, 8, 32] as const),
    groupSize,
    residual: groupSize * pick([0, 1, 2, 4]),
    sinkTokens: pick([0, 1, 4]),
    maxTokens: pick([undefined, 64, 300]),
  };
}

describe('soak', () => {
  it(`create/append/attend/dispose cycles for ${SOAK_MS} ms: the wasm memory stops growing`, async () => {
    const kivi = await Kivi.load({ threads: 2 });
    expect(kivi.threads).toBe(2);
    runtimeOf(kivi).dispatchWork = 0; // every job on the pool
    const rng = new Rng(7);
    const MAX_APPEND = 96;
    const MAX_TOKENS = 400;
    let cycles = 0;
    let checked = 0;
    const cycle = (largest: boolean) => {
      // Two caches at a time, disposed in either order, so freed blocks are interleaved.
      const caches = [randomOptions(rng, largest), randomOptions(rng, largest)].map((o) => ({ o, c: kivi.createCache(o), r: null as ReferenceCache | null }));
      if (cycles % 25 === 0) caches[0]!.r = new ReferenceCache(referenceOptions(caches[0]!.o));
      for (const { o, c, r } of caches) {
        let total = 0;
        while (total < (largest ? MAX_TOKENS : rng.next() * MAX_TOKENS)) {
          const layer = Math.floor(rng.next() * o.layers);
          const n = largest ? MAX_APPEND : 1 + Math.floor(rng.next() * MAX_APPEND);
          const k = syntheticKv(rng, n, o.kvHeads, o.headDim, 'keys');
          const v = syntheticKv(rng, n, o.kvHeads, o.headDim, 'values');
          c.append(layer, k, v);
          r?.append(layer, k, v);
          total += n;
          const q = syntheticKv(rng, Math.min(n, 1 + Math.floor(rng.next() * 4)), o.queryHeads!, o.headDim, 'queries');
          const got = c.attend(layer, q);
          if (r) {
            expect(relativeL2(got, r.attend(layer, q))).toBeLessThan(2e-3);
            checked++;
          }
        }
      }
      if (rng.next() < 0.5) caches.reverse();
      for (const { c } of caches) c.dispose();
      cycles++;
    };
    for (let i = 0; i < 3; i++) cycle(true); // the largest shapes first: the peak the soak may reach
    for (let i = 0; i < 30; i++) cycle(false);
    const settled = kivi.memoryBytes;
    const start = performance.now();
    const samples: number[] = [];
    while (performance.now() - start < SOAK_MS) {
      cycle(false);
      if (cycles % 50 === 0) samples.push(kivi.memoryBytes);
    }
    console.log(`soak: ${cycles} cycles, ${checked} attention checks against the reference, memory ${settled} bytes after the first 33 cycles, ${kivi.memoryBytes} at the end`);
    expect(cycles).toBeGreaterThan(100);
    expect(samples.every((m) => m === settled), `memory over time: ${samples.join(', ')}`).toBe(true);
    expect(kivi.memoryBytes).toBe(settled);
  }, 60_000);
});

/** A full garbage collection (dropped instances release their memories only when collected). */
function collectGarbage(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

/** The process's OS threads (Linux), which include every live worker's. */
function osThreads(): number {
  return Number(/^Threads:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]);
}

describe('soak of instances', () => {
  it('load (threads 2), attend on the pool, close: live threads and memory stay flat', async () => {
    const rng = new Rng(8);
    const o: CacheOptions = { layers: 1, kvHeads: 2, queryHeads: 4, headDim: 64, bits: 2 };
    const k = syntheticKv(rng, 600, 2, 64, 'keys'), v = syntheticKv(rng, 600, 2, 64, 'values');
    const q = syntheticKv(rng, 1, 4, 64, 'queries');
    const round = async () => {
      const kivi = await Kivi.load({ threads: 2 });
      runtimeOf(kivi).dispatchWork = 0;
      const cache = kivi.createCache(o);
      cache.append(0, k, v);
      expect(cache.attend(0, q).every(Number.isFinite)).toBe(true);
      cache.dispose();
      kivi.close();
    };
    const settle = async (before: number) => {
      // Terminated workers end asynchronously: give them a moment to go.
      for (let i = 0; i < 100 && osThreads() > before; i++) await new Promise((r) => setTimeout(r, 20));
      return osThreads();
    };
    const measure = async (rounds: number, threadsBefore: number) => {
      for (let i = 0; i < rounds; i++) await round();
      const threads = await settle(threadsBefore);
      collectGarbage();
      return { threads, rss: process.memoryUsage().rss };
    };
    const warm = await measure(10, osThreads());
    const middle = await measure(25, warm.threads);
    const end = await measure(25, warm.threads);
    const mib = (b: number) => (b / 2 ** 20).toFixed(0);
    console.log(`instance soak: OS threads ${warm.threads} / ${middle.threads} / ${end.threads}, RSS ${mib(warm.rss)} / ${mib(middle.rss)} / ${mib(end.rss)} MiB after 10 / 35 / 60 rounds`);
    expect(middle.threads).toBeLessThanOrEqual(warm.threads + 1);
    expect(end.threads).toBeLessThanOrEqual(warm.threads + 1);
    // No growth that lasts: 50 more instances (each with a 4 GiB shared memory reserved and a worker)
    // leave RSS where 10 left it, give or take the collector's timing (a leak of one memory's
    // committed pages per instance would add over 50 MiB).
    expect(Math.max(middle.rss, end.rss) - warm.rss).toBeLessThan(40 * 2 ** 20);
  }, 60_000);
});

// Threads: every thread count from 1 to 4 against the float64 reference and bit-identical to each
// other, for both threaded builds, bits 2/4/8/32, MHA/GQA/MQA, single- and multi-token attend,
// sinks and both key windows — on data with outlier key channels. Then the pool's failures: a trap in
// a worker, a worker that dies mid-call, and the process exiting once the instance is closed.
//
// The pool is made to take every job (dispatchWork = 0), so that even these small caches run on it;
// 3 and 4 threads oversubscribe this machine's cores, which changes the timing, never the bits.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Kivi, type CacheOptions, type KiviCache, type VariantName } from '../src/index';
import { poolSettingsForTests } from '../src/kivi';
import { ReferenceCache, Rng, relativeL2, syntheticKv } from '../src/reference';
import { expectSameGroups, referenceOptions, runtimeOf } from './helpers';

const THREADED: VariantName[] = ['relaxed-simd', 'simd'];
const THREAD_COUNTS = [1, 2, 3, 4];

interface Scenario {
  name: string;
  options: CacheOptions;
  /** Tokens per append; after each, the newest min(n, 7) and the newest 1 query the cache. */
  steps: number[];
}

const SCENARIOS: Scenario[] = [
  { name: 'MHA KIVI-2 chunked, prefill then decode', options: { layers: 1, kvHeads: 2, headDim: 64, bits: 2 }, steps: [1100, 1, 1, 130, 1] },
  { name: 'GQA KIVI-4 sliding keys, 3 sinks', options: { layers: 1, kvHeads: 2, queryHeads: 8, headDim: 64, bits: 4, keyWindow: 'sliding', sinkTokens: 3 }, steps: [900, 1, 40, 1] },
  { name: 'MQA KIVI-8, G 16 R 64', options: { layers: 1, kvHeads: 1, queryHeads: 4, headDim: 128, bits: 8, groupSize: 16, residual: 64 }, steps: [1200, 1, 7] },
  { name: 'GQA f32 cache (bits 32)', options: { layers: 1, kvHeads: 2, queryHeads: 4, headDim: 32, bits: 32 }, steps: [700, 1, 9] },
  { name: 'ablations: keys per token, values per channel, R = 0', options: { layers: 1, kvHeads: 2, headDim: 32, bits: 2, groupSize: 16, residual: 0, keyGrouping: 'token', valueGrouping: 'channel' }, steps: [600, 1, 17] },
];

/** Instances per build and thread count. */
const instances = new Map<string, Kivi>();
const key = (variant: VariantName, threads: number) => `${variant}/${threads}`;

beforeAll(async () => {
  for (const variant of THREADED) {
    for (const threads of THREAD_COUNTS) {
      const kivi = await Kivi.load({ variant, threads });
      expect(kivi.variant).toBe(variant);
      expect(kivi.threads, `${variant} with ${threads} threads`).toBe(threads);
      expect(kivi.threadsReason).toBeNull();
      runtimeOf(kivi).dispatchWork = 0;
      instances.set(key(variant, threads), kivi);
    }
  }
});

afterAll(() => {
  for (const kivi of instances.values()) kivi.close();
});

function sameBits(a: Float32Array, b: Float32Array): number {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i;
  return x.length === y.length ? -1 : x.length;
}

describe.each(THREADED)('%s threaded build', (variant) => {
  it.each(SCENARIOS.map((s) => [s.name, s] as const))('%s: 1-4 threads give the same bits, within 2e-3 of float64', (_name, scenario) => {
    const o = scenario.options;
    const queryHeads = o.queryHeads ?? o.kvHeads;
    const caches = THREAD_COUNTS.map((t) => instances.get(key(variant, t))!.createCache(o));
    const ref = new ReferenceCache(referenceOptions(o));
    const rng = new Rng(0x7e4d ^ scenario.name.length);
    let worst = 0;
    for (const [step, n] of scenario.steps.entries()) {
      const keys = syntheticKv(rng, n, o.kvHeads, o.headDim, 'keys');
      const values = syntheticKv(rng, n, o.kvHeads, o.headDim, 'values');
      for (const cache of caches) cache.append(0, keys, values);
      ref.append(0, keys, values);
      for (const q of new Set([Math.min(n, 7), 1])) {
        const queries = syntheticKv(rng, q, queryHeads, o.headDim, 'queries');
        const outs = caches.map((cache) => cache.attend(0, queries));
        const error = relativeL2(outs[0]!, ref.attend(0, queries));
        worst = Math.max(worst, error);
        expect(error, `step ${step}: ${q} queries vs float64`).toBeLessThan(2e-3);
        outs.forEach((out, i) => expect(sameBits(out, outs[0]!), `step ${step}, ${q} queries: ${THREAD_COUNTS[i]} threads vs 1, first different number`).toBe(-1));
      }
      const stats = caches.map((c) => c.stats());
      for (const s of stats) expect(s).toEqual(stats[0]);
    }
    // The prefill's attention ran over several ranges (the split-K path).
    expect(caches[0]!.tokens(0)).toBeGreaterThan(512);
    expect(worst).toBeGreaterThan(0);
    if ((o.bits ?? 2) !== 32) {
      for (const cache of caches) {
        const stored = cache.inspect(0);
        expectSameGroups(stored.keys, ref.keyGroups(0), 'keys');
        expectSameGroups(stored.values, ref.valueGroups(0), 'values');
      }
    }
    for (const cache of caches) cache.dispose();
  });

  it('the single-threaded build gives the same bits as the threaded one', async () => {
    const single = await Kivi.load({ variant, threads: 1 });
    expect(runtimeOf(single).build.threaded).toBe(false);
    const threaded = instances.get(key(variant, 2))!;
    expect(runtimeOf(threaded).build.threaded).toBe(true);
    const o: CacheOptions = { layers: 1, kvHeads: 1, queryHeads: 8, headDim: 64, bits: 2, sinkTokens: 1 };
    const [a, b] = [single.createCache(o), threaded.createCache(o)];
    const rng = new Rng(5);
    for (const n of [1500, 1, 3]) {
      const k = syntheticKv(rng, n, 1, 64, 'keys'), v = syntheticKv(rng, n, 1, 64, 'values');
      a.append(0, k, v);
      b.append(0, k, v);
      const q = syntheticKv(rng, Math.min(n, 3), 8, 64, 'queries');
      expect(sameBits(a.attend(0, q), b.attend(0, q))).toBe(-1);
    }
    expect(a.serialize()).toEqual(b.serialize());
    single.close();
  });
});

describe('kivi.threads', () => {
  it("is what was asked for, 'auto' is the hardware concurrency, and 1 says why where threads cannot run", async () => {
    const { availableParallelism } = await import('node:os');
    const auto = await Kivi.load();
    expect(auto.threads).toBe(availableParallelism());
    expect(auto.threadsReason).toBeNull();
    auto.close();
    expect(auto.threads).toBe(1);
    expect(auto.threadsReason).toMatch(/closed/);
    const one = await Kivi.load({ threads: 1 });
    expect([one.threads, one.threadsReason]).toEqual([1, null]);
    const scalar = await Kivi.load({ variant: 'scalar', threads: 4 });
    expect(scalar.threads).toBe(1);
    expect(scalar.threadsReason).toMatch(/scalar build has no threaded form/);
    await expect(Kivi.load({ threads: 0 })).rejects.toThrow(/threads must be 'auto' or an integer from 1 to 256, got 0/);
    await expect(Kivi.load({ threads: 2.5 })).rejects.toThrow(RangeError);
    await expect(Kivi.load({ threads: '4' as unknown as number })).rejects.toThrow(TypeError);
  });

  it('a closed instance and its caches refuse every call', async () => {
    const kivi = await Kivi.load({ threads: 2 });
    const cache = kivi.createCache({ layers: 1, kvHeads: 1, headDim: 8 });
    kivi.close();
    kivi.close(); // a second close does nothing
    expect(() => kivi.createCache({ layers: 1, kvHeads: 1, headDim: 8 })).toThrow(/Kivi.createCache: the instance was closed/);
    expect(() => cache.append(0, new Float32Array(8), new Float32Array(8))).toThrow(/the Kivi instance that made this cache was closed/);
    expect(() => cache.stats()).toThrow(TypeError);
  });
});

describe('pool failures', () => {
  const o: CacheOptions = { layers: 1, kvHeads: 2, queryHeads: 4, headDim: 64, bits: 2, residual: 32 };

  /** A cache with some history, what it shows, and the queries that read it. */
  function filled(kivi: Kivi): { cache: KiviCache; queries: Float32Array; snapshot: () => string } {
    const cache = kivi.createCache(o);
    const rng = new Rng(11);
    for (const n of [700, 1, 1]) cache.append(0, syntheticKv(rng, n, 2, 64, 'keys'), syntheticKv(rng, n, 2, 64, 'values'));
    const queries = syntheticKv(rng, 1, 4, 64, 'queries');
    const snapshot = () => JSON.stringify([cache.stats(), Array.from(cache.attend(0, queries)), cache.serialize().length]);
    return { cache, queries, snapshot };
  }

  it('a trap inside a worker: the call throws, the cache is unchanged, the pool is rebuilt', async () => {
    const kivi = await Kivi.load({ threads: 3 });
    const rt = runtimeOf(kivi);
    rt.dispatchWork = 0;
    const { cache, snapshot } = filled(kivi);
    const before = snapshot();
    rt.faultThread = 2;
    const rng = new Rng(12);
    const k = syntheticKv(rng, 300, 2, 64, 'keys'), v = syntheticKv(rng, 300, 2, 64, 'values');
    expect(() => cache.append(0, k, v)).toThrow(/worker thread 2 failed while running a job: RuntimeError: unreachable.*The caches are unchanged/s);
    rt.faultThread = -1;
    expect(kivi.threads).toBe(1);
    expect(kivi.threadsReason).toMatch(/worker pool failed and is being restarted/);
    expect(snapshot()).toBe(before);
    await rt.whenRestarted();
    expect(kivi.threads).toBe(3);
    expect(kivi.threadsReason).toBeNull();
    expect(snapshot()).toBe(before);
    cache.append(0, k, v); // works again, on three threads
    expect(cache.tokens(0)).toBe(702 + 300);
    kivi.close();
  });

  it('a worker that dies mid-call: the call throws once it stalls, the cache is unchanged, the pool is rebuilt', async () => {
    const saved = poolSettingsForTests.current;
    poolSettingsForTests.current = { ...saved, stallMs: 300 };
    try {
      const kivi = await Kivi.load({ threads: 2 });
      const rt = runtimeOf(kivi);
      rt.dispatchWork = 0;
      const { cache, queries, snapshot } = filled(kivi);
      const before = snapshot();
      rt.workerPool!.killWorkerAtNextJob(1);
      expect(() => cache.attend(0, queries)).toThrow(/1 of 1 worker threads stopped responding \(no task finished for 300 ms\).*The caches are unchanged/s);
      expect(snapshot()).toBe(before);
      await rt.whenRestarted();
      expect(kivi.threads).toBe(2);
      expect(snapshot()).toBe(before);
      kivi.close();
    } finally {
      poolSettingsForTests.current = saved;
    }
  });

  it('no worker keeps the process alive, closed or not', () => {
    const script = join(__dirname, 'threads-exit.mjs');
    for (const close of ['close', 'no-close']) {
      const started = performance.now();
      const run = spawnSync(process.execPath, [script, close], { encoding: 'utf8', timeout: 30_000 });
      expect(run.status, `${close}: ${run.stderr}`).toBe(0);
      expect(run.stdout).toMatch(/threads 2/);
      expect(performance.now() - started, `${close}: the process exits promptly`).toBeLessThan(15_000);
    }
  });
});

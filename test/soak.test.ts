// Soak (bounded, about 8 s): many create/append/attend/dispose cycles with random shapes in one Kivi
// instance. dispose() returns memory that later caches reuse, so once the largest shapes have been
// seen the wasm memory stops growing.
import { describe, expect, it } from 'vitest';
import { Kivi, type CacheOptions } from '../src/index';
import { ReferenceCache, Rng, relativeL2, syntheticKv } from '../src/reference';
import { referenceOptions } from './helpers';

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
    const kivi = await Kivi.load();
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

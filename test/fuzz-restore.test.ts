// Quick runs of the restoreCache, restoreCacheStream and parseGguf fuzzers (the long ones:
// npm run fuzz [-- --target stream|gguf]).
import { describe, expect, it } from 'vitest';
import { Kivi, VARIANTS } from '../src/index';
import { runFuzz, runGgufFuzz, runStreamFuzz } from '../scripts/fuzz';

describe('restoreCache fuzzing', () => {
  for (const v of VARIANTS) {
    it(`${v.name}: every malformed input restores a usable cache or throws TypeError/RangeError`, async () => {
      const kivi = await Kivi.load({ variant: v.name, maxMemoryBytes: 256 * 2 ** 20 });
      const r = runFuzz(kivi, { cases: v.name === 'simd' ? 6000 : 2000, seconds: 3, seed: 20261124 });
      expect(r.failures.slice(0, 5)).toEqual([]);
      expect(r.cases).toBeGreaterThan(200);
      expect(r.typeErrors + r.rangeErrors + r.restored).toBe(r.cases);
      expect(r.rangeErrors).toBeGreaterThan(0);
      expect(r.typeErrors).toBeGreaterThan(0);
      expect(r.restored, 'inputs that still restore (and attend)').toBeGreaterThan(0);
      expect(kivi.memoryBytes).toBeLessThanOrEqual(256 * 2 ** 20);
    }, 30_000);
  }
});

describe('restoreCacheStream fuzzing', () => {
  for (const v of VARIANTS) {
    it(`${v.name}: every malformed stream restores a usable cache or rejects with TypeError/RangeError, freeing what it allocated`, async () => {
      const kivi = await Kivi.load({ variant: v.name, maxMemoryBytes: 256 * 2 ** 20 });
      const r = await runStreamFuzz(kivi, { cases: v.name === 'simd' ? 6000 : 2000, seconds: 3, seed: 20261202 });
      expect(r.failures.slice(0, 5)).toEqual([]);
      expect(r.cases).toBeGreaterThan(200);
      expect(r.typeErrors + r.rangeErrors + r.restored).toBe(r.cases);
      expect(r.rangeErrors).toBeGreaterThan(0);
      expect(r.typeErrors).toBeGreaterThan(0);
      expect(r.restored, 'streams that still restore (and attend)').toBeGreaterThan(0);
      for (const kind of ['frame dropped', 'frame repeated', 'frames swapped', 'truncation', 'source fails midway', 'a chunk far larger than a frame', 'stream cut into other pieces']) {
        expect(r.byKind[kind], kind).toBeGreaterThan(0);
      }
      expect(kivi.memoryBytes).toBeLessThanOrEqual(256 * 2 ** 20);
    }, 30_000);
  }
});

describe('parseGguf fuzzing', () => {
  for (const v of VARIANTS) {
    it(`${v.name}: every malformed GGUF parses into a model that runs, or throws TypeError/RangeError`, async () => {
      const kivi = await Kivi.load({ variant: v.name, maxMemoryBytes: 256 * 2 ** 20 });
      const r = runGgufFuzz(kivi, { cases: 3000, seconds: 2, seed: 20261125 });
      expect(r.failures.slice(0, 5)).toEqual([]);
      expect(r.cases).toBeGreaterThan(200);
      expect(r.typeErrors + r.rangeErrors + r.restored + r.refusedAtRun).toBe(r.cases);
      expect(r.rangeErrors).toBeGreaterThan(0);
      expect(r.typeErrors).toBeGreaterThan(0);
      expect(r.restored, 'mutated files that still parse and run').toBeGreaterThan(0);
      expect(kivi.memoryBytes).toBeLessThanOrEqual(256 * 2 ** 20);
    }, 30_000);
  }
});

// Persistent caches: serialize() / restoreCache() (docs/FORMAT.md).
import { beforeAll, describe, expect, it } from 'vitest';
import { Kivi, type CacheOptions, type KiviCache, type VariantName } from '../src/index';
import { crc32, HEADER_BYTES } from '../src/serialize';
import { ReferenceCache, relativeL2, Rng, syntheticKv } from '../src/reference';
import { expectSameGroups, loadAllVariants, referenceOptions, runtimeOf, trackAllocations, VARIANT_NAMES } from './helpers';

let kivis: Map<VariantName, Kivi>;
beforeAll(async () => {
  kivis = await loadAllVariants();
});

/** Seeded test data with outlier key channels (the reference's generator). */
function rng(seed: number): Rng {
  return new Rng(seed);
}

function feed(cache: KiviCache, o: CacheOptions, random: Rng, tokens: number[], layer = 0): void {
  for (const n of tokens) cache.append(layer, syntheticKv(random, n, o.kvHeads, o.headDim, 'keys'), syntheticKv(random, n, o.kvHeads, o.headDim, 'values'));
}

function query(o: CacheOptions, random: Rng, q = 1): Float32Array {
  return syntheticKv(random, q, o.queryHeads ?? o.kvHeads, o.headDim, 'queries');
}

function expectEqualArrays(got: Float32Array, want: Float32Array, what: string): void {
  expect(got.length, what).toBe(want.length);
  let first = -1;
  for (let i = 0; i < got.length; i++) if (!Object.is(got[i], want[i])) { first = i; break; }
  expect(first, `${what}: first difference at ${first}: ${got[first]} vs ${want[first]}`).toBe(-1);
}

function resign(bytes: Uint8Array): Uint8Array {
  const out = bytes.slice();
  new DataView(out.buffer).setUint32(out.length - 4, crc32(out, 0, out.length - 4), true);
  return out;
}

const CONFIGS: [string, CacheOptions][] = [
  ['2-bit KIVI', { layers: 2, kvHeads: 2, headDim: 32, queryHeads: 4, bits: 2, groupSize: 16, residual: 32 }],
  ['4-bit sliding + sinks', { layers: 1, kvHeads: 2, headDim: 16, bits: 4, groupSize: 8, residual: 16, sinkTokens: 3, keyWindow: 'sliding' }],
  ['8-bit ablations', { layers: 1, kvHeads: 1, headDim: 16, bits: 8, groupSize: 8, residual: 8, keyGrouping: 'token', valueGrouping: 'channel' }],
  ['2-bit R = 0, maxTokens', { layers: 1, kvHeads: 3, headDim: 8, bits: 2, groupSize: 8, residual: 0, maxTokens: 100 }],
  ['f32', { layers: 1, kvHeads: 2, headDim: 8, bits: 32, sinkTokens: 2 }],
];

describe('serialize / restoreCache', () => {
  for (const [name, o] of CONFIGS) {
    it(`${name}: restores bit-identically and keeps appending identically`, () => {
      for (const variant of VARIANT_NAMES) {
        const kivi = kivis.get(variant)!;
        const random = rng(7);
        const original = kivi.createCache(o);
        for (let l = 0; l < o.layers; l++) feed(original, o, random, [37, 1, 1, 5, 20, 1], l);
        const bytes = original.serialize();
        const restored = kivi.restoreCache(bytes);
        expect(restored.options).toEqual(original.options);
        expect(restored.stats()).toEqual(original.stats());
        for (let l = 0; l < o.layers; l++) {
          const got = restored.inspect(l), want = original.inspect(l);
          if (o.bits === 32) {
            expect(got, `${variant} layer ${l}: an f32 cache has no groups`).toEqual({ keys: null, values: null });
          } else {
            expectSameGroups(got.keys, want.keys!, `${variant} layer ${l} keys`);
            expectSameGroups(got.values, want.values!, `${variant} layer ${l} values`);
          }
          const q = query(o, random, 3);
          expectEqualArrays(restored.attend(l, q), original.attend(l, q), `${variant} layer ${l} attend`);
        }
        // Continue on both with the same data.
        const forOriginal = rng(8), forRestored = rng(8); // the same tokens for both
        for (const n of [1, 1, 2, 1, 40, 1, 1, 9, 1, 17]) {
          feed(original, o, forOriginal, [n]);
          feed(restored, o, forRestored, [n]);
          const q = query(o, random);
          expectEqualArrays(restored.attend(0, q), original.attend(0, q), `${variant} after +${n}`);
          expect(restored.stats()).toEqual(original.stats());
        }
        // Serializing the restored cache gives the same bytes as the original.
        expect(restored.serialize()).toEqual(original.serialize());
        // ArrayBuffer input works too.
        const again = kivi.restoreCache(bytes.slice().buffer);
        expect(again.stats()).toEqual(kivi.restoreCache(bytes).stats());
        original.dispose();
        restored.dispose();
        again.dispose();
      }
    });
  }

  it('every state random appends reach restores (the schedule checks accept all of them)', () => {
    const kivi = kivis.get('simd')!;
    const random = rng(99);
    const pick = <T,>(items: T[]): T => items[Math.floor(random.next() * items.length)]!;
    for (let trial = 0; trial < 60; trial++) {
      const G = pick([8, 16]);
      const keyGrouping = pick(['channel', 'token'] as const);
      const o: CacheOptions = {
        layers: 1, kvHeads: pick([1, 2]), headDim: 16, bits: pick([2, 4, 8, 32] as const), groupSize: G,
        residual: G * pick([0, 1, 2]), sinkTokens: pick([0, 0, 1, 5]), keyGrouping, valueGrouping: pick(['token', 'channel'] as const),
      };
      if (keyGrouping === 'channel' && (o.residual ?? 0) >= G && random.next() < 0.5) o.keyWindow = 'sliding';
      const cache = kivi.createCache(o);
      for (let step = 0; step < 25; step++) {
        feed(cache, o, random, [pick([1, 1, 1, 2, 3, 7, 16, 33])]);
        const restored = kivi.restoreCache(cache.serialize());
        expect(restored.stats()).toEqual(cache.stats());
        const q = query(o, random);
        expectEqualArrays(restored.attend(0, q), cache.attend(0, q), `trial ${trial} step ${step}`);
        restored.dispose();
      }
      cache.dispose();
    }
  });

  it('an empty cache round-trips', () => {
    const kivi = kivis.get('simd')!;
    const o: CacheOptions = { layers: 3, kvHeads: 1, headDim: 8 };
    const restored = kivi.restoreCache(kivi.createCache(o).serialize());
    expect(restored.stats().tokens).toBe(0);
    feed(restored, o, rng(1), [5]);
    expect(restored.tokens(0)).toBe(5);
  });

  it('bytes written by one build restore in every other', () => {
    const o: CacheOptions = { layers: 1, kvHeads: 2, headDim: 64, queryHeads: 4, bits: 2, groupSize: 32, residual: 32, sinkTokens: 2 };
    for (const from of VARIANT_NAMES) {
      const random = rng(11);
      const source = kivis.get(from)!.createCache(o);
      const ref = new ReferenceCache(referenceOptions(o));
      for (const n of [150, 1, 1, 3]) {
        const k = syntheticKv(random, n, o.kvHeads, o.headDim, 'keys');
        const v = syntheticKv(random, n, o.kvHeads, o.headDim, 'values');
        source.append(0, k, v);
        ref.append(0, k, v);
      }
      const bytes = source.serialize();
      const q = query(o, random, 2);
      const want = source.attend(0, q);
      const exact = ref.attend(0, q);
      for (const to of VARIANT_NAMES) {
        const restored = kivis.get(to)!.restoreCache(bytes);
        const a = restored.inspect(0);
        const b = source.inspect(0);
        expectSameGroups(a.keys, b.keys!, `${from}→${to} keys`);
        expectSameGroups(a.values, b.values!, `${from}→${to} values`);
        const got = restored.attend(0, q);
        // Each build is held to SPEC.md's contract against float64 over the same stored cache.
        expect(relativeL2(got, exact), `${from}→${to} against float64`).toBeLessThan(2e-3);
        if (to === from) expectEqualArrays(got, want, `${from}→${to}`);
        restored.dispose();
      }
      source.dispose();
    }
  });

  it('a 2-bit cache serializes to about its stored bytes', () => {
    const kivi = kivis.get('simd')!;
    const o: CacheOptions = { layers: 2, kvHeads: 4, headDim: 64, bits: 2, groupSize: 32, residual: 128, maxTokens: 4096 };
    const cache = kivi.createCache(o);
    for (let l = 0; l < 2; l++) feed(cache, o, rng(l), [1000, 1, 1, 1], l);
    const bytes = cache.serialize();
    const stored = cache.stats().bytes;
    expect(bytes.length).toBeLessThanOrEqual(stored * 1.05 + 400);
    expect(bytes.length).toBeGreaterThanOrEqual(stored);
    expect(bytes.length).toBeLessThan(cache.byteLength);
  });

  describe('refuses malformed input with a clear error, touching nothing', () => {
    const o: CacheOptions = { layers: 1, kvHeads: 2, headDim: 16, bits: 2, groupSize: 8, residual: 16, sinkTokens: 2 };
    let good: Uint8Array;
    let kivi: Kivi;
    beforeAll(() => {
      kivi = kivis.get('simd')!;
      const c = kivi.createCache(o);
      feed(c, o, rng(3), [40, 1, 1]);
      good = c.serialize();
      c.dispose();
    });

    const cases: [string, () => unknown, ErrorConstructor, RegExp][] = [
      ['not bytes', () => 'KIVI', TypeError, /Uint8Array or an ArrayBuffer, got "KIVI"/],
      ['wrong magic', () => { const b = good.slice(); b[0] = 0x4a; return b; }, TypeError, /expected the magic "KIVI", got "JIVI"/],
      ['empty', () => new Uint8Array(0), RangeError, /truncated/],
      ['unknown version', () => { const b = good.slice(); b[4] = 9; return b; }, RangeError, /version 9; this build reads version 1/],
      ['header only', () => good.slice(0, 20), RangeError, /truncated: expected at least 48 bytes, got 20/],
      ['truncated payload', () => good.slice(0, good.length - 100), RangeError, /truncated/],
      ['one byte short', () => good.slice(0, good.length - 1), RangeError, /truncated/],
      ['trailing bytes', () => resign(new Uint8Array([...good.slice(0, -4), 1, 2, 3, 0, 0, 0, 0])), RangeError, /3 extra bytes/],
      ['bad checksum', () => { const b = good.slice(); b[b.length - 50]! ^= 1; return b; }, RangeError, /checksum mismatch/],
      ['bits out of range', () => { const b = good.slice(); b[40] = 3; return resign(b); }, RangeError, /bits must be one of 2, 4, 8, 32, got 3/],
      ['headDim not a multiple of 8', () => { const b = good.slice(); b[16] = 12; return resign(b); }, RangeError, /headDim must be a multiple of 8, got 12/],
      ['layers 0', () => { const b = good.slice(); b[8] = 0; return resign(b); }, RangeError, /layers must be an integer from 1/],
      ['layers huge', () => { const b = good.slice(); b[11] = 0x7f; return resign(b); }, RangeError, /layers must be an integer/],
      ['many layers, no payload', () => { const b = good.slice(); b[8] = 0xff; b[9] = 0x0f; return resign(b); }, RangeError, /truncated: the counts of 4095 layers needs 98280 bytes/],
      ['bad enum', () => { const b = good.slice(); b[41] = 5; return resign(b); }, RangeError, /keyWindow code must be 0 \(chunked\) or 1 \(sliding\), got 5/],
      ['sink count inconsistent', () => { const b = good.slice(); b[HEADER_BYTES + 4] = 1; return resign(b); }, RangeError, /sink count must be min\(tokens 42, sinkTokens 2\) = 2, got 1/],
      ['counts do not add up', () => { const b = good.slice(); b[HEADER_BYTES + 12] = b[HEADER_BYTES + 12]! + 1; return resign(b); }, RangeError, /must add up/],
      ['quantized keys not in whole groups', () => { const b = good.slice(); b[HEADER_BYTES + 8] = 4; b[HEADER_BYTES + 12] = 36; return resign(b); }, RangeError, /multiple of the group size 8 \(whole per-channel groups\), got 4/],
      ['huge token count', () => { const b = good.slice(); new DataView(b.buffer).setUint32(HEADER_BYTES, 0xfffffff0, true); return resign(b); }, RangeError, /at most 2\^31-1/],
      ['counts claiming a huge payload', () => {
        const b = good.slice(); const v = new DataView(b.buffer);
        v.setUint32(HEADER_BYTES, 2 ** 31 - 1, true); v.setUint32(HEADER_BYTES + 8, 0, true); v.setUint32(HEADER_BYTES + 12, 2 ** 31 - 3, true);
        v.setUint32(HEADER_BYTES + 16, 0, true); v.setUint32(HEADER_BYTES + 20, 2 ** 31 - 3, true); return resign(b);
      }, RangeError, /truncated: layer 0 keys/],
      ['reserved field', () => { const b = good.slice(); b[6] = 1; return resign(b); }, RangeError, /reserved header field must be 0, got 1/],
    ];
    for (const [name, make, type, message] of cases) {
      it(name, () => {
        const other = kivi.createCache(o);
        feed(other, o, rng(5), [30]);
        const q = query(o, rng(6));
        const before = other.attend(0, q);
        const memory = kivi.memoryBytes;
        let error: unknown;
        try {
          kivi.restoreCache(make() as Uint8Array);
        } catch (e) {
          error = e;
        }
        expect(error).toBeInstanceOf(type);
        expect((error as Error).message).toMatch(/^restoreCache: /);
        expect((error as Error).message).toMatch(message);
        expectEqualArrays(other.attend(0, q), before, 'the other cache');
        expect(kivi.memoryBytes).toBe(memory);
        other.dispose();
      });
    }
  });

  it('running out of memory while restoring frees what it took and leaves other caches alone', async () => {
    const { Kivi } = await import('../src/index');
    const small = await Kivi.load({ variant: 'simd', maxMemoryBytes: 4 * 2 ** 20 });
    const o: CacheOptions = { layers: 1, kvHeads: 2, headDim: 16, bits: 2, groupSize: 8, residual: 16 };
    const other = small.createCache(o);
    feed(other, o, rng(2), [20]);
    const q = query(o, rng(3));
    const before = other.attend(0, q);
    const big = kivis.get('simd')!.createCache({ ...o, bits: 32 });
    feed(big, o, rng(4), [4000, 4000, 4000, 4000, 4000]);
    const bytes = big.serialize();
    big.dispose();
    const tracked = trackAllocations(runtimeOf(small));
    expect(() => small.restoreCache(bytes)).toThrow(RangeError);
    expect([...tracked.stop()], 'blocks the failed restore allocated and did not free').toEqual([]);
    expectEqualArrays(other.attend(0, q), before, 'the other cache');
    // Everything the failed restore took was freed: a cache of the same size as the other fits again.
    const again = small.createCache(o);
    feed(again, o, rng(2), [20]);
    expectEqualArrays(again.attend(0, q), before, 'a new cache');
  });

  it('serialize() after dispose() throws', () => {
    const c = kivis.get('simd')!.createCache({ layers: 1, kvHeads: 1, headDim: 8 });
    c.dispose();
    expect(() => c.serialize()).toThrow(TypeError);
  });
});

describe('restore allocates in proportion to the stored tokens, not to the options', () => {
  it('a few hundred bytes with huge options reserve no memory', async () => {
    const kivi = await Kivi.load({ variant: 'simd' });
    // Options whose up-front windows would be tens of gigabytes: 64 layers × 64 heads × 512 channels,
    // 100000 sinks, R = 65536.
    const options = { layers: 64, kvHeads: 64, headDim: 512, bits: 2 as const, groupSize: 32, residual: 65536, sinkTokens: 100000 };
    const empty = kivi.createCache(options);
    expect(empty.byteLength).toBe(0);
    const bytes = empty.serialize();
    expect(bytes.length).toBeLessThan(4096);
    const before = kivi.memoryBytes;
    const restored = kivi.restoreCache(bytes);
    expect(restored.byteLength).toBe(0);
    expect(kivi.memoryBytes).toBe(before);
    // One token: what is reserved is that token's rows (a sink row per head and stream), nothing more.
    const one = kivi.createCache({ ...options, layers: 1 });
    const rng = new Rng(5);
    one.append(0, syntheticKv(rng, 1, 64, 512, 'keys'), syntheticKv(rng, 1, 64, 512, 'values'));
    const oneBytes = one.serialize();
    const again = kivi.restoreCache(oneBytes);
    expect(again.byteLength).toBe(2 * 64 * 512 * 4);
    expect(again.byteLength).toBeLessThanOrEqual(oneBytes.length);
    for (const c of [empty, restored, one, again]) c.dispose();
  });
});

// What decoders do with a cache: roll back (truncate), fork with a shared prefix, half-precision
// inputs — every build against the float64 reference (which implements the same rules, SPEC.md), on
// data with outlier key channels.
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { setStageSliceBytesForTests } from '../src/cache';
import { Kivi, type CacheOptions, type KiviCache, type VariantName } from '../src/index';
import { f16BitsToF32, f32ToF16Bits, ReferenceCache, Rng, relativeL2, syntheticKv } from '../src/reference';
import { expectSameGroups, loadAllVariants, referenceOptions, runtimeOf, trackAllocations, VARIANT_NAMES } from './helpers';

let kivis: Map<VariantName, Kivi>;
beforeAll(async () => {
  kivis = await loadAllVariants();
});

function bits(a: Float32Array | Uint16Array): number[] {
  return Array.from(a instanceof Float32Array ? new Uint32Array(a.buffer, a.byteOffset, a.length) : a);
}

/** Everything a user can observe of a cache, as plain data (attention of fixed queries as bits). */
function observe(cache: KiviCache, queries: Float32Array[]): unknown {
  const o = cache.options;
  const layers = [];
  for (let l = 0; l < o.layers; l++) {
    const tokens = cache.tokens(l);
    // sharedBytes says whether blocks are shared with forks: not a property of the tokens held.
    const { sharedBytes: _shared, ...stats } = cache.stats(l);
    layers.push({
      stats,
      inspect: cache.inspect(l),
      attend: queries.filter((q) => q.length / (o.queryHeads * o.headDim) <= tokens).map((q) => bits(cache.attend(l, q))),
    });
  }
  return { layers, serialized: Array.from(cache.serialize()) };
}

class Feed {
  readonly rng: Rng;
  constructor(readonly o: CacheOptions, seed: number) {
    this.rng = new Rng(seed);
  }
  tokens(n: number): [Float32Array, Float32Array] {
    return [syntheticKv(this.rng, n, this.o.kvHeads, this.o.headDim, 'keys'), syntheticKv(this.rng, n, this.o.kvHeads, this.o.headDim, 'values')];
  }
  queries(n: number): Float32Array {
    return syntheticKv(this.rng, n, this.o.queryHeads ?? this.o.kvHeads, this.o.headDim, 'queries');
  }
}

/** Appends `chunks` (token counts) to every layer of all the caches and references given. */
function feed(feedData: Feed, chunks: number[], caches: KiviCache[], refs: ReferenceCache[]): void {
  for (const n of chunks) {
    for (let l = 0; l < feedData.o.layers; l++) {
      const [k, v] = feedData.tokens(n);
      for (const c of caches) c.append(l, k, v);
      for (const r of refs) r.append(l, k, v);
    }
  }
}

function expectMatchesReference(cache: KiviCache, ref: ReferenceCache, queries: Float32Array[], what: string): void {
  const o = cache.options;
  for (let l = 0; l < o.layers; l++) {
    const { bytes: _b, sharedBytes: _s, bitsPerElement: _e, ...counts } = cache.stats(l);
    expect(counts, `${what}: stats of layer ${l}`).toEqual(ref.stats(l));
    for (const q of queries) {
      if (q.length / ((o.queryHeads ?? o.kvHeads) * o.headDim) > cache.tokens(l)) continue;
      expect(relativeL2(cache.attend(l, q), ref.attend(l, q)), `${what}: layer ${l} attention`).toBeLessThan(2e-3);
    }
    if ((o.bits ?? 2) !== 32) {
      const stored = cache.inspect(l);
      expectSameGroups(stored.keys, ref.keyGroups(l), `${what}: layer ${l} keys`);
      expectSameGroups(stored.values, ref.valueGroups(l), `${what}: layer ${l} values`);
    }
  }
}

const SHAPES: [string, CacheOptions][] = [
  ['KIVI-2 chunked, GQA', { layers: 2, kvHeads: 2, queryHeads: 4, headDim: 32, bits: 2, groupSize: 16, residual: 32 }],
  ['KIVI-4 sliding, sinks', { layers: 1, kvHeads: 2, headDim: 64, bits: 4, groupSize: 32, residual: 64, keyWindow: 'sliding', sinkTokens: 3 }],
  ['KIVI-8 ablations', { layers: 1, kvHeads: 1, queryHeads: 2, headDim: 16, bits: 8, groupSize: 8, residual: 16, keyGrouping: 'token', valueGrouping: 'channel' }],
  ['f32 cache', { layers: 1, kvHeads: 2, headDim: 16, bits: 32 }],
];

describe.each(VARIANT_NAMES)('%s build', (variant) => {
  const kivi = () => kivis.get(variant)!;

  describe('speculative decoding: draft k tokens, keep j, continue', () => {
    it.each(SHAPES)('%s: a rejected draft of up to R tokens leaves the cache bit-identical to one that never saw it', (_name, o) => {
      const R = o.residual ?? 128;
      const drafts = [1, 3, Math.max(1, R - 1), Math.max(1, R)];
      for (const oneCall of [true, false]) {
        for (const k of drafts) {
          const f = new Feed(o, 100 + k);
          const cache = kivi().createCache(o);
          const plain = kivi().createCache(o);
          const ref = new ReferenceCache(referenceOptions(o));
          feed(f, [70, 1, 1, 1, 5, 1], [cache, plain], [ref]); // a prompt, then decoding
          const prompt = cache.tokens(0);
          // Draft k tokens (in one call, or one token at a time as a draft model decodes), then verify them.
          for (let l = 0; l < o.layers; l++) {
            const [dk, dv] = f.tokens(k);
            const width = o.kvHeads * o.headDim;
            if (oneCall) cache.append(l, dk, dv);
            else for (let t = 0; t < k; t++) cache.append(l, dk.subarray(t * width, (t + 1) * width), dv.subarray(t * width, (t + 1) * width));
            cache.attend(l, f.queries(Math.min(k, prompt)));
          }
          // Keep j of them: the first j drafted tokens are the accepted ones; here none, then replay j.
          cache.truncate(prompt);
          const queries = [f.queries(1), f.queries(3)];
          expect(observe(cache, queries), `k = ${k}${oneCall ? ' in one call' : ''}: after rejecting the draft`).toEqual(observe(plain, queries));
          expectMatchesReference(cache, ref, queries, `k = ${k}`);
          // Continue both with the same tokens: they stay identical.
          feed(f, [1, 2, 1, 40, 1], [cache, plain], [ref]);
          expect(observe(cache, queries), `k = ${k}: after continuing`).toEqual(observe(plain, queries));
          expectMatchesReference(cache, ref, queries, `k = ${k} continued`);
          cache.dispose();
          plain.dispose();
        }
      }
    });

    it.each(SHAPES)('%s: keeping j of k drafted tokens, also for k beyond R, matches the reference', (_name, o) => {
      const R = o.residual ?? 128;
      for (const [k, j] of [[4, 2], [R, R - 1], [R + 5, 3], [2 * R + 3, R + 1], [3 * R + 7, 0]] as [number, number][]) {
        const f = new Feed(o, 7 * k + j);
        const cache = kivi().createCache(o);
        const ref = new ReferenceCache(referenceOptions(o));
        feed(f, [50, 1, 1], [cache], [ref]);
        const prompt = cache.tokens(0);
        feed(f, k > R ? [k - R, R] : [k], [cache], [ref]);
        cache.truncate(prompt + j);
        ref.truncate(prompt + j);
        const queries = [f.queries(1), f.queries(2)];
        expectMatchesReference(cache, ref, queries, `k = ${k}, j = ${j}`);
        feed(f, [1, 1, 3, 1], [cache], [ref]);
        expectMatchesReference(cache, ref, queries, `k = ${k}, j = ${j}, continued`);
        cache.dispose();
      }
    });

    it.each(SHAPES)('%s: a deep cut into quantized blocks follows SPEC.md (kept codes, partial groups back to f32)', (_name, o) => {
      for (const keep of [0, 1, 2, 5, 17, 33, 64, 90, 150]) {
        const f = new Feed(o, 300 + keep);
        const cache = kivi().createCache(o);
        const ref = new ReferenceCache(referenceOptions(o));
        feed(f, [200, 1, 1, 1, 60, 1, 1], [cache], [ref]);
        cache.truncate(keep);
        ref.truncate(keep);
        const queries = [f.queries(1)];
        expectMatchesReference(cache, ref, queries, `cut to ${keep}`);
        feed(f, [1, 30, 1, 1, 70, 1], [cache], [ref]);
        expectMatchesReference(cache, ref, queries, `cut to ${keep}, continued`);
        const restored = kivi().restoreCache(cache.serialize());
        expect(observe(restored, queries)).toEqual(observe(cache, queries));
        restored.dispose();
        cache.dispose();
      }
    });

    it('truncate of one layer, and out-of-range arguments refused with nothing changed', () => {
      const o = SHAPES[0]![1];
      const f = new Feed(o, 5);
      const cache = kivi().createCache(o);
      const ref = new ReferenceCache(referenceOptions(o));
      feed(f, [40, 1, 1], [cache], [ref]);
      const queries = [f.queries(1)];
      const before = observe(cache, queries);
      for (const [args, type, pattern] of [
        [[43], RangeError, /tokens must be an integer from 0 to 42 \(the tokens every layer holds\), got 43/],
        [[-1], RangeError, /got -1/],
        [[1.5], RangeError, /got 1.5/],
        [['3'], TypeError, /tokens must be a number, got "3"/],
        [[3, 2], RangeError, /layer must be an integer from 0 to 1, got 2/],
        [[Number.NaN], RangeError, /got NaN/],
      ] as [unknown[], ErrorConstructor, RegExp][]) {
        expect(() => (cache.truncate as (...a: unknown[]) => void)(...args)).toThrow(type);
        expect(() => (cache.truncate as (...a: unknown[]) => void)(...args)).toThrow(pattern);
        expect(observe(cache, queries)).toEqual(before);
      }
      cache.truncate(20, 1);
      ref.truncate(20, 1);
      expect(cache.tokens(0)).toBe(42);
      expect(cache.tokens(1)).toBe(20);
      expectMatchesReference(cache, ref, queries, 'layer 1 truncated');
      expect(() => cache.truncate(21)).toThrow(/from 0 to 20 \(the tokens every layer holds\)/);
      cache.dispose();
      expect(() => cache.truncate(0)).toThrow(/disposed/);
    });
  });

  describe('fork', () => {
    it.each(SHAPES)('%s: forks decode apart like independent caches fed the same tokens, sharing the prefix', (_name, o) => {
      const f = new Feed(o, 42);
      const original = kivi().createCache(o);
      const ref = new ReferenceCache(referenceOptions(o));
      feed(f, [150, 1, 1, 1], [original], [ref]);
      const before = original.stats();
      const forks = [original.fork(), original.fork(), original.fork()];
      if ((o.bits ?? 2) !== 32) {
        expect(original.stats().sharedBytes).toBeGreaterThan(0);
        for (const fork of forks) expect(fork.stats().sharedBytes).toBe(original.stats().sharedBytes);
        expect(original.sharedByteLength).toBeGreaterThan(0);
      }
      const refs = forks.map(() => ref.fork());
      // Independent caches fed exactly the tokens each fork sees.
      const twins = forks.map(() => kivi().createCache(o));
      const replay = new Feed(o, 42);
      feed(replay, [150, 1, 1, 1], twins, []);
      const queries = [f.queries(1), f.queries(2)];
      forks.forEach((fork, i) => {
        const own = new Feed(o, 1000 + i);
        const chunks = [1, 1, 2, 30 + 11 * i, 1, 1, 64, 1];
        feed(own, chunks, [fork], [refs[i]!]);
        feed(new Feed(o, 1000 + i), chunks, [twins[i]!], []);
        expect(observe(fork, queries), `fork ${i} vs an independent cache`).toEqual(observe(twins[i]!, queries));
        expectMatchesReference(fork, refs[i]!, queries, `fork ${i}`);
      });
      // The original only made the flush its next append would have (SPEC.md, fork), and its forks'
      // appends never reached it; truncating one fork changes no other.
      expect(original.stats().tokens).toBe(before.tokens);
      expectMatchesReference(original, ref, queries, 'original after its forks decoded');
      const second = observe(forks[1]!, queries);
      forks[0]!.truncate(20);
      refs[0]!.truncate(20);
      expectMatchesReference(forks[0]!, refs[0]!, queries, 'fork 0 truncated');
      expect(observe(forks[1]!, queries)).toEqual(second);
      // Disposing the original (and a fork) leaves the others intact; a fork serializes on its own.
      original.dispose();
      forks[2]!.dispose();
      expect(observe(forks[1]!, queries)).toEqual(second);
      const restored = kivi().restoreCache(forks[1]!.serialize());
      expect(observe(restored, queries)).toEqual(second);
      expect(restored.stats().sharedBytes).toBe(0);
      restored.dispose();
      forks[0]!.dispose();
      forks[1]!.dispose();
      for (const t of twins) t.dispose();
    });

    it('forks hold the shared prefix once: sharedByteLength says how much of byteLength is shared', () => {
      const o: CacheOptions = { layers: 1, kvHeads: 2, headDim: 64, bits: 2 };
      const f = new Feed(o, 9);
      const base = kivi().createCache(o);
      feed(f, [8000, 1], [base], []);
      const alone = base.byteLength;
      expect(base.sharedByteLength).toBe(0);
      const forks = Array.from({ length: 4 }, () => base.fork());
      for (const fork of forks) feed(f, [1, 1, 1], [fork], []);
      // Every quantized block of the base is shared now.
      const s = base.stats();
      const f32Bytes = (s.residualKeys + s.residualValues) * 64 * 4 * 2;
      expect(base.sharedByteLength).toBeGreaterThanOrEqual(s.bytes - f32Bytes);
      expect(s.sharedBytes).toBe(s.bytes - f32Bytes);
      // Five caches in about the memory of two: the prefix is held once.
      const total = base.byteLength + forks.reduce((sum, fork) => sum + fork.byteLength - fork.sharedByteLength, 0);
      expect(total).toBeLessThan(0.5 * 5 * alone);
      forks.forEach((fork) => fork.dispose());
      expect(base.sharedByteLength).toBe(0);
      expect(base.stats().sharedBytes).toBe(0);
      base.dispose();
    });
  });

  describe('half-precision inputs', () => {
    it.each(SHAPES)('%s: f16 keys, values and queries give the same bits as f32 holding the same values; f16 output is the f32 output rounded', (_name, o) => {
      const f = new Feed(o, 77);
      const halves = (x: Float32Array) => Uint16Array.from(x, (v) => f32ToF16Bits(Math.max(-65504, Math.min(65504, v))));
      const widen = (h: Uint16Array) => Float32Array.from(h, (b) => f16BitsToF32(b));
      const a = kivi().createCache(o);
      const b = kivi().createCache(o);
      const ref = new ReferenceCache(referenceOptions(o));
      for (const n of [90, 1, 1, 40, 1]) {
        for (let l = 0; l < o.layers; l++) {
          const [k, v] = f.tokens(n);
          const hk = halves(k), hv = halves(v);
          a.append(l, hk, hv);
          b.append(l, widen(hk), widen(hv));
          ref.append(l, widen(hk), widen(hv));
          const hq = halves(f.queries(Math.min(n, 3)));
          const got = a.attend(l, hq);
          expect(bits(got)).toEqual(bits(b.attend(l, widen(hq))));
          const out16 = new Uint16Array(got.length);
          expect(a.attend(l, hq, out16)).toBe(out16);
          expect(Array.from(out16)).toEqual(Array.from(got, (x) => f32ToF16Bits(x)));
          expect(relativeL2(got, ref.attend(l, widen(hq)))).toBeLessThan(2e-3);
        }
      }
      expect(a.serialize()).toEqual(b.serialize());
      a.dispose();
      b.dispose();
    });

    it('refuses wrong types, lengths and non-finite halves, changing nothing', () => {
      const o = SHAPES[0]![1];
      const f = new Feed(o, 3);
      const cache = kivi().createCache(o);
      feed(f, [20], [cache], []);
      const queries = [f.queries(1)];
      const before = observe(cache, queries);
      const width = o.kvHeads * o.headDim;
      const good = new Uint16Array(width).fill(0x3c00);
      const nan = good.slice();
      nan[5] = 0x7e00;
      const inf = good.slice();
      inf[width - 1] = 0xfc00;
      expect(() => cache.append(0, new Int16Array(width) as never, good)).toThrow(/keys must be a Float32Array, .*or a Uint16Array of IEEE half bits, got a Int16Array of length 64/);
      expect(() => cache.append(0, good, new Float32Array(width))).toThrow(/keys and values must have the same element type/);
      expect(() => cache.append(0, good.subarray(1), good.subarray(1))).toThrow(/whole number \(>= 1\) of tokens/);
      expect(() => cache.append(0, nan, good)).toThrow(/keys must hold finite numbers, got half bits 0x7e00 at index 5/);
      expect(() => cache.append(0, good, inf)).toThrow(/values must hold finite numbers, got half bits 0xfc00 at index 63/);
      const q16 = new Uint16Array(4 * 32).fill(0x3c00);
      q16[7] = 0x7c00;
      expect(() => cache.attend(0, q16)).toThrow(/queries must hold finite numbers, got half bits 0x7c00 at index 7/);
      expect(() => cache.attend(0, q16.subarray(1))).toThrow(RangeError);
      expect(() => cache.attend(0, new Float32Array(4 * 32), new Int32Array(4 * 32) as never)).toThrow(/out must be a Float32Array/);
      expect(() => cache.attend(0, new Float32Array(4 * 32), new Uint16Array(4 * 32 + 1))).toThrow(/out must have length 128/);
      expect(observe(cache, queries)).toEqual(before);
      cache.dispose();
    });
  });
});

describe('a long append is staged in slices (a prompt of more than one staging slice)', () => {
  const o: CacheOptions = { layers: 1, kvHeads: 2, headDim: 16, queryHeads: 4, bits: 2, groupSize: 8, residual: 16, sinkTokens: 5 };
  const row = 2 * 16;
  afterEach(() => setStageSliceBytesForTests(undefined));

  for (const name of VARIANT_NAMES) {
    it(`${name}: the same cache whatever the slices (3, 7, 64 tokens; f32 and f16), after a short append too`, () => {
      const kivi = kivis.get(name)!;
      for (const half of [false, true]) {
        const feed = new Feed(o, 71);
        const [k0, v0] = feed.tokens(2);
        const [k1, v1] = feed.tokens(150);
        const input = (x: Float32Array) => (half ? Uint16Array.from(x, f32ToF16Bits) : x);
        const queries = [syntheticKv(new Rng(72), 1, 4, 16, 'queries'), syntheticKv(new Rng(73), 3, 4, 16, 'queries')];
        const make = (sliceTokens: number | undefined) => {
          setStageSliceBytesForTests(sliceTokens === undefined ? undefined : sliceTokens * row * (half ? 2 : 4));
          const cache = kivi.createCache(o);
          cache.append(0, input(k0), input(v0));
          cache.append(0, input(k1), input(v1));
          cache.append(0, input(k0), input(v0)); // quantizes what the long append left beyond the window
          setStageSliceBytesForTests(undefined);
          const seen = observe(cache, queries);
          cache.dispose();
          return seen;
        };
        const whole = make(undefined);
        for (const slice of [3, 7, 64]) expect(make(slice), `${half ? 'f16' : 'f32'}, slices of ${slice} tokens`).toEqual(whole);
      }
    });
  }

  it('a bad number in a later slice: the error names its index in the whole input, and nothing changed', () => {
    const kivi = kivis.get('simd')!;
    const cache = kivi.createCache(o);
    const feed = new Feed(o, 74);
    cache.append(0, ...feed.tokens(40));
    const before = cache.serialize();
    const [keys, values] = feed.tokens(100);
    values[97 * row + 5] = Number.NaN;
    setStageSliceBytesForTests(10 * row * 4);
    const tracker = trackAllocations(runtimeOf(kivi));
    expect(() => cache.append(0, keys, values)).toThrow(new RangeError(`KiviCache.append: values must hold finite numbers, got NaN at index ${97 * row + 5}`));
    keys[33 * row] = 70000;
    expect(() => cache.append(0, keys, values)).toThrow(new RangeError(`KiviCache.append: keys must hold |x| <= 65504 (a half must hold it), got 70000 at index ${33 * row}`));
    expect(tracker.stop().size).toBe(0);
    expect(cache.serialize()).toEqual(before);
    cache.dispose();
  });
});

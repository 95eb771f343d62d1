// Lifecycle of caches in one Kivi instance: dispose, reuse of freed memory, several caches sharing
// one wasm memory (and its growth), the capacity hint, and the attend/stats conveniences.
import { beforeAll, describe, expect, it } from 'vitest';
import { Kivi, type CacheOptions, type CacheStats, type KiviCache, type VariantName } from '../src/index';
import { ReferenceCache, Rng, relativeL2, syntheticKv } from '../src/reference';
import { expectSameGroups, loadAllVariants, referenceOptions, VARIANT_NAMES } from './helpers';

let kivis: Map<VariantName, Kivi>;
beforeAll(async () => {
  kivis = await loadAllVariants();
});

/** A cache, its reference, and seeded data for both. */
class Pair {
  readonly cache: KiviCache;
  readonly ref: ReferenceCache;
  readonly rng: Rng;
  readonly qHeads: number;

  constructor(kivi: Kivi, readonly options: CacheOptions, seed: number) {
    this.cache = kivi.createCache(options);
    this.ref = new ReferenceCache(referenceOptions(options));
    this.rng = new Rng(seed);
    this.qHeads = options.queryHeads ?? options.kvHeads;
  }

  append(layer: number, n: number): void {
    const { kvHeads, headDim } = this.options;
    const k = syntheticKv(this.rng, n, kvHeads, headDim, 'keys');
    const v = syntheticKv(this.rng, n, kvHeads, headDim, 'values');
    this.cache.append(layer, k, v);
    this.ref.append(layer, k, v);
  }

  queries(n: number): Float32Array {
    return syntheticKv(this.rng, n, this.qHeads, this.options.headDim, 'queries');
  }

  /** Attends with n queries and checks the result against the reference. */
  check(layer: number, n: number, what: string, scale?: number): Float32Array {
    const q = this.queries(n);
    const got = scale === undefined ? this.cache.attend(layer, q) : this.cache.attend(layer, q, undefined, { scale });
    const want = this.ref.attend(layer, q, scale);
    expect(relativeL2(got, want), `${what}: layer ${layer}, ${n} queries, relative L2`).toBeLessThan(2e-3);
    return got;
  }
}

const OPTIONS: CacheOptions = { layers: 2, kvHeads: 2, queryHeads: 4, headDim: 32, bits: 2, groupSize: 16, residual: 32 };

function sumStats(list: CacheStats[]): Omit<CacheStats, 'bitsPerElement'> {
  const total = { tokens: 0, sinkTokens: 0, quantizedKeys: 0, residualKeys: 0, quantizedValues: 0, residualValues: 0, bytes: 0, sharedBytes: 0 };
  for (const s of list) for (const key of Object.keys(total) as (keyof typeof total)[]) total[key] += s[key];
  return total;
}

describe.each(VARIANT_NAMES)('%s build', (variant) => {
  const kivi = () => kivis.get(variant)!;

  describe('dispose', () => {
    it('later calls throw a TypeError mentioning "disposed"; a second dispose is a no-op', () => {
      const p = new Pair(kivi(), { ...OPTIONS, sinkTokens: 2 }, 1);
      p.append(0, 40);
      for (let i = 0; i < 3; i++) p.append(0, 1);
      p.append(1, 5);
      expect(p.cache.isDisposed).toBe(false);
      expect(p.cache.byteLength).toBeGreaterThan(0);
      const k = syntheticKv(p.rng, 1, 2, 32, 'keys');
      const v = syntheticKv(p.rng, 1, 2, 32, 'values');
      const q = p.queries(1);

      p.cache.dispose();
      expect(p.cache.isDisposed).toBe(true);
      expect(p.cache.byteLength).toBe(0);
      const calls: [string, () => unknown][] = [
        ['append', () => p.cache.append(0, k, v)],
        ['append with bad input', () => p.cache.append(7, null as unknown as Float32Array, v)],
        ['attend', () => p.cache.attend(0, q)],
        ['attend with out', () => p.cache.attend(0, q, new Float32Array(q.length))],
        ['tokens', () => p.cache.tokens(0)],
        ['stats()', () => p.cache.stats()],
        ['stats(1)', () => p.cache.stats(1)],
        ['inspect', () => p.cache.inspect(0)],
      ];
      for (const [what, call] of calls) {
        let error: unknown;
        try {
          call();
        } catch (e) {
          error = e;
        }
        expect(error, `${what} after dispose`).toBeInstanceOf(TypeError);
        expect(Object.getPrototypeOf(error)).toBe(TypeError.prototype);
        expect((error as Error).message, what).toMatch(/disposed/);
      }
      expect(() => p.cache.dispose()).not.toThrow();
      expect(p.cache.isDisposed).toBe(true);
      expect(p.cache.byteLength).toBe(0);
      expect(() => p.cache.tokens(0)).toThrow(/disposed/);
    });

    it('a cache that was never filled disposes; another cache of the instance is unaffected', () => {
      const a = new Pair(kivi(), OPTIONS, 2);
      const b = new Pair(kivi(), { ...OPTIONS, bits: 4 }, 3);
      const c = kivi().createCache(OPTIONS);
      c.dispose();
      expect(c.byteLength).toBe(0);
      a.append(0, 50);
      b.append(0, 50);
      a.cache.dispose();
      // b's memory must not have been handed out again by a's dispose: allocate over it with a new cache.
      const d = new Pair(kivi(), OPTIONS, 4);
      d.append(0, 70);
      b.append(0, 1);
      b.check(0, 1, 'b after a disposed and d filled');
      b.check(0, 3, 'b after a disposed and d filled');
      d.check(0, 2, 'd');
      b.cache.dispose();
      d.cache.dispose();
    });
  });

  it('memory is reused: identical rounds of create, fill, dispose stop growing memory after the first', async () => {
    const fresh = await Kivi.load({ variant });
    const initial = fresh.memoryBytes;
    const round = (seed: number) => {
      const a = new Pair(fresh, { ...OPTIONS, headDim: 64 }, seed);
      const b = new Pair(fresh, { layers: 1, kvHeads: 2, headDim: 64, bits: 32 }, seed + 1);
      const c = new Pair(fresh, { ...OPTIONS, bits: 4, sinkTokens: 4, keyWindow: 'sliding', maxTokens: 100 }, seed + 2);
      for (const p of [a, b, c]) {
        for (let l = 0; l < p.options.layers; l++) {
          p.append(l, 150);
          for (let i = 0; i < 40; i++) p.append(l, 1);
          p.append(l, 9);
          p.cache.attend(l, p.queries(4));
        }
      }
      b.append(0, 300);
      a.check(0, 1, `round ${seed}`);
      b.check(0, 1, `round ${seed}`);
      c.check(1, 2, `round ${seed}`);
      // Dispose in an order other than creation.
      b.cache.dispose();
      a.cache.dispose();
      c.cache.dispose();
      return fresh.memoryBytes;
    };
    const sizes = [round(100)];
    expect(sizes[0], 'the first round must grow memory for this test to mean anything').toBeGreaterThan(initial);
    for (let r = 1; r < 5; r++) sizes.push(round(100 + 10 * r));
    expect(sizes, 'memoryBytes after each round').toEqual(sizes.map(() => sizes[0]));
  });

  it('two caches in one instance, interleaved, with memory growth in between, each match their reference', () => {
    const a = new Pair(kivi(), { layers: 2, kvHeads: 2, queryHeads: 4, headDim: 32, bits: 2, groupSize: 16, residual: 32, sinkTokens: 1 }, 11);
    const b = new Pair(kivi(), { layers: 1, kvHeads: 4, headDim: 64, bits: 32 }, 12);
    a.append(0, 30);
    b.append(0, 20);
    a.append(1, 45);
    for (let step = 0; step < 20; step++) {
      a.append(0, 1);
      b.append(0, 1);
      if (step % 5 === 0) a.check(0, 1, `step ${step}`);
      if (step % 7 === 0) b.check(0, 1, `step ${step}`);
      a.append(1, step % 3 === 0 ? 3 : 1);
    }
    const groupsBefore = a.cache.inspect(0);
    const memoryBefore = kivi().memoryBytes;
    // A big append on b grows the shared memory (every view on the old buffer is detached).
    const big = Math.ceil((memoryBefore * 1.5) / (4 * 64 * 4 * 2)) + 16;
    b.append(0, big);
    expect(kivi().memoryBytes, 'the big append grew memory').toBeGreaterThan(memoryBefore);
    // a is intact after the growth: same stored groups, same attention as the reference.
    expectSameGroups(a.cache.inspect(0).keys, groupsBefore.keys!, 'a keys after b grew memory');
    expectSameGroups(a.cache.inspect(0).values, groupsBefore.values!, 'a values after b grew memory');
    a.check(0, 1, 'a after b grew memory');
    a.check(1, 4, 'a after b grew memory');
    for (let step = 0; step < 40; step++) {
      a.append(0, 1);
      if (step === 17) b.append(0, big); // and once more, in the middle of a's decoding
      a.append(1, 1);
    }
    b.append(0, 1);
    a.check(0, 1, 'a after more decoding');
    a.check(0, 5, 'a after more decoding');
    a.check(1, 1, 'a after more decoding');
    b.check(0, 1, 'b after the big appends');
    b.check(0, 3, 'b after the big appends');
    expectSameGroups(a.cache.inspect(0).keys, a.ref.keyGroups(0), 'a layer 0 keys vs reference');
    expectSameGroups(a.cache.inspect(1).values, a.ref.valueGroups(1), 'a layer 1 values vs reference');
    expect(a.cache.stats(0).tokens).toBe(a.ref.stats(0).tokens);
    expect(b.cache.stats(0).tokens).toBe(b.ref.stats(0).tokens);
    a.cache.dispose();
    b.cache.dispose();
  });

  describe('maxTokens hint', () => {
    const cases: [string, CacheOptions][] = [
      ['KIVI-2', { ...OPTIONS, maxTokens: 200 }],
      ['KIVI-4, sinks 3, sliding keys', { ...OPTIONS, bits: 4, sinkTokens: 3, keyWindow: 'sliding', maxTokens: 150 }],
      ['keys per token, values per channel', { ...OPTIONS, bits: 8, keyGrouping: 'token', valueGrouping: 'channel', maxTokens: 120 }],
      ['bits 32', { ...OPTIONS, bits: 32, maxTokens: 160 }],
      ['residual 0', { ...OPTIONS, residual: 0, maxTokens: 130 }],
    ];
    it.each(cases)('%s: no reallocation up to maxTokens, correct growth past it', (_, options) => {
      const T = options.maxTokens!;
      const p = new Pair(kivi(), options, 21);
      const reserved = p.cache.byteLength;
      expect(reserved).toBeGreaterThan(0);
      // A prompt that fits the residual window (R + max(G, 16) tokens), then decoding one token and
      // five at a time, up to T per layer.
      const schedule = [Math.min(24, (options.residual ?? 128) + Math.max(options.groupSize ?? 32, 16))];
      while (schedule.reduce((s, n) => s + n, 0) < T) {
        const left = T - schedule.reduce((s, n) => s + n, 0);
        schedule.push(Math.min(left, schedule.length % 6 === 0 ? 5 : 1));
      }
      for (const n of schedule) {
        for (let l = 0; l < options.layers; l++) p.append(l, n);
        expect(p.cache.byteLength, `byteLength at ${p.cache.tokens(0)} of ${T} tokens`).toBe(reserved);
      }
      expect(p.cache.tokens(0)).toBe(T);
      p.check(0, 1, `at ${T} tokens`);
      p.check(1, 3, `at ${T} tokens`);
      // Past the hint the cache grows and stays correct.
      for (let i = 0; i < 60; i++) p.append(0, i % 10 === 0 ? 7 : 1);
      p.append(1, 100);
      expect(p.cache.byteLength).toBeGreaterThan(reserved);
      p.check(0, 1, 'past maxTokens');
      p.check(0, 4, 'past maxTokens');
      p.check(1, 2, 'past maxTokens');
      p.cache.dispose();
    });
  });

  it("a long prompt's f32 room is given back once decoding has quantized it (allocation stays near the stored bytes)", () => {
    // SPEC: full-precision memory is bounded by R + n tokens per head; a 400-token prompt needs 400
    // f32 tokens while it is the newest append, but not once decoding has quantized it.
    const options: CacheOptions = { ...OPTIONS, layers: 1 };
    const p = new Pair(kivi(), options, 61);
    p.append(0, 400);
    for (let i = 0; i < 40; i++) p.append(0, 1);
    p.check(0, 1, 'after the prompt and decoding');
    const s = p.cache.stats();
    expect(s.residualKeys + s.residualValues).toBeLessThanOrEqual(2 * (32 + 1));
    const tokenBytes = 2 * 32 * 4;
    const window = 32 + 16 + 16; // R + max(G, 16) + a margin, per stream
    const bound = 1.5 * s.bytes + 2 * window * tokenBytes;
    expect(p.cache.byteLength, `byteLength (stored: ${s.bytes} bytes)`).toBeLessThanOrEqual(bound);
    p.cache.dispose();
  });

  it('attend `out`: the same object is returned, equal to the result without `out`, whatever it held', () => {
    const p = new Pair(kivi(), { ...OPTIONS, sinkTokens: 1 }, 31);
    p.append(0, 50);
    for (let i = 0; i < 5; i++) p.append(0, 1);
    for (const n of [1, 3]) {
      const q = p.queries(n);
      const plain = p.cache.attend(0, q);
      const out = new Float32Array(plain.length).fill(NaN);
      const returned = p.cache.attend(0, q, out);
      expect(returned).toBe(out);
      expect(Array.from(out)).toEqual(Array.from(plain));
      // A subarray view works too and writes only its own range.
      const backing = new Float32Array(plain.length + 8).fill(5);
      const view = backing.subarray(4, 4 + plain.length);
      expect(p.cache.attend(0, q, view)).toBe(view);
      expect(Array.from(view)).toEqual(Array.from(plain));
      expect([...backing.subarray(0, 4), ...backing.subarray(4 + plain.length)]).toEqual(new Array(8).fill(5));
      // With a scale too.
      const scaled = p.cache.attend(0, q, undefined, { scale: 0.3 });
      const out2 = new Float32Array(plain.length);
      expect(p.cache.attend(0, q, out2, { scale: 0.3 })).toBe(out2);
      expect(Array.from(out2)).toEqual(Array.from(scaled));
    }
    p.cache.dispose();
  });

  it('attend `scale`: matches the reference attention with that scale', () => {
    const p = new Pair(kivi(), { ...OPTIONS, sinkTokens: 2 }, 41);
    p.append(0, 45);
    for (let i = 0; i < 6; i++) p.append(0, 1);
    p.append(1, 20);
    const q = p.queries(2);
    const plain = p.cache.attend(0, q);
    expect(Array.from(p.cache.attend(0, q, undefined, {}))).toEqual(Array.from(plain));
    expect(Array.from(p.cache.attend(0, q, undefined, { scale: 1 / Math.sqrt(32) }))).toEqual(Array.from(plain));
    for (const scale of [0.02, 0.5, 1, 3]) {
      const got = p.cache.attend(0, q, undefined, { scale });
      expect(relativeL2(got, p.ref.attend(0, q, scale)), `scale ${scale}: relative L2`).toBeLessThan(2e-3);
      expect(relativeL2(got, plain), `scale ${scale} changes the result`).toBeGreaterThan(1e-3);
      p.check(0, 1, `scale ${scale}`, scale);
      p.check(0, 4, `scale ${scale}`, scale);
      p.check(1, 2, `scale ${scale}`, scale);
    }
    p.cache.dispose();
  });

  it('stats(): per layer as the reference; without a layer the sum; bitsPerElement = bytes·8 / numbers', () => {
    const options: CacheOptions = { layers: 3, kvHeads: 2, queryHeads: 4, headDim: 32, bits: 2, groupSize: 16, residual: 32, sinkTokens: 2 };
    const p = new Pair(kivi(), options, 51);
    const empty = p.cache.stats();
    expect(empty).toEqual({ tokens: 0, sinkTokens: 0, quantizedKeys: 0, residualKeys: 0, quantizedValues: 0, residualValues: 0, bytes: 0, sharedBytes: 0, bitsPerElement: 0 });
    const check = (what: string) => {
      const per = [0, 1, 2].map((l) => p.cache.stats(l));
      per.forEach((s, l) => {
        const r = p.ref.stats(l);
        expect({ ...s, bytes: 0, sharedBytes: 0, bitsPerElement: 0 }, `${what}: layer ${l} counts`).toEqual({ ...r, bytes: 0, sharedBytes: 0, bitsPerElement: 0 });
        expect(s.bitsPerElement, `${what}: layer ${l} bitsPerElement`).toBeCloseTo(s.tokens === 0 ? 0 : (s.bytes * 8) / (s.tokens * 2 * 2 * 32), 10);
      });
      const total = p.cache.stats();
      const { bitsPerElement, ...rest } = total;
      expect(rest, `${what}: stats() is the sum of stats(l)`).toEqual(sumStats(per));
      expect(bitsPerElement, `${what}: total bitsPerElement`).toBeCloseTo((total.bytes * 8) / (total.tokens * 2 * 2 * 32), 10);
      expect(total.bytes, `${what}: stored bytes fit in the allocation`).toBeLessThanOrEqual(p.cache.byteLength);
    };
    p.append(0, 70); // layer 2 stays empty for a while
    check('layer 0 only');
    for (let i = 0; i < 40; i++) p.append(0, 1);
    p.append(1, 10);
    for (let i = 0; i < 5; i++) p.append(1, 1);
    check('layers 0 and 1');
    p.append(2, 1);
    check('all layers');
    // Deep in decoding the quantized part dominates: close to 2 + 32/16 = 4 bits plus the f32 residual.
    const s0 = p.cache.stats(0);
    const f32Tokens = s0.sinkTokens * 2 + s0.residualKeys + s0.residualValues;
    const quantizedNumbers = (s0.quantizedKeys + s0.quantizedValues) * 2 * 32;
    const quantizedBits = s0.bytes * 8 - f32Tokens * 2 * 32 * 32;
    // Keys: b + 32/G per number; values per token: b + 32/min(G, D) = the same here.
    expect(quantizedBits / quantizedNumbers).toBeCloseTo(2 + 32 / 16, 10);
    p.cache.dispose();
  });
});

// Property-based tests (fast-check): random shapes, options and chunkings against the float64
// reference, and random operation sequences against a model (the reference plus a disposed flag).
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { Kivi, type CacheOptions, type KiviCache } from '../src/index';
import { ReferenceCache, Rng, relativeL2, syntheticKv } from '../src/reference';
import { expectSameGroups, referenceOptions } from './helpers';

let kivi: Kivi;
beforeAll(async () => {
  kivi = await Kivi.load();
});

const SEED = Number(process.env.KIVI_FC_SEED ?? 20261124);

/** Valid cache options: the generator draws freely, then the rules of src/options.ts are applied. */
const optionsArb: fc.Arbitrary<CacheOptions> = fc.record({
  layers: fc.integer({ min: 1, max: 2 }),
  kvHeads: fc.integer({ min: 1, max: 4 }),
  headsPerKv: fc.integer({ min: 1, max: 3 }),
  headDim: fc.constantFrom(8, 16, 24, 32, 64),
  bits: fc.constantFrom(2, 4, 8, 32) as fc.Arbitrary<2 | 4 | 8 | 32>,
  groupSize: fc.constantFrom(8, 16, 32),
  residualGroups: fc.integer({ min: 0, max: 3 }),
  sinkTokens: fc.integer({ min: 0, max: 5 }),
  keyWindow: fc.constantFrom('chunked', 'sliding') as fc.Arbitrary<'chunked' | 'sliding'>,
  keyGrouping: fc.constantFrom('channel', 'channel', 'token') as fc.Arbitrary<'channel' | 'token'>,
  valueGrouping: fc.constantFrom('token', 'token', 'channel') as fc.Arbitrary<'token' | 'channel'>,
  maxTokens: fc.option(fc.integer({ min: 1, max: 200 }), { nil: undefined }),
}).map((r) => {
  // headDim must be a multiple of min(groupSize, headDim) (24 with 16 or 32 is not).
  const groupSize = r.headDim % Math.min(r.groupSize, r.headDim) === 0 ? r.groupSize : 8;
  const residual = r.residualGroups * groupSize;
  const keyWindow = r.keyWindow === 'sliding' && residual >= groupSize && r.keyGrouping === 'channel' ? 'sliding' : 'chunked';
  const o: CacheOptions = {
    layers: r.layers, kvHeads: r.kvHeads, queryHeads: r.kvHeads * r.headsPerKv, headDim: r.headDim, bits: r.bits,
    groupSize, residual, sinkTokens: r.sinkTokens, keyWindow, keyGrouping: r.keyGrouping, valueGrouping: r.valueGrouping,
  };
  if (r.maxTokens !== undefined) o.maxTokens = r.maxTokens;
  return o;
});

const STAT_KEYS = ['tokens', 'sinkTokens', 'quantizedKeys', 'residualKeys', 'quantizedValues', 'residualValues'] as const;

function statsOf(cache: KiviCache, layer: number): Record<string, number> {
  const s = cache.stats(layer);
  return Object.fromEntries(STAT_KEYS.map((k) => [k, s[k]]));
}

function refStatsOf(ref: ReferenceCache, layer: number): Record<string, number> {
  const s = ref.stats(layer);
  return Object.fromEntries(STAT_KEYS.map((k) => [k, s[k]]));
}

function checkCodes(cache: KiviCache, ref: ReferenceCache, what: string): void {
  for (let l = 0; l < cache.options.layers; l++) {
    const { keys, values } = cache.inspect(l);
    if (cache.options.bits === 32) {
      expect(keys, `${what}: f32 keys have no groups`).toBeNull();
      expect(values, `${what}: f32 values have no groups`).toBeNull();
      continue;
    }
    expectSameGroups(keys, ref.keyGroups(l), `${what}: layer ${l} keys`);
    expectSameGroups(values, ref.valueGroups(l), `${what}: layer ${l} values`);
  }
}

describe('random shapes, options and chunkings against the reference', () => {
  it('stats after every step, attention within 2e-3, codes identical at the end', () => {
    fc.assert(
      fc.property(
        optionsArb,
        fc.array(fc.record({ layer: fc.nat(), n: fc.integer({ min: 1, max: 48 }), q: fc.integer({ min: 1, max: 3 }) }), { minLength: 1, maxLength: 14 }),
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        (options, steps, seed) => {
          const cache = kivi.createCache(options);
          const ref = new ReferenceCache(referenceOptions(options));
          const rng = new Rng(seed);
          const { kvHeads, headDim } = options;
          const queryHeads = options.queryHeads!;
          try {
            for (const [i, step] of steps.entries()) {
              const layer = step.layer % options.layers;
              const k = syntheticKv(rng, step.n, kvHeads, headDim, 'keys');
              const v = syntheticKv(rng, step.n, kvHeads, headDim, 'values');
              cache.append(layer, k, v);
              ref.append(layer, k, v);
              const what = `step ${i} (${JSON.stringify(options)})`;
              for (let l = 0; l < options.layers; l++) expect(statsOf(cache, l), `${what}: stats of layer ${l}`).toEqual(refStatsOf(ref, l));
              const q = syntheticKv(rng, Math.min(step.q, ref.stats(layer).tokens), queryHeads, headDim, 'queries');
              expect(relativeL2(cache.attend(layer, q), ref.attend(layer, q)), `${what}: attention`).toBeLessThan(2e-3);
            }
            checkCodes(cache, ref, JSON.stringify(options));
          } finally {
            cache.dispose();
          }
        },
      ),
      { numRuns: 250, seed: SEED },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Operation sequences against a model.

type Op =
  | { kind: 'append'; layer: number; n: number; fault: 'none' | 'layer' | 'type' | 'mismatch' | 'nan' | 'huge' | 'empty' }
  | { kind: 'attend'; layer: number; q: number; fault: 'none' | 'too-many' | 'scale' | 'out-length' }
  | { kind: 'stats'; layer: number }
  | { kind: 'dispose' }
  | { kind: 'roundtrip'; disposeOld: boolean }
  | { kind: 'truncate'; layer: number; back: number; fault: 'none' | 'too-many' | 'negative' | 'type' }
  | { kind: 'fork'; disposeOld: boolean };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 14, arbitrary: fc.record({ kind: fc.constant('append' as const), layer: fc.nat({ max: 3 }), n: fc.integer({ min: 1, max: 40 }), fault: fc.constantFrom('none', 'none', 'none', 'layer', 'type', 'mismatch', 'nan', 'huge', 'empty') as fc.Arbitrary<'none'> }) },
  { weight: 9, arbitrary: fc.record({ kind: fc.constant('attend' as const), layer: fc.nat({ max: 3 }), q: fc.integer({ min: 1, max: 4 }), fault: fc.constantFrom('none', 'none', 'too-many', 'scale', 'out-length') as fc.Arbitrary<'none'> }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('stats' as const), layer: fc.nat({ max: 3 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('dispose' as const) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('roundtrip' as const), disposeOld: fc.boolean() }) },
  // layer 4: every layer at once.
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('truncate' as const), layer: fc.nat({ max: 4 }), back: fc.integer({ min: 0, max: 60 }), fault: fc.constantFrom('none', 'none', 'none', 'too-many', 'negative', 'type') as fc.Arbitrary<'none'> }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('fork' as const), disposeOld: fc.boolean() }) },
);

/** Everything observable, for "state unchanged" (attention of the newest token as raw bits). */
function observe(cache: KiviCache): unknown {
  if (cache.isDisposed) return { disposed: true, byteLength: cache.byteLength };
  const o = cache.options;
  const layers = [];
  for (let l = 0; l < o.layers; l++) {
    const tokens = cache.tokens(l);
    const q = new Float32Array(o.queryHeads * o.headDim).fill(0.25);
    layers.push({ stats: cache.stats(l), inspect: cache.inspect(l), attend: tokens === 0 ? null : Array.from(new Uint32Array(cache.attend(l, q).buffer)) });
  }
  return { byteLength: cache.byteLength, stats: cache.stats(), layers };
}

describe('random operation sequences against a model', () => {
  it('every operation matches the model or throws the documented TypeError/RangeError with state unchanged', () => {
    const seen = { appended: 0, attended: 0, refused: 0, roundtrips: 0, disposed: 0, truncated: 0, forked: 0 };
    fc.assert(
      fc.property(optionsArb, fc.array(opArb, { minLength: 5, maxLength: 30, size: 'max' }), fc.integer({ min: 0, max: 2 ** 31 - 1 }), (options, ops, seed) => {
        let cache = kivi.createCache(options);
        let ref = new ReferenceCache(referenceOptions(options));
        let disposed = false;
        const rng = new Rng(seed);
        const { kvHeads, headDim, layers } = options;
        const queryHeads = options.queryHeads!;
        const expectRefused = (call: () => unknown, type: typeof TypeError | typeof RangeError, pattern: RegExp, what: string) => {
          const before = observe(cache);
          let error: unknown;
          try {
            call();
          } catch (e) {
            error = e;
          }
          expect(error, `${what}: should throw`).toBeInstanceOf(type);
          expect(String(error), what).toMatch(pattern);
          expect(observe(cache), `${what}: state unchanged`).toEqual(before);
          seen.refused++;
        };
        const extra: KiviCache[] = [];
        /** Earlier caches a fork was taken from, with their models: forks must never change them. */
        const parents: { cache: KiviCache; ref: ReferenceCache }[] = [];
        try {
          for (const [i, op] of ops.entries()) {
            const what = `op ${i} ${JSON.stringify(op)} on ${JSON.stringify(options)}`;
            if (op.kind === 'dispose') {
              cache.dispose();
              disposed = true;
              seen.disposed++;
              expect(cache.isDisposed).toBe(true);
              expect(cache.byteLength).toBe(0);
              continue;
            }
            if (op.kind === 'roundtrip') {
              if (disposed) {
                expectRefused(() => cache.serialize(), TypeError, /disposed/, what);
                continue;
              }
              const restored = kivi.restoreCache(cache.serialize());
              if (op.disposeOld) cache.dispose();
              else extra.push(cache);
              cache = restored;
              seen.roundtrips++;
              for (let l = 0; l < layers; l++) expect(statsOf(cache, l), `${what}: restored stats`).toEqual(refStatsOf(ref, l));
              continue;
            }
            if (op.kind === 'fork') {
              if (disposed) {
                expectRefused(() => cache.fork(), TypeError, /disposed/, what);
                continue;
              }
              const fork = cache.fork();
              const forkRef = ref.fork();
              if (op.disposeOld) cache.dispose();
              else parents.push({ cache, ref });
              cache = fork;
              ref = forkRef;
              seen.forked++;
              for (let l = 0; l < layers; l++) expect(statsOf(cache, l), `${what}: fork stats`).toEqual(refStatsOf(ref, l));
              continue;
            }
            if (op.kind === 'truncate') {
              const all = op.layer === 4;
              const target = all ? undefined : op.layer === 3 ? layers : op.layer % layers;
              if (disposed) {
                expectRefused(() => cache.truncate(0), TypeError, /disposed/, what);
                continue;
              }
              if (target === layers) {
                expectRefused(() => cache.truncate(0, layers), RangeError, /layer must be an integer/, what);
                continue;
              }
              const held = Math.min(...Array.from({ length: layers }, (_, l) => ref.stats(l).tokens).filter((_, l) => all || l === target));
              if (op.fault === 'too-many') expectRefused(() => cache.truncate(held + 1 + op.back, target), RangeError, /tokens must be an integer from 0 to/, what);
              else if (op.fault === 'negative') expectRefused(() => cache.truncate(-1 - op.back, target), RangeError, /tokens must be an integer from 0 to/, what);
              else if (op.fault === 'type') expectRefused(() => cache.truncate(String(held) as unknown as number, target), TypeError, /tokens must be a number/, what);
              else {
                const keep = Math.max(0, held - op.back);
                cache.truncate(keep, target);
                ref.truncate(keep, target);
                seen.truncated++;
                for (let l = 0; l < layers; l++) expect(statsOf(cache, l), `${what}: stats of layer ${l}`).toEqual(refStatsOf(ref, l));
              }
              continue;
            }
            const badLayer = op.layer === 3; // one past the last layer
            const layer = badLayer ? layers : op.layer % layers;
            if (op.kind === 'stats') {
              if (disposed) expectRefused(() => cache.stats(0), TypeError, /disposed/, what);
              else if (badLayer) expectRefused(() => cache.stats(layer), RangeError, /layer must be an integer/, what);
              else expect(statsOf(cache, layer), what).toEqual(refStatsOf(ref, layer));
              continue;
            }
            if (op.kind === 'append') {
              const k = syntheticKv(rng, op.n, kvHeads, headDim, 'keys');
              const v = syntheticKv(rng, op.n, kvHeads, headDim, 'values');
              const at = rng.next() * k.length | 0;
              if (disposed) {
                expectRefused(() => cache.append(0, k, v), TypeError, /disposed/, what);
              } else if (badLayer || op.fault === 'layer') {
                expectRefused(() => cache.append(layers, k, v), RangeError, /layer must be an integer from 0/, what);
              } else if (op.fault === 'type') {
                expectRefused(() => cache.append(layer, Array.from(k) as unknown as Float32Array, v), TypeError, /keys must be a Float32Array/, what);
              } else if (op.fault === 'mismatch') {
                const shorter = op.n === 1 ? new Float32Array(3) : v.subarray(0, (op.n - 1) * kvHeads * headDim);
                expectRefused(() => cache.append(layer, k, shorter), RangeError, /values must hold a whole number|same number of tokens/, what);
              } else if (op.fault === 'empty') {
                expectRefused(() => cache.append(layer, new Float32Array(0), new Float32Array(0)), RangeError, /whole number \(>= 1\)/, what);
              } else if (op.fault === 'nan' || op.fault === 'huge') {
                v[at] = op.fault === 'nan' ? Number.NaN : 1e5;
                expectRefused(() => cache.append(layer, k, v), RangeError, op.fault === 'nan' ? /finite numbers/ : /\|x\| <= 65504/, what);
              } else {
                cache.append(layer, k, v);
                ref.append(layer, k, v);
                seen.appended++;
                expect(statsOf(cache, layer), what).toEqual(refStatsOf(ref, layer));
              }
              continue;
            }
            // attend
            const tokens = badLayer ? 0 : ref.stats(layer).tokens;
            const n = op.fault === 'too-many' ? tokens + op.q : Math.min(op.q, tokens);
            const q = syntheticKv(rng, Math.max(n, 1), queryHeads, headDim, 'queries');
            if (disposed) {
              expectRefused(() => cache.attend(0, q), TypeError, /disposed/, what);
            } else if (badLayer) {
              expectRefused(() => cache.attend(layer, q), RangeError, /layer must be an integer/, what);
            } else if (op.fault === 'too-many' || tokens === 0) {
              expectRefused(() => cache.attend(layer, q), RangeError, /queries must be at most the \d+ tokens/, what);
            } else if (op.fault === 'scale') {
              expectRefused(() => cache.attend(layer, q, undefined, { scale: -1 }), RangeError, /scale must be a finite number > 0/, what);
            } else if (op.fault === 'out-length') {
              expectRefused(() => cache.attend(layer, q, new Float32Array(q.length + 1)), RangeError, /out must have length/, what);
            } else {
              const out = new Float32Array(q.length);
              expect(cache.attend(layer, q, out)).toBe(out);
              expect(relativeL2(out, ref.attend(layer, q)), `${what}: attention`).toBeLessThan(2e-3);
              seen.attended++;
            }
          }
          if (!disposed) checkCodes(cache, ref, `end of ${JSON.stringify(options)}`);
          for (const [i, p] of parents.entries()) {
            if (p.cache.isDisposed) continue;
            checkCodes(p.cache, p.ref, `parent ${i} of a fork, at the end`);
            for (let l = 0; l < layers; l++) {
              expect(statsOf(p.cache, l), `parent ${i}: stats of layer ${l}`).toEqual(refStatsOf(p.ref, l));
              const tokens = p.ref.stats(l).tokens;
              if (tokens === 0) continue;
              const q = syntheticKv(rng, 1, queryHeads, headDim, 'queries');
              expect(relativeL2(p.cache.attend(l, q), p.ref.attend(l, q)), `parent ${i}: attention`).toBeLessThan(2e-3);
            }
          }
        } finally {
          cache.dispose();
          for (const c of extra) c.dispose();
          for (const p of parents) p.cache.dispose();
        }
      }),
      { numRuns: 120, seed: SEED },
    );
    console.log(`operation sequences: ${JSON.stringify(seen)}`);
    // The sequences exercised every kind of operation (the counts cover fast-check's shrinking runs too).
    expect(seen.appended).toBeGreaterThan(100);
    expect(seen.attended).toBeGreaterThan(30);
    expect(seen.refused).toBeGreaterThan(100);
    expect(seen.disposed).toBeGreaterThan(10);
    expect(seen.roundtrips).toBeGreaterThan(10);
    expect(seen.truncated).toBeGreaterThan(20);
    expect(seen.forked).toBeGreaterThan(10);
  });
});

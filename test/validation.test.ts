// Bad input gives a clear error (TypeError for a wrong type, RangeError for a value out of range, the
// message naming what was expected and what was got) and changes nothing (SPEC.md, "Inputs the cache
// refuses"), for every build.
import { beforeAll, describe, expect, it } from 'vitest';
import type { CacheOptions, CacheStats, GroupListing, Kivi, KiviCache, VariantName } from '../src/index';
import { ReferenceCache, Rng, relativeL2, syntheticKv } from '../src/reference';
import { loadAllVariants, referenceOptions, VARIANT_NAMES } from './helpers';

let kivis: Map<VariantName, Kivi>;
beforeAll(async () => {
  kivis = await loadAllVariants();
});

type ErrorClass = TypeErrorConstructor | RangeErrorConstructor;

/** Runs fn, which must throw exactly `type` (not a subclass, not a plain Error) with a message matching `message`. */
function expectRefused(fn: () => unknown, type: ErrorClass, message: RegExp): void {
  let thrown: unknown;
  let threw = false;
  try {
    fn();
  } catch (error) {
    thrown = error;
    threw = true;
  }
  expect(threw, 'the call should throw').toBe(true);
  expect(thrown, `should be an Error, got ${String(thrown)}`).toBeInstanceOf(Error);
  const e = thrown as Error;
  expect(Object.getPrototypeOf(e), `${e.constructor.name}: ${e.message}`).toBe(type.prototype);
  expect(e.message).toMatch(message);
}

// ---------------------------------------------------------------------------------------------
// createCache

const BASE: CacheOptions = { layers: 2, kvHeads: 2, queryHeads: 4, headDim: 32, bits: 2, groupSize: 16, residual: 32 };

interface OptionCase {
  name: string;
  options: unknown;
  error: ErrorClass;
  message: RegExp;
}

const with_ = (o: Record<string, unknown>): Record<string, unknown> => ({ ...BASE, ...o });
const without = (key: string): Record<string, unknown> => {
  const o: Record<string, unknown> = { ...BASE };
  delete o[key];
  return o;
};

const OPTION_CASES: OptionCase[] = [
  { name: 'options undefined', options: undefined, error: TypeError, message: /options must be an object.*got undefined/ },
  { name: 'options null', options: null, error: TypeError, message: /options must be an object.*got null/ },
  { name: 'options a number', options: 5, error: TypeError, message: /options must be an object.*got 5/ },
  { name: 'options a string', options: 'layers', error: TypeError, message: /options must be an object.*got "layers"/ },
  { name: 'options an array', options: [2, 2, 32], error: TypeError, message: /options must be an object.*got an array of length 3/ },
  { name: 'unknown option groupsize (typo)', options: with_({ groupsize: 32 }), error: TypeError, message: /unknown option "groupsize".*expected one of.*groupSize/ },
  { name: 'unknown option keyWindows', options: with_({ keyWindows: 'sliding' }), error: TypeError, message: /unknown option "keyWindows".*expected one of.*keyWindow/ },
  { name: 'layers missing', options: without('layers'), error: TypeError, message: /layers must be a number.*got undefined/ },
  { name: 'layers 0', options: with_({ layers: 0 }), error: RangeError, message: /layers must be an integer from 1 to \d+.*got 0/ },
  { name: 'layers 1.5', options: with_({ layers: 1.5 }), error: RangeError, message: /layers must be an integer.*got 1\.5/ },
  { name: "layers '2'", options: with_({ layers: '2' }), error: TypeError, message: /layers must be a number.*got "2"/ },
  { name: 'layers NaN', options: with_({ layers: NaN }), error: RangeError, message: /layers must be an integer.*got NaN/ },
  { name: 'layers Infinity', options: with_({ layers: Infinity }), error: RangeError, message: /layers must be an integer.*got Infinity/ },
  { name: 'kvHeads 0', options: with_({ kvHeads: 0, queryHeads: undefined }), error: RangeError, message: /kvHeads must be an integer from 1.*got 0/ },
  { name: 'kvHeads -2', options: with_({ kvHeads: -2 }), error: RangeError, message: /kvHeads must be an integer from 1.*got -2/ },
  { name: 'headDim 12 (not a multiple of 8)', options: with_({ headDim: 12 }), error: RangeError, message: /headDim must be a multiple of 8.*got 12/ },
  { name: 'headDim 0', options: with_({ headDim: 0 }), error: RangeError, message: /headDim must be an integer from 8.*got 0/ },
  { name: "headDim '32'", options: with_({ headDim: '32' }), error: TypeError, message: /headDim must be a number.*got "32"/ },
  { name: 'queryHeads 3 with kvHeads 2', options: with_({ queryHeads: 3 }), error: RangeError, message: /queryHeads must be a multiple of kvHeads \(2\).*got 3/ },
  { name: 'queryHeads 0', options: with_({ queryHeads: 0 }), error: RangeError, message: /queryHeads must be an integer from 1.*got 0/ },
  { name: 'bits 3', options: with_({ bits: 3 }), error: RangeError, message: /bits must be one of 2, 4, 8, 32.*got 3/ },
  { name: "bits '2'", options: with_({ bits: '2' }), error: TypeError, message: /bits must be one of 2, 4, 8, 32.*got "2"/ },
  { name: 'bits 16', options: with_({ bits: 16 }), error: RangeError, message: /bits must be one of 2, 4, 8, 32.*got 16/ },
  { name: 'bits 1', options: with_({ bits: 1 }), error: RangeError, message: /bits must be one of 2, 4, 8, 32.*got 1/ },
  { name: 'groupSize 12 (not a multiple of 8)', options: with_({ groupSize: 12, residual: 24 }), error: RangeError, message: /groupSize must be a multiple of 8.*got 12/ },
  { name: 'groupSize 0', options: with_({ groupSize: 0 }), error: RangeError, message: /groupSize must be an integer from 8.*got 0/ },
  { name: 'residual 24 (not a multiple of groupSize 16)', options: with_({ residual: 24 }), error: RangeError, message: /residual must be a multiple of groupSize \(16\).*got 24/ },
  { name: 'residual -16', options: with_({ residual: -16 }), error: RangeError, message: /residual must be an integer from 0.*got -16/ },
  { name: 'sinkTokens -1', options: with_({ sinkTokens: -1 }), error: RangeError, message: /sinkTokens must be an integer from 0.*got -1/ },
  { name: 'sinkTokens 0.5', options: with_({ sinkTokens: 0.5 }), error: RangeError, message: /sinkTokens must be an integer.*got 0\.5/ },
  { name: "keyWindow 'sliding' with residual 0", options: with_({ keyWindow: 'sliding', residual: 0 }), error: RangeError, message: /keyWindow 'sliding' needs residual >= groupSize \(16\).*got residual 0/ },
  { name: "keyWindow 'sliding' with residual 0 < groupSize 32", options: with_({ keyWindow: 'sliding', groupSize: 32, residual: 0 }), error: RangeError, message: /keyWindow 'sliding' needs residual >= groupSize \(32\).*got residual 0/ },
  { name: "keyWindow 'sliding' with residual 8 < groupSize 16", options: with_({ keyWindow: 'sliding', residual: 8 }), error: RangeError, message: /residual must be a multiple of groupSize \(16\).*got 8/ },
  { name: "keyWindow 'sliding' with keyGrouping 'token'", options: with_({ keyWindow: 'sliding', keyGrouping: 'token' }), error: RangeError, message: /keyWindow 'sliding'.*per channel.*got keyGrouping "token"/ },
  { name: "keyWindow 'slide'", options: with_({ keyWindow: 'slide' }), error: RangeError, message: /keyWindow must be one of "chunked", "sliding".*got "slide"/ },
  { name: "keyGrouping 'chanel'", options: with_({ keyGrouping: 'chanel' }), error: RangeError, message: /keyGrouping must be one of "channel", "token".*got "chanel"/ },
  { name: "keyGrouping 'Channel'", options: with_({ keyGrouping: 'Channel' }), error: RangeError, message: /keyGrouping must be one of "channel", "token".*got "Channel"/ },
  { name: 'keyGrouping 1', options: with_({ keyGrouping: 1 }), error: TypeError, message: /keyGrouping must be one of "channel", "token".*got 1/ },
  { name: "valueGrouping 'tokens'", options: with_({ valueGrouping: 'tokens' }), error: RangeError, message: /valueGrouping must be one of "token", "channel".*got "tokens"/ },
  { name: 'valueGrouping null', options: with_({ valueGrouping: null }), error: TypeError, message: /valueGrouping must be one of "token", "channel".*got null/ },
  { name: 'maxTokens 0', options: with_({ maxTokens: 0 }), error: RangeError, message: /maxTokens must be an integer from 1.*got 0/ },
  { name: 'maxTokens 2.5', options: with_({ maxTokens: 2.5 }), error: RangeError, message: /maxTokens must be an integer.*got 2\.5/ },
  { name: "maxTokens '100'", options: with_({ maxTokens: '100' }), error: TypeError, message: /maxTokens must be a number.*got "100"/ },
  {
    name: 'headDim 40 with groupSize 32 (not a multiple of min(groupSize, headDim))',
    options: with_({ headDim: 40, groupSize: 32, residual: 64 }),
    error: RangeError,
    message: /headDim must be a multiple of .*min\(groupSize, headDim\) = 32.*got 40/,
  },
];

// ---------------------------------------------------------------------------------------------
// A filled cache, its reference, and a snapshot of everything observable

interface Config {
  name: string;
  options: CacheOptions;
  /** Layers that get filled; the others stay empty. */
  filled: number[];
}

const CONFIGS: Config[] = [
  {
    name: 'KIVI-2, GQA, residual 32, empty layer 2',
    options: { layers: 3, kvHeads: 2, queryHeads: 4, headDim: 32, bits: 2, groupSize: 16, residual: 32 },
    filled: [0, 1],
  },
  {
    name: 'KIVI-4, sinks 3, sliding keys, empty layer 1',
    options: { layers: 3, kvHeads: 1, queryHeads: 2, headDim: 16, bits: 4, groupSize: 8, residual: 16, sinkTokens: 3, keyWindow: 'sliding' },
    filled: [0, 2],
  },
  {
    name: 'KIVI-8 ablation (keys per token, values per channel), sink 1, empty layer 1',
    options: { layers: 2, kvHeads: 2, headDim: 16, bits: 8, groupSize: 8, residual: 8, sinkTokens: 1, keyGrouping: 'token', valueGrouping: 'channel' },
    filled: [0],
  },
];

interface Fixture {
  cache: KiviCache;
  ref: ReferenceCache;
  options: CacheOptions;
  config: Config;
  rng: Rng;
  /** kvHeads × headDim */
  row: number;
  /** queryHeads × headDim */
  qRow: number;
  /** Probe queries per filled layer: 1 and 3 query tokens. */
  probes: Map<number, Float32Array[]>;
}

function appendBoth(fx: Fixture, layer: number, n: number): void {
  const { kvHeads, headDim } = fx.options;
  const k = syntheticKv(fx.rng, n, kvHeads, headDim, 'keys');
  const v = syntheticKv(fx.rng, n, kvHeads, headDim, 'values');
  fx.cache.append(layer, k, v);
  fx.ref.append(layer, k, v);
}

function queries(fx: Fixture, n: number): Float32Array {
  return syntheticKv(fx.rng, n, fx.options.queryHeads ?? fx.options.kvHeads, fx.options.headDim, 'queries');
}

/** Prefill in one chunk, then decode: per-token appends and small chunks, so that sinks (if any),
 *  quantized tokens and residual tokens all exist. */
function buildFixture(kivi: Kivi, config: Config, seed: number): Fixture {
  const options = config.options;
  const cache = kivi.createCache(options);
  const ref = new ReferenceCache(referenceOptions(options));
  const fx: Fixture = {
    cache, ref, options, config, rng: new Rng(seed),
    row: options.kvHeads * options.headDim,
    qRow: (options.queryHeads ?? options.kvHeads) * options.headDim,
    probes: new Map(),
  };
  for (const layer of config.filled) {
    appendBoth(fx, layer, 37 + layer);
    for (let i = 0; i < 4; i++) appendBoth(fx, layer, 1);
    appendBoth(fx, layer, 3);
    for (let i = 0; i < 3; i++) appendBoth(fx, layer, 1);
    fx.probes.set(layer, [queries(fx, 1), queries(fx, 3)]);
  }
  for (const layer of config.filled) {
    const s = cache.stats(layer);
    expect(s.quantizedKeys, 'fixture has quantized keys').toBeGreaterThan(0);
    expect(s.quantizedValues, 'fixture has quantized values').toBeGreaterThan(0);
    expect(s.residualKeys, 'fixture has residual keys').toBeGreaterThan(0);
    expect(s.residualValues, 'fixture has residual values').toBeGreaterThan(0);
  }
  return fx;
}

interface Snapshot {
  attends: Float32Array[];
  stats: CacheStats[];
  total: CacheStats;
  byteLength: number;
  tokens: number[];
  inspect: { keys: GroupListing | null; values: GroupListing | null }[];
}

function snapshot(fx: Fixture): Snapshot {
  const c = fx.cache;
  const layers = [...Array(fx.options.layers).keys()];
  const attends: Float32Array[] = [];
  for (const layer of fx.config.filled) for (const q of fx.probes.get(layer)!) attends.push(c.attend(layer, q));
  return {
    attends,
    stats: layers.map((l) => c.stats(l)),
    total: c.stats(),
    byteLength: c.byteLength,
    tokens: layers.map((l) => c.tokens(l)),
    inspect: layers.map((l) => c.inspect(l)),
  };
}

function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return i;
  return -1;
}

function expectUnchanged(before: Snapshot, after: Snapshot): void {
  expect(after.attends.length).toBe(before.attends.length);
  before.attends.forEach((a, i) => {
    const d = firstDifference(after.attends[i]!, a);
    expect(d, `attend probe ${i}: first difference at ${d} (${after.attends[i]![d]} vs ${a[d]})`).toBe(-1);
  });
  expect(after.stats).toEqual(before.stats);
  expect(after.total).toEqual(before.total);
  expect(after.byteLength).toBe(before.byteLength);
  expect(after.tokens).toEqual(before.tokens);
  before.inspect.forEach((b, l) => {
    for (const stream of ['keys', 'values'] as const) {
      const x = b[stream];
      const y = after.inspect[l]![stream];
      if (x === null) {
        expect(y).toBeNull();
        continue;
      }
      expect(y).not.toBeNull();
      for (const field of ['scales', 'zeros', 'codes'] as const) {
        const d = firstDifference(y![field], x[field]);
        expect(d, `layer ${l} ${stream} ${field}: first difference at ${d}`).toBe(-1);
      }
    }
  });
}

/** The cache agrees with the reference now and after further valid appends (all layers, empty ones included). */
function expectStillWorks(fx: Fixture): void {
  const check = (what: string) => {
    for (let layer = 0; layer < fx.options.layers; layer++) {
      const tokens = fx.cache.tokens(layer);
      expect(tokens, `${what}: tokens(${layer})`).toBe(fx.ref.stats(layer).tokens);
      const s = fx.cache.stats(layer);
      const r = fx.ref.stats(layer);
      expect({ ...s, bytes: 0, sharedBytes: 0, bitsPerElement: 0 }, `${what}: stats(${layer})`).toEqual({ ...r, bytes: 0, sharedBytes: 0, bitsPerElement: 0 });
      if (tokens === 0) continue;
      for (const n of [1, Math.min(tokens, 2)]) {
        const q = queries(fx, n);
        const err = relativeL2(fx.cache.attend(layer, q), fx.ref.attend(layer, q));
        expect(err, `${what}: layer ${layer}, ${n} queries, relative L2`).toBeLessThan(2e-3);
      }
    }
  };
  check('right after the refused call');
  for (let layer = 0; layer < fx.options.layers; layer++) {
    appendBoth(fx, layer, 1);
    appendBoth(fx, layer, 3);
    appendBoth(fx, layer, 1);
  }
  check('after more appends');
}

// ---------------------------------------------------------------------------------------------
// append and attend cases

interface BadCall {
  name: string;
  call: (fx: Fixture) => unknown;
  error: ErrorClass;
  message: (fx: Fixture) => RegExp;
}

const f32 = (fx: Fixture, tokens: number, seedShift = 0) => {
  const r = new Rng(1000 + seedShift);
  return syntheticKv(r, tokens, fx.options.kvHeads, fx.options.headDim, 'values');
};
const withAt = (a: Float32Array, index: number, x: number): Float32Array => {
  const b = a.slice();
  b[index] = x;
  return b;
};
/** An index deep inside a 2-token array (second token, past the first channels). */
const deep = (fx: Fixture) => fx.row + Math.floor(fx.row * 0.6) + 1;

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function badNumberCases(stream: 'keys' | 'values', x: number): BadCall {
  const label = Number.isFinite(x) ? `|x| = ${Math.abs(x)}` : String(x);
  return {
    name: `${stream} hold ${x} (${label}) at a deep index`,
    call: (fx) => {
      const k = f32(fx, 2, 1);
      const v = f32(fx, 2, 2);
      return stream === 'keys' ? fx.cache.append(0, withAt(k, deep(fx), x), v) : fx.cache.append(0, k, withAt(v, deep(fx), x));
    },
    error: RangeError,
    message: (fx) => Number.isFinite(x)
      ? new RegExp(`${stream} must hold \\|x\\| <= 65504.*got ${esc(String(x))} at index ${deep(fx)}`)
      : new RegExp(`${stream} must hold finite numbers.*got ${esc(String(x))} at index ${deep(fx)}`),
  };
}

const APPEND_CASES: BadCall[] = [
  { name: 'keys a Float64Array', call: (fx) => fx.cache.append(0, new Float64Array(fx.row) as unknown as Float32Array, f32(fx, 1)), error: TypeError, message: (fx) => new RegExp(`keys must be a Float32Array.*got a Float64Array of length ${fx.row}`) },
  { name: 'keys a plain array', call: (fx) => fx.cache.append(0, Array.from(f32(fx, 1)) as unknown as Float32Array, f32(fx, 1)), error: TypeError, message: (fx) => new RegExp(`keys must be a Float32Array.*got an array of length ${fx.row}`) },
  { name: 'keys null', call: (fx) => fx.cache.append(0, null as unknown as Float32Array, f32(fx, 1)), error: TypeError, message: () => /keys must be a Float32Array.*got null/ },
  { name: 'values a Float64Array', call: (fx) => fx.cache.append(0, f32(fx, 1), new Float64Array(fx.row) as unknown as Float32Array), error: TypeError, message: (fx) => new RegExp(`values must be a Float32Array.*got a Float64Array of length ${fx.row}`) },
  { name: 'values a plain array', call: (fx) => fx.cache.append(0, f32(fx, 1), Array.from(f32(fx, 1)) as unknown as Float32Array), error: TypeError, message: () => /values must be a Float32Array.*got an array/ },
  { name: 'values undefined', call: (fx) => fx.cache.append(0, f32(fx, 1), undefined as unknown as Float32Array), error: TypeError, message: () => /values must be a Float32Array.*got undefined/ },
  { name: 'keys length not a whole number of tokens', call: (fx) => fx.cache.append(0, f32(fx, 2).subarray(0, fx.row + 5), f32(fx, 2)), error: RangeError, message: (fx) => new RegExp(`keys must hold a whole number.*${fx.row} numbers.*got length ${fx.row + 5}`) },
  { name: 'values length not a whole number of tokens', call: (fx) => fx.cache.append(0, f32(fx, 1), f32(fx, 1).subarray(0, fx.row - 1)), error: RangeError, message: (fx) => new RegExp(`values must hold a whole number.*got length ${fx.row - 1}`) },
  { name: 'zero-length keys and values', call: (fx) => fx.cache.append(0, new Float32Array(0), new Float32Array(0)), error: RangeError, message: () => /keys must hold a whole number \(>= 1\) of tokens.*got length 0/ },
  { name: 'zero-length values', call: (fx) => fx.cache.append(0, f32(fx, 1), new Float32Array(0)), error: RangeError, message: () => /values must hold a whole number \(>= 1\) of tokens.*got length 0/ },
  { name: 'keys 2 tokens, values 3 tokens', call: (fx) => fx.cache.append(0, f32(fx, 2), f32(fx, 3)), error: RangeError, message: () => /keys and values must hold the same number of tokens.*got 2 and 3/ },
  { name: 'keys 3 tokens, values 1 token', call: (fx) => fx.cache.append(0, f32(fx, 3), f32(fx, 1)), error: RangeError, message: () => /same number of tokens.*got 3 and 1/ },
  badNumberCases('keys', NaN),
  badNumberCases('values', NaN),
  badNumberCases('keys', Infinity),
  badNumberCases('values', Infinity),
  badNumberCases('keys', -Infinity),
  badNumberCases('values', -Infinity),
  badNumberCases('keys', 65504.5),
  badNumberCases('values', 65504.5),
  badNumberCases('keys', -65504.5),
  badNumberCases('values', -65504.5),
  badNumberCases('keys', 70000),
  badNumberCases('values', 70000),
  badNumberCases('keys', -70000),
  badNumberCases('values', -70000),
  { name: 'NaN in the last number of keys', call: (fx) => { const k = f32(fx, 3); return fx.cache.append(0, withAt(k, k.length - 1, NaN), f32(fx, 3)); }, error: RangeError, message: (fx) => new RegExp(`keys must hold finite numbers.*got NaN at index ${3 * fx.row - 1}`) },
  { name: 'layer -1', call: (fx) => fx.cache.append(-1, f32(fx, 1), f32(fx, 1)), error: RangeError, message: (fx) => new RegExp(`layer must be an integer from 0 to ${fx.options.layers - 1}.*got -1`) },
  { name: 'layer = layers', call: (fx) => fx.cache.append(fx.options.layers, f32(fx, 1), f32(fx, 1)), error: RangeError, message: (fx) => new RegExp(`layer must be an integer from 0 to ${fx.options.layers - 1}.*got ${fx.options.layers}`) },
  { name: 'layer 0.5', call: (fx) => fx.cache.append(0.5, f32(fx, 1), f32(fx, 1)), error: RangeError, message: () => /layer must be an integer.*got 0\.5/ },
  { name: 'layer NaN', call: (fx) => fx.cache.append(NaN, f32(fx, 1), f32(fx, 1)), error: RangeError, message: () => /layer must be an integer.*got NaN/ },
  { name: "layer '0'", call: (fx) => fx.cache.append('0' as unknown as number, f32(fx, 1), f32(fx, 1)), error: TypeError, message: () => /layer must be a number.*got "0"/ },
  { name: 'layer undefined', call: (fx) => fx.cache.append(undefined as unknown as number, f32(fx, 1), f32(fx, 1)), error: TypeError, message: () => /layer must be a number.*got undefined/ },
];

const qs = (fx: Fixture, n: number) => syntheticKv(new Rng(2000 + n), n, fx.options.queryHeads ?? fx.options.kvHeads, fx.options.headDim, 'queries');
const emptyLayer = (fx: Fixture) => [...Array(fx.options.layers).keys()].find((l) => !fx.config.filled.includes(l));

const ATTEND_CASES: BadCall[] = [
  { name: 'queries a Float64Array', call: (fx) => fx.cache.attend(0, new Float64Array(fx.qRow) as unknown as Float32Array), error: TypeError, message: (fx) => new RegExp(`queries must be a Float32Array.*got a Float64Array of length ${fx.qRow}`) },
  { name: 'queries a plain array', call: (fx) => fx.cache.attend(0, Array.from(qs(fx, 1)) as unknown as Float32Array), error: TypeError, message: (fx) => new RegExp(`queries must be a Float32Array.*got an array of length ${fx.qRow}`) },
  { name: 'queries null', call: (fx) => fx.cache.attend(0, null as unknown as Float32Array), error: TypeError, message: () => /queries must be a Float32Array.*got null/ },
  { name: 'queries an Int16Array', call: (fx) => fx.cache.attend(0, new Int16Array(fx.qRow) as unknown as Float32Array), error: TypeError, message: () => /queries must be a Float32Array.*got a Int16Array/ },
  { name: 'queries of kv-head width (wrong length)', call: (fx) => fx.cache.attend(0, qs(fx, 2).subarray(0, fx.qRow + fx.options.headDim / 2)), error: RangeError, message: (fx) => new RegExp(`queries must hold a whole number.*${fx.qRow} numbers.*got length ${fx.qRow + fx.options.headDim / 2}`) },
  { name: 'queries length 0', call: (fx) => fx.cache.attend(0, new Float32Array(0)), error: RangeError, message: () => /queries must hold a whole number \(>= 1\).*got length 0/ },
  { name: 'NaN inside queries', call: (fx) => fx.cache.attend(0, withAt(qs(fx, 2), fx.qRow + 7, NaN)), error: RangeError, message: (fx) => new RegExp(`queries must hold finite numbers.*got NaN at index ${fx.qRow + 7}`) },
  { name: 'Infinity inside queries', call: (fx) => fx.cache.attend(0, withAt(qs(fx, 2), fx.qRow + 3, Infinity)), error: RangeError, message: (fx) => new RegExp(`queries must hold finite numbers.*got Infinity at index ${fx.qRow + 3}`) },
  { name: '-Infinity inside queries', call: (fx) => fx.cache.attend(0, withAt(qs(fx, 1), 5, -Infinity)), error: RangeError, message: () => /queries must hold finite numbers.*got -Infinity at index 5/ },
  { name: 'qTokens = tokens + 1', call: (fx) => fx.cache.attend(0, qs(fx, fx.cache.tokens(0) + 1)), error: RangeError, message: (fx) => new RegExp(`queries must be at most the ${fx.cache.tokens(0)} tokens cached in layer 0, got ${fx.cache.tokens(0) + 1}`) },
  { name: 'attend on an empty layer', call: (fx) => fx.cache.attend(emptyLayer(fx)!, qs(fx, 1)), error: RangeError, message: (fx) => new RegExp(`at most the 0 tokens cached in layer ${emptyLayer(fx)}, got 1`) },
  { name: 'out a Float64Array', call: (fx) => fx.cache.attend(0, qs(fx, 1), new Float64Array(fx.qRow) as unknown as Float32Array), error: TypeError, message: (fx) => new RegExp(`out must be a Float32Array.*got a Float64Array of length ${fx.qRow}`) },
  { name: 'out a plain array', call: (fx) => fx.cache.attend(0, qs(fx, 1), new Array(16).fill(0) as unknown as Float32Array), error: TypeError, message: () => /out must be a Float32Array.*got an array of length 16/ },
  { name: 'out one number short', call: (fx) => fx.cache.attend(0, qs(fx, 2), new Float32Array(2 * fx.qRow - 1)), error: RangeError, message: (fx) => new RegExp(`out must have length ${2 * fx.qRow}.*got ${2 * fx.qRow - 1}`) },
  { name: 'out one number long', call: (fx) => fx.cache.attend(0, qs(fx, 1), new Float32Array(fx.qRow + 1)), error: RangeError, message: (fx) => new RegExp(`out must have length ${fx.qRow}.*got ${fx.qRow + 1}`) },
  { name: 'scale 0', call: (fx) => fx.cache.attend(0, qs(fx, 1), undefined, { scale: 0 }), error: RangeError, message: () => /scale must be a finite number > 0.*got 0/ },
  { name: 'scale -1', call: (fx) => fx.cache.attend(0, qs(fx, 1), undefined, { scale: -1 }), error: RangeError, message: () => /scale must be a finite number > 0.*got -1/ },
  { name: 'scale NaN', call: (fx) => fx.cache.attend(0, qs(fx, 1), undefined, { scale: NaN }), error: RangeError, message: () => /scale must be a finite number > 0.*got NaN/ },
  { name: 'scale Infinity', call: (fx) => fx.cache.attend(0, qs(fx, 1), undefined, { scale: Infinity }), error: RangeError, message: () => /scale must be a finite number > 0.*got Infinity/ },
  { name: "scale '1' (a string)", call: (fx) => fx.cache.attend(0, qs(fx, 1), undefined, { scale: '1' as unknown as number }), error: TypeError, message: () => /scale must be a (finite )?number.*got "1"/ },
  { name: 'attend options null', call: (fx) => fx.cache.attend(0, qs(fx, 1), undefined, null as unknown as { scale: number }), error: TypeError, message: () => /options must be an object.*got null/ },
  { name: 'layer -1', call: (fx) => fx.cache.attend(-1, qs(fx, 1)), error: RangeError, message: (fx) => new RegExp(`layer must be an integer from 0 to ${fx.options.layers - 1}.*got -1`) },
  { name: 'layer = layers', call: (fx) => fx.cache.attend(fx.options.layers, qs(fx, 1)), error: RangeError, message: (fx) => new RegExp(`layer must be an integer from 0 to ${fx.options.layers - 1}.*got ${fx.options.layers}`) },
  { name: 'layer 1.5', call: (fx) => fx.cache.attend(1.5, qs(fx, 1)), error: RangeError, message: () => /layer must be an integer.*got 1\.5/ },
  { name: "layer '0'", call: (fx) => fx.cache.attend('0' as unknown as number, qs(fx, 1)), error: TypeError, message: () => /layer must be a number.*got "0"/ },
];

// ---------------------------------------------------------------------------------------------

describe.each(VARIANT_NAMES)('%s build', (variant) => {
  const kivi = () => kivis.get(variant)!;

  describe('createCache refuses bad options', () => {
    it.each(OPTION_CASES)('$name', ({ options, error, message }) => {
      const before = kivi().memoryBytes;
      expectRefused(() => kivi().createCache(options as CacheOptions), error, message);
      expect(kivi().memoryBytes).toBe(before);
    });

    it('accepts the boundary values next to the refused ones', () => {
      const ok: CacheOptions[] = [
        BASE,
        { ...BASE, residual: 0 },
        { ...BASE, keyWindow: 'sliding', residual: 16 },
        { ...BASE, headDim: 8, groupSize: 32, residual: 32 }, // min(G, D) = 8
        { ...BASE, headDim: 40, groupSize: 8, residual: 8 },
        { ...BASE, headDim: 40, groupSize: 32, residual: 64, bits: 32 }, // no per-token groups at 32 bits
        { ...BASE, maxTokens: 1, sinkTokens: 0 },
        { layers: 1, kvHeads: 1, headDim: 8 },
      ];
      for (const o of ok) kivi().createCache(o).dispose();
    });
  });

  for (const [group, cases] of [['append', APPEND_CASES], ['attend', ATTEND_CASES]] as const) {
    describe.each(CONFIGS)(`${group} refuses bad input and changes nothing ($name)`, (config) => {
      it.each(cases)('$name', (c) => {
        const fx = buildFixture(kivi(), config, 17 + CONFIGS.indexOf(config));
        const before = snapshot(fx);
        expectRefused(() => c.call(fx), c.error, c.message(fx));
        expectUnchanged(before, snapshot(fx));
        expectStillWorks(fx);
        fx.cache.dispose();
      });
    });
  }

  describe.each(CONFIGS)('the snapshot comparison notices a change ($name)', (config) => {
    it('a valid one-token append is seen as a change', () => {
      const fx = buildFixture(kivi(), config, 23);
      const before = snapshot(fx);
      expectUnchanged(before, snapshot(fx));
      appendBoth(fx, config.filled[0]!, 1);
      expect(() => expectUnchanged(before, snapshot(fx))).toThrow();
      fx.cache.dispose();
    });
  });

  describe.each(CONFIGS)('a refused attend leaves `out` untouched ($name)', (config) => {
    it('bad scale, NaN query, too many queries', () => {
      const fx = buildFixture(kivi(), config, 99);
      const q = qs(fx, 2);
      const sentinel = () => new Float32Array(2 * fx.qRow).fill(-7.25);
      const calls: [string, (out: Float32Array) => unknown][] = [
        ['scale 0', (out) => fx.cache.attend(0, q, out, { scale: 0 })],
        ['scale NaN', (out) => fx.cache.attend(0, q, out, { scale: NaN })],
        ['NaN query', (out) => fx.cache.attend(0, withAt(q, 3, NaN), out)],
        ['layer out of range', (out) => fx.cache.attend(fx.options.layers, q, out)],
      ];
      for (const [what, call] of calls) {
        const out = sentinel();
        expect(() => call(out), what).toThrow();
        expect(out.every((x) => x === -7.25), `${what}: out untouched`).toBe(true);
      }
      fx.cache.dispose();
    });
  });

  describe.each(CONFIGS)('65504 itself is accepted ($name)', (config) => {
    it('±65504 in keys and values: appended and attended like the reference', () => {
      const fx = buildFixture(kivi(), config, 5);
      const k = f32(fx, 2, 3);
      const v = f32(fx, 2, 4);
      k[deep(fx)] = 65504;
      k[1] = -65504;
      v[deep(fx) - 1] = -65504;
      v[2] = 65504;
      fx.cache.append(0, k, v);
      fx.ref.append(0, k, v);
      expect(fx.cache.tokens(0)).toBe(fx.ref.stats(0).tokens);
      expectStillWorks(fx);
      fx.cache.dispose();
    });
  });
});

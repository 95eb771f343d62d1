// Pins down the float64 reference (src/reference.ts) so it can serve as the oracle for the kernels.
import { describe, it, expect } from 'vitest';
import {
  ReferenceCache, Rng, attentionF64, attentionSplitF64, f16BitsToF32, f32ToF16Bits, quantizeGroup, relativeL2, roundHalfEven,
  syntheticKv, type GroupListing, type ReferenceOptions,
} from '../src/reference';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const fromBits = (u: number): number => { u32[0] = u; return f32[0]!; };

function opts(o: Partial<ReferenceOptions> = {}): ReferenceOptions {
  return {
    layers: 1, kvHeads: 2, headDim: 8, queryHeads: 4, bits: 2, groupSize: 4, residual: 8, sinkTokens: 0,
    keyWindow: 'chunked', keyGrouping: 'channel', valueGrouping: 'token', ...o,
  };
}

/** Independent half oracle: nearest finite half by binary search over the sorted table, ties to even bits. */
const halfTable = Float64Array.from({ length: 0x7c00 }, (_, h) => f16BitsToF32(h)); // 0 .. 65504, increasing
function oracleHalf(x: number): number {
  const v = Math.fround(x);
  if (Number.isNaN(v)) return -1;
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a >= 65520) return sign | 0x7c00; // 65504 + half an ulp (16) and beyond: Inf (tie goes to even 0x7c00)
  let lo = 0;
  let hi = 0x7bff;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (halfTable[mid]! <= a) lo = mid; else hi = mid;
  }
  if (a >= halfTable[hi]!) return sign | hi;
  const dl = a - halfTable[lo]!;
  const dh = halfTable[hi]! - a;
  if (dl < dh) return sign | lo;
  if (dh < dl) return sign | hi;
  return sign | (lo % 2 === 0 ? lo : hi);
}

describe('half conversion', () => {
  it('known values', () => {
    const cases: [number, number][] = [
      [1, 0x3c00], [65504, 0x7bff], [65519, 0x7bff], [65520, 0x7c00], [1e6, 0x7c00], [-1e6, 0xfc00],
      [2 ** -24, 0x0001], [2 ** -25, 0x0000], [3 * 2 ** -25, 0x0002], [2 ** -25 * 1.0001, 0x0001],
      [0.1, 0x2e66], [-2, 0xc000], [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02],
      [2 ** -14, 0x0400], [2 ** -14 - 2 ** -25, 0x0400], [1023 * 2 ** -24, 0x03ff],
      [0, 0x0000], [-0, 0x8000], [1e-30, 0x0000], [-1e-30, 0x8000], [1e-45, 0], [Infinity, 0x7c00],
      [-Infinity, 0xfc00], [0.5, 0x3800], [-65504, 0xfbff], [3, 0x4200],
    ];
    for (const [x, h] of cases) expect(f32ToF16Bits(x), `f32ToF16Bits(${x})`).toBe(h);
    const nan = f32ToF16Bits(NaN);
    expect((nan & 0x7c00) === 0x7c00 && (nan & 0x3ff) !== 0).toBe(true);
    expect(Number.isNaN(f16BitsToF32(0x7e00))).toBe(true);
    expect(f16BitsToF32(0x7c00)).toBe(Infinity);
    expect(f16BitsToF32(0xfc00)).toBe(-Infinity);
    expect(f16BitsToF32(0x0001)).toBe(2 ** -24);
    expect(f16BitsToF32(0x3555)).toBe(0.333251953125);
    expect(Object.is(f16BitsToF32(0x8000), -0)).toBe(true);
  });

  it('round trips all 65536 half bit patterns (non-NaN)', () => {
    for (let h = 0; h < 0x10000; h++) {
      const v = f16BitsToF32(h);
      if (Number.isNaN(v)) {
        expect(Number.isNaN(f16BitsToF32(f32ToF16Bits(v)))).toBe(true);
        continue;
      }
      expect(Math.fround(v)).toBe(v); // exact in f32
      if (f32ToF16Bits(v) !== h) expect(f32ToF16Bits(v)).toBe(h);
    }
  });

  it('midpoints between adjacent halves round to even, and one f32 ulp away rounds to the nearer', () => {
    for (const sign of [1, -1]) {
      for (let h = 0; h < 0x7bff; h++) {
        const a = f16BitsToF32(h);
        const b = f16BitsToF32(h + 1);
        const mid = sign * (a + b) / 2; // 12 significant bits: exact in f32
        expect(Math.fround(mid)).toBe(mid);
        const s = sign < 0 ? 0x8000 : 0;
        const even = h % 2 === 0 ? h : h + 1;
        if (f32ToF16Bits(mid) !== (s | even)) expect(f32ToF16Bits(mid)).toBe(s | even);
        u32[0] = 0; f32[0] = mid;
        const mb = u32[0];
        const toZero = fromBits(mb - 1); // one f32 ulp closer to zero
        const away = fromBits(mb + 1);
        if (f32ToF16Bits(toZero) !== (s | h)) expect(f32ToF16Bits(toZero)).toBe(s | h);
        if (f32ToF16Bits(away) !== (s | (h + 1))) expect(f32ToF16Bits(away)).toBe(s | (h + 1));
      }
    }
  });

  it('matches an independent nearest-half oracle on random f32 bit patterns', () => {
    const rng = new Rng(7);
    for (let i = 0; i < 100_000; i++) {
      // bias the exponent to the interesting range 2^-30 .. 2^17
      const e = 97 + Math.floor(rng.next() * 47);
      const bits = ((rng.next() < 0.5 ? 0x80000000 : 0) | (e << 23) | Math.floor(rng.next() * 0x800000)) >>> 0;
      const x = fromBits(bits);
      const want = oracleHalf(x);
      if (f32ToF16Bits(x) !== want) expect([x, f32ToF16Bits(x)]).toEqual([x, want]);
    }
  });
});

describe('roundHalfEven', () => {
  it('ties to even, otherwise nearest', () => {
    const cases: [number, number][] = [
      [0.5, 0], [1.5, 2], [2.5, 2], [3.5, 4], [-1.5, -2], [-2.5, -2], [2.4999, 2], [2.5001, 3],
      [0, 0], [7, 7], [254.5, 254], [255.5, 256], [-0.4, 0],
    ];
    for (const [x, r] of cases) expect(roundHalfEven(x) === r, `roundHalfEven(${x})`).toBe(true);
  });
});

describe('quantizeGroup', () => {
  const deq = (g: { scaleBits: number; zeroBits: number; codes: Uint8Array }) =>
    Array.from(g.codes, (c) => c * f16BitsToF32(g.scaleBits) + f16BitsToF32(g.zeroBits));

  it('constant group: scale 0, codes 0, dequantizes to z, no NaN', () => {
    for (const bits of [2, 4, 8] as const) {
      const g = quantizeGroup([3, 3, 3, 3], bits);
      expect(g.scaleBits).toBe(0);
      expect(g.zeroBits).toBe(0x4200);
      expect(Array.from(g.codes)).toEqual([0, 0, 0, 0]);
      expect(deq(g)).toEqual([3, 3, 3, 3]);
      const h = quantizeGroup(new Float32Array([0.1, 0.1, 0.1]), bits);
      expect(h.scaleBits).toBe(0);
      expect(h.zeroBits).toBe(0x2e66);
      expect(deq(h).every((x) => x === f16BitsToF32(0x2e66))).toBe(true);
    }
  });

  it('scale below half precision flushes to 0 (codes 0)', () => {
    const g = quantizeGroup([1, 1 + 2 ** -23], 8); // range/255 ~ 4.7e-10 < 2^-25: half scale 0
    expect(quantizeGroup([1, 1 + 2 ** -23], 2).scaleBits).toBe(0x0001); // range/3 ~ 4e-8 rounds to 2^-24
    expect(g.scaleBits).toBe(0);
    expect(Array.from(g.codes)).toEqual([0, 0]);
  });

  it('2-bit group of 4, by hand', () => {
    const g = quantizeGroup([-1, 0, 0.5, 2], 2); // scale 1, zero -1, (x-z)/s = 0, 1, 1.5, 3
    expect(g.scaleBits).toBe(0x3c00);
    expect(g.zeroBits).toBe(0xbc00);
    expect(Array.from(g.codes)).toEqual([0, 1, 2, 3]); // 1.5 -> 2 (even)
    expect(deq(g)).toEqual([-1, 0, 1, 2]);
    const h = quantizeGroup([3, 0, 1, 2], 2);
    expect(Array.from(h.codes)).toEqual([3, 0, 1, 2]);
  });

  it('ties go to even', () => {
    const g = quantizeGroup([0, 0.5, 2.5, 3], 2); // scale 1, zero 0: 0, 0.5, 2.5, 3
    expect(Array.from(g.codes)).toEqual([0, 0, 2, 3]);
    const h = quantizeGroup([0, 1.5, 6], 4); // scale 6/15 = 0.4 -> half 0.39990234375; 1.5/s = 3.7509 -> 4
    expect(g.scaleBits).toBe(0x3c00);
    expect(Array.from(h.codes)).toEqual([0, 4, 15]);
    expect(f16BitsToF32(h.scaleBits)).toBe(0.39990234375);
  });

  it('8-bit identity and f32 arithmetic of the scale', () => {
    const vals = Array.from({ length: 256 }, (_, i) => i);
    const g = quantizeGroup(vals, 8);
    expect(g.scaleBits).toBe(0x3c00);
    expect(Array.from(g.codes)).toEqual(vals);
    // range computed in f32: mx - mn rounds, then / 3 rounds, then to half
    const a = Math.fround(1e-3);
    const b = Math.fround(5.7);
    const want = f32ToF16Bits(Math.fround(Math.fround(b - a) / 3));
    expect(quantizeGroup([b, a], 2).scaleBits).toBe(want);
  });

  it('zero rounded above the minimum clamps to code 0; random groups stay within s/2 + |z-mn|', () => {
    const x = Math.fround(0.3); // half(0.3) = 0.300048828125 > 0.3
    expect(f16BitsToF32(f32ToF16Bits(x)) > x).toBe(true);
    expect(quantizeGroup([x, 1], 2).codes[0]).toBe(0);
    const rng = new Rng(11);
    for (let i = 0; i < 2000; i++) {
      const bits = ([2, 4, 8] as const)[i % 3]!;
      const n = 1 + (i % 40);
      const vals = Float32Array.from({ length: n }, () => rng.normal() * (1 + 30 * rng.next()) + 5 * rng.normal());
      const g = quantizeGroup(vals, bits);
      const s = f16BitsToF32(g.scaleBits);
      const mn = Math.min(...vals);
      const z = f16BitsToF32(g.zeroBits);
      const d = deq(g);
      for (let j = 0; j < n; j++) {
        expect(g.codes[j]!).toBeLessThanOrEqual(2 ** bits - 1);
        expect(Math.abs(d[j]! - vals[j]!)).toBeLessThanOrEqual(s / 2 + Math.abs(z - mn) + s * 2 ** -10 + 1e-6);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Cache schedule

/** Expected listing of one stream built straight from the SPEC's canonical order, from the original inputs. */
function expectedListing(o: ReferenceOptions, inputs: Float32Array, quantized: number, grouping: 'channel' | 'token'): GroupListing {
  const { kvHeads: H, headDim: D, groupSize: G, sinkTokens: S } = o;
  const bits = o.bits as 2 | 4 | 8;
  const scales: number[] = [];
  const zeros: number[] = [];
  const codes: number[] = [];
  const at = (t: number, h: number, c: number) => inputs[((S + t) * H + h) * D + c]!;
  const push = (vals: number[]) => {
    const q = quantizeGroup(vals, bits);
    scales.push(q.scaleBits); zeros.push(q.zeroBits); codes.push(...q.codes);
  };
  if (grouping === 'channel') {
    for (let chunk = 0; chunk < quantized / G; chunk++) {
      for (let h = 0; h < H; h++) for (let c = 0; c < D; c++) push(Array.from({ length: G }, (_, t) => at(chunk * G + t, h, c)));
    }
  } else {
    const gv = Math.min(G, D);
    for (let t = 0; t < quantized; t++) {
      for (let h = 0; h < H; h++) for (let g = 0; g < D / gv; g++) push(Array.from({ length: gv }, (_, i) => at(t, h, g * gv + i)));
    }
  }
  return {
    grouping, groupLength: grouping === 'channel' ? G : Math.min(G, D),
    scales: Uint16Array.from(scales), zeros: Uint16Array.from(zeros), codes: Uint8Array.from(codes),
  };
}

/** Dequantized stream expected from a listing + the original inputs (sinks and residual exact). */
function expectedDequantized(o: ReferenceOptions, inputs: Float32Array, tokens: number, sinks: number, listing: GroupListing, quantized: number): Float64Array {
  const { kvHeads: H, headDim: D } = o;
  const out = Float64Array.from(inputs.subarray(0, tokens * H * D));
  const L = listing.groupLength;
  for (let gi = 0; gi < listing.scales.length; gi++) {
    const s = f16BitsToF32(listing.scales[gi]!);
    const z = f16BitsToF32(listing.zeros[gi]!);
    for (let j = 0; j < L; j++) {
      const code = listing.codes[gi * L + j]!;
      let t: number; let h: number; let c: number;
      if (listing.grouping === 'channel') {
        const perChunk = H * D;
        const chunk = Math.floor(gi / perChunk);
        h = Math.floor((gi % perChunk) / D); c = gi % D; t = chunk * L + j;
      } else {
        const perToken = H * (D / L);
        t = Math.floor(gi / perToken);
        h = Math.floor((gi % perToken) / (D / L)); c = ((gi % perToken) % (D / L)) * L + j;
      }
      expect(t).toBeLessThan(quantized);
      out[((sinks + t) * H + h) * D + c] = code * s + z;
    }
  }
  return out;
}

/** Runs a cache through the given append sizes, checking listings and dequantized contents after every append. */
type Check = (c: ReferenceCache, len: number, n: number, step: number, keys: Float32Array, values: Float32Array) => void;
function run(o: ReferenceOptions, sizes: number[], seed = 1, check?: Check) {
  const rng = new Rng(seed);
  const total = sizes.reduce((a, b) => a + b, 0);
  const w = o.kvHeads * o.headDim;
  const keys = syntheticKv(rng, total, o.kvHeads, o.headDim, 'keys');
  const values = syntheticKv(rng, total, o.kvHeads, o.headDim, 'values');
  const cache = new ReferenceCache(o);
  let len = 0;
  sizes.forEach((n, step) => {
    cache.append(0, keys.subarray(len * w, (len + n) * w), values.subarray(len * w, (len + n) * w));
    len += n;
    const st = cache.stats(0);
    expect(st.tokens).toBe(len);
    expect(st.sinkTokens).toBe(Math.min(len, o.sinkTokens));
    expect(st.sinkTokens + st.quantizedKeys + st.residualKeys).toBe(len);
    expect(st.sinkTokens + st.quantizedValues + st.residualValues).toBe(len);
    // Attention right after an append sees the appended tokens in full precision.
    expect(st.residualKeys).toBeGreaterThanOrEqual(Math.min(n, len - st.sinkTokens));
    expect(st.residualValues).toBeGreaterThanOrEqual(Math.min(n, len - st.sinkTokens));
    // Full-precision memory bounded by R + n (sinks aside; for R = 0 a partial G-chunk of keys may wait).
    if (o.bits !== 32) {
      expect(st.residualKeys).toBeLessThanOrEqual(Math.max(o.residual, o.groupSize - 1) + n);
      expect(st.residualValues).toBeLessThanOrEqual(Math.max(o.residual, o.groupSize - 1) + n);
    }
    const kg = cache.keyGroups(0);
    const vg = cache.valueGroups(0);
    if (o.bits === 32) {
      expect(st.quantizedKeys + st.quantizedValues).toBe(0);
      expect(kg.scales.length + kg.codes.length + vg.scales.length + vg.codes.length).toBe(0);
    } else {
      expect(kg).toEqual(expectedListing(o, keys, st.quantizedKeys, o.keyGrouping));
      expect(vg).toEqual(expectedListing(o, values, st.quantizedValues, o.valueGrouping));
    }
    expect(cache.dequantizedKeys(0)).toEqual(expectedDequantized(o, keys, len, st.sinkTokens, kg, st.quantizedKeys));
    expect(cache.dequantizedValues(0)).toEqual(expectedDequantized(o, values, len, st.sinkTokens, vg, st.quantizedValues));
    check?.(cache, len, n, step, keys, values);
  });
  return { cache, keys, values };
}

const decode = (prefill: number, steps: number) => [prefill, ...Array<number>(steps).fill(1)];

describe('flush schedule (SPEC "When tokens are quantized")', () => {
  it('prefill then decode leaves T mod R keys and R values unquantized (plus the new token)', () => {
    const R = 8;
    for (const T of [1, 5, 8, 13, 21, 24]) {
      run(opts({ residual: R, groupSize: 4 }), decode(T, 12), T, (c, len, n, step) => {
        const st = c.stats(0);
        if (step === 0) {
          expect([st.residualKeys, st.residualValues]).toEqual([T, T]); // prefill attends exactly
        } else if (step === 1) {
          expect(st.residualKeys).toBe(T >= R ? (T % R) + 1 : T + 1);
          expect(st.residualValues).toBe(Math.min(T, R) + 1);
        }
        if (step >= 1) {
          expect(st.residualKeys).toBeGreaterThanOrEqual(1);
          expect(st.residualKeys).toBeLessThanOrEqual(R);
          expect(st.residualValues).toBe(Math.min(len, R + 1));
          expect(st.quantizedKeys % R).toBe(0);
        }
      });
    }
  });

  it('one-token decode from empty: key residual ((len-1) mod R)+1 in 1..R, value residual min(len, R+1)', () => {
    const R = 8;
    run(opts({ residual: R, groupSize: 4 }), decode(1, 40), 2, (c, len) => {
      const st = c.stats(0);
      expect(st.residualKeys).toBe(((len - 1) % R) + 1);
      expect(st.residualValues).toBe(Math.min(len, R + 1));
    });
  });

  it('R = 0: prefill exact, then every whole G chunk of keys and every value is quantized', () => {
    const G = 4;
    run(opts({ residual: 0, groupSize: G }), decode(10, 9), 3, (c, len, n, step) => {
      const st = c.stats(0);
      if (step === 0) expect([st.residualKeys, st.residualValues]).toEqual([10, 10]);
      else {
        expect(st.residualKeys).toBe(((len - 1) % G) + 1); // (len-1) rounded down to G quantized, + new token
        expect(st.quantizedKeys).toBe(Math.floor((len - 1) / G) * G);
        expect(st.residualValues).toBe(1);
      }
    });
  });

  it('mixed append sizes keep every invariant (chunked, sliding, ablations, 4 and 8 bits)', () => {
    const sizes = [3, 1, 7, 1, 1, 16, 2, 1, 1, 1, 9, 1];
    run(opts({ bits: 4, residual: 8, groupSize: 4 }), sizes, 4);
    run(opts({ bits: 8, residual: 16, groupSize: 8, headDim: 16 }), sizes, 5);
    run(opts({ residual: 8, groupSize: 4, keyWindow: 'sliding' }), sizes, 6);
    run(opts({ residual: 8, groupSize: 4, keyGrouping: 'token', valueGrouping: 'channel' }), sizes, 7);
    run(opts({ residual: 0, groupSize: 4, sinkTokens: 2 }), sizes, 8);
    run(opts({ residual: 16, groupSize: 16, headDim: 8 }), [16, 1, 30, 1, 1], 9); // gv = min(G, D) = 8
  });

  it('sinks: first S tokens stay f32 forever, outside the window; key groups start after them', () => {
    const S = 3;
    const R = 8;
    const o = opts({ residual: R, groupSize: 4, sinkTokens: S });
    run(o, decode(1, 40), 10, (c, len, _n, _step, keys, values) => {
      const st = c.stats(0);
      expect(st.sinkTokens).toBe(Math.min(len, S));
      const m = len - st.sinkTokens;
      if (m > 0) {
        expect(st.residualKeys).toBe(((m - 1) % R) + 1);
        expect(st.residualValues).toBe(Math.min(m, R + 1));
      }
      const w = o.kvHeads * o.headDim;
      const sk = c.dequantizedKeys(0).subarray(0, st.sinkTokens * w);
      expect(Array.from(sk)).toEqual(Array.from(keys.subarray(0, st.sinkTokens * w)));
      const sv = c.dequantizedValues(0).subarray(0, st.sinkTokens * w);
      expect(Array.from(sv)).toEqual(Array.from(values.subarray(0, st.sinkTokens * w)));
    });
    // appends straddling the sink boundary
    run(o, [2, 3, 1, 20, 1, 1], 11, (c, len) => {
      const st = c.stats(0);
      expect(st.sinkTokens).toBe(Math.min(len, S));
      if (len === 5) expect([st.residualKeys, st.residualValues]).toEqual([2, 2]);
    });
  });

  it("sliding window: attention sees R-G+1..R keys in f32 once the window is full", () => {
    const R = 12;
    const G = 4;
    run(opts({ residual: R, groupSize: G, keyWindow: 'sliding' }), decode(1, 40), 12, (c, len) => {
      const st = c.stats(0);
      if (len <= R) expect(st.residualKeys).toBe(len);
      else {
        expect(st.residualKeys).toBeGreaterThanOrEqual(R - G + 1);
        expect(st.residualKeys).toBeLessThanOrEqual(R);
      }
      expect(st.quantizedKeys % G).toBe(0);
      expect(st.residualValues).toBe(Math.min(len, R + 1));
    });
    // prefill then decode: the first decode flush quantizes G at a time down to below R
    run(opts({ residual: R, groupSize: G, keyWindow: 'sliding' }), decode(30, 3), 13, (c, len, n, step) => {
      if (step === 1) expect(c.stats(0).residualKeys).toBe(30 - Math.ceil((30 - R + 1) / G) * G + 1);
    });
  });

  it('bits 32 quantizes nothing', () => {
    run(opts({ bits: 32, residual: 8, groupSize: 4 }), decode(20, 10), 14, (c, len) => {
      const st = c.stats(0);
      expect(st.quantizedKeys).toBe(0);
      expect(st.quantizedValues).toBe(0);
      expect(st.residualKeys).toBe(len);
    });
  });

  it('ablation groupings follow the other schedule', () => {
    const R = 8;
    const G = 4;
    run(opts({ residual: R, groupSize: G, keyGrouping: 'token', valueGrouping: 'channel' }), decode(1, 30), 15, (c, len) => {
      const st = c.stats(0);
      expect(st.residualKeys).toBe(Math.min(len, R + 1)); // keys per token: values' schedule
      expect(st.residualValues).toBe(((len - 1) % R) + 1); // values per channel: keys' chunked schedule
      const kg = c.keyGroups(0);
      expect([kg.grouping, kg.groupLength]).toEqual(['token', 4]);
      expect(c.valueGroups(0).grouping).toBe('channel');
    });
  });

  it('default listings: keys per channel (G), values per token (min(G, D))', () => {
    const { cache } = run(opts({ residual: 8, groupSize: 4 }), [20, 1]);
    const kg = cache.keyGroups(0);
    const vg = cache.valueGroups(0);
    expect([kg.grouping, kg.groupLength, kg.scales.length]).toEqual(['channel', 4, 4 * 2 * 8]); // 16 keys = 4 chunks
    expect([vg.grouping, vg.groupLength, vg.scales.length]).toEqual(['token', 4, 12 * 2 * 2]); // 12 values
    expect(kg.codes.length).toBe(kg.scales.length * 4);
  });
});

// ---------------------------------------------------------------------------------------------
// Attention

/** Direct float64 attention, no max subtraction, one (query, head) at a time. */
function direct(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, visible: number, H: number, kvh: number, D: number, scale: number): number[] {
  const e: number[] = [];
  for (let t = 0; t < visible; t++) {
    let dot = 0;
    for (let c = 0; c < D; c++) dot += q[c]! * k[(t * H + kvh) * D + c]!;
    e.push(Math.exp(scale * dot));
  }
  const sum = e.reduce((a, b) => a + b, 0);
  const out = new Array<number>(D).fill(0);
  for (let t = 0; t < visible; t++) for (let c = 0; c < D; c++) out[c]! += (e[t]! / sum) * v[(t * H + kvh) * D + c]!;
  return out;
}

describe('attention', () => {
  it('split-K (ranges folded in order, SPEC.md) is the same softmax: it equals attentionF64 to float64 rounding', () => {
    const rng = new Rng(77);
    for (const [N, qTokens, sinks, L] of [[1000, 1, 0, 256], [1000, 9, 3, 256], [700, 700, 4, 64], [33, 2, 0, 32], [300, 1, 1, 32]] as const) {
      const k = syntheticKv(rng, N, 2, 16, 'keys');
      const v = syntheticKv(rng, N, 2, 16, 'values');
      const q = syntheticKv(rng, qTokens, 4, 16, 'queries').map((x) => 3 * x); // peaked softmax: ranges differ in max
      const want = attentionF64(q, k, v, N, qTokens, 4, 2, 16);
      const got = attentionSplitF64(q, k, v, N, qTokens, 4, 2, 16, sinks, L);
      expect(relativeL2(got, want), `N ${N}, ${qTokens} queries, ${sinks} sinks, L ${L}`).toBeLessThan(1e-13);
    }
  });

  it('an exact f32 cache (bits 32, or right after a prefill) equals a direct float64 softmax', () => {
    const o = opts({ headDim: 16, kvHeads: 2, queryHeads: 2, residual: 8, groupSize: 4 });
    for (const bits of [32, 2] as const) {
      const rng = new Rng(20 + bits);
      const N = 24;
      const k = syntheticKv(rng, N, 2, 16, 'keys');
      const v = syntheticKv(rng, N, 2, 16, 'values');
      const q = syntheticKv(rng, 1, 2, 16, 'queries');
      const c = new ReferenceCache({ ...o, bits });
      c.append(0, k, v); // a single prefill: nothing quantized yet
      for (const scale of [undefined, 0.05]) {
        const out = c.attend(0, q, scale);
        for (let h = 0; h < 2; h++) {
          const want = direct(q.subarray(h * 16, h * 16 + 16), k, v, N, 2, h, 16, scale ?? 1 / 4);
          for (let d = 0; d < 16; d++) expect(out[h * 16 + d]!).toBeCloseTo(want[d]!, 12);
        }
      }
    }
  });

  it('attend equals attentionF64 over the dequantized cache, and max-subtraction survives huge scores', () => {
    const o = opts({ bits: 2, headDim: 8, kvHeads: 2, queryHeads: 4, residual: 8, groupSize: 4 });
    const { cache } = run(o, decode(20, 5), 21);
    const q = syntheticKv(new Rng(3), 2, 4, 8, 'queries');
    const len = cache.stats(0).tokens;
    expect(cache.attend(0, q)).toEqual(attentionF64(q, cache.dequantizedKeys(0), cache.dequantizedValues(0), len, 2, 4, 2, 8));
    const big = cache.attend(0, q, 1e4);
    expect(big.every(Number.isFinite)).toBe(true);
  });

  it('causal masking: query i of q equals a single query over the first len-q+i+1 tokens', () => {
    const H = 2; const Hq = 4; const D = 8;
    const o = opts({ bits: 4, kvHeads: H, queryHeads: Hq, headDim: D, residual: 8, groupSize: 4 });
    const { cache } = run(o, [13, 1, 1, 6], 22);
    const len = cache.stats(0).tokens;
    const qT = 6;
    const q = syntheticKv(new Rng(5), qT, Hq, D, 'queries');
    const out = cache.attend(0, q);
    const K = cache.dequantizedKeys(0);
    const V = cache.dequantizedValues(0);
    for (let i = 0; i < qT; i++) {
      const vis = len - qT + i + 1;
      const one = attentionF64(q.subarray(i * Hq * D, (i + 1) * Hq * D), K.subarray(0, vis * H * D), V.subarray(0, vis * H * D), vis, 1, Hq, H, D);
      expect(Array.from(out.subarray(i * Hq * D, (i + 1) * Hq * D))).toEqual(Array.from(one));
    }
    // and the last query sees everything: different from the first unless by accident
    expect(relativeL2(out.subarray(0, Hq * D), out.subarray((qT - 1) * Hq * D)) > 0).toBe(true);
  });

  it('GQA: query head h reads kv head floor(h / (Hq/Hkv))', () => {
    const H = 2; const Hq = 6; const D = 4; const N = 9;
    const rng = new Rng(23);
    const k = syntheticKv(rng, N, H, D, 'keys');
    const v = syntheticKv(rng, N, H, D, 'values');
    const q = syntheticKv(rng, 1, Hq, D, 'queries');
    const out = attentionF64(q, k, v, N, 1, Hq, H, D);
    for (let h = 0; h < Hq; h++) {
      const kvh = Math.floor(h / 3);
      const want = direct(q.subarray(h * D, h * D + D), k, v, N, H, kvh, D, 1 / 2);
      for (let d = 0; d < D; d++) expect(out[h * D + d]!).toBeCloseTo(want[d]!, 12);
      const other = direct(q.subarray(h * D, h * D + D), k, v, N, H, 1 - kvh, D, 1 / 2);
      expect(relativeL2(Array.from(out.subarray(h * D, h * D + D)), other)).toBeGreaterThan(1e-3);
    }
  });

  it('sanity on outlier data: error ordered 8 < 4 < 2 bits, and per-channel keys beat per-token keys (the paper)', () => {
    const H = 2; const Hq = 4; const D = 32; const N = 160;
    const rng = new Rng(24);
    const k = syntheticKv(rng, N, H, D, 'keys');
    const v = syntheticKv(rng, N, H, D, 'values');
    const q = syntheticKv(rng, 4, Hq, D, 'queries');
    const exact = attentionF64(q, k, v, N, 4, Hq, H, D);
    const err = (o: Partial<ReferenceOptions>) => {
      const c = new ReferenceCache(opts({ kvHeads: H, queryHeads: Hq, headDim: D, groupSize: 32, residual: 32, ...o }));
      for (let t = 0; t < N; t++) c.append(0, k.subarray(t * H * D, (t + 1) * H * D), v.subarray(t * H * D, (t + 1) * H * D));
      return relativeL2(c.attend(0, q), exact);
    };
    const [e8, e4, e2] = ([8, 4, 2] as const).map((bits) => err({ bits }));
    expect(e8!).toBeLessThan(0.02);
    expect(e8!).toBeLessThan(e4!);
    expect(e4!).toBeLessThan(e2!);
    expect(e2!).toBeLessThan(1);
    const perTokenKeys = err({ bits: 2, keyGrouping: 'token' });
    expect(e2!).toBeLessThan(perTokenKeys);
  });
});

describe('helpers', () => {
  it('relativeL2', () => {
    expect(relativeL2([1, 2, 2], [1, 2, 2])).toBe(0);
    expect(relativeL2([0, 0, 3], [0, 0, 4])).toBe(0.25);
  });

  it('Rng is seeded and in range; syntheticKv has fixed outlier channels and no zeros', () => {
    const a = new Rng(42); const b = new Rng(42);
    for (let i = 0; i < 1000; i++) {
      const x = a.next();
      expect(x).toBe(b.next());
      expect(x >= 0 && x < 1).toBe(true);
    }
    const rng = new Rng(99);
    const H = 2; const D = 16; const N = 400;
    const k1 = syntheticKv(rng, N, H, D, 'keys');
    const k2 = syntheticKv(rng, N, H, D, 'keys');
    expect(k1.every((x) => x !== 0 && Number.isFinite(x) && Math.abs(x) <= 65504)).toBe(true);
    const meanAbs = (k: Float32Array, h: number, c: number) => {
      let s = 0;
      for (let t = 0; t < N; t++) s += Math.abs(k[(t * H + h) * D + c]!);
      return s / N;
    };
    for (let h = 0; h < H; h++) {
      const out1 = Array.from({ length: D }, (_, c) => meanAbs(k1, h, c) > 4);
      const out2 = Array.from({ length: D }, (_, c) => meanAbs(k2, h, c) > 4);
      const count = out1.filter(Boolean).length;
      expect(count).toBeGreaterThanOrEqual(2);
      expect(count).toBeLessThanOrEqual(4);
      expect(out2).toEqual(out1); // same channels across calls with the same Rng
    }
    const forced = syntheticKv(new Rng(1), N, H, D, 'keys', [5, 11]);
    for (let h = 0; h < H; h++) {
      const big = Array.from({ length: D }, (_, c) => meanAbs(forced, h, c) > 4);
      expect(big.flatMap((b, c) => (b ? [c] : []))).toEqual([5, 11]);
    }
    const vals = syntheticKv(new Rng(2), N, H, D, 'values');
    expect(vals.every((x) => x !== 0 && Math.abs(x) < 10)).toBe(true);
  });
});

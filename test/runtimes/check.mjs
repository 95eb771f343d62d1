// The check every runtime of the matrix runs (test/runtimes/run.mjs): Node 20 (ESM and CommonJS),
// Node 22 and 24, Deno, Bun and workerd all import this file and call runCheck() with the `Kivi` of
// the installed package. It uses no runtime API beyond the language (no fs, no process), so it runs
// unchanged in a Worker; reference.ts runs the same workload on the float64 ReferenceCache.
// The workload runs with the default threads ('auto': the worker pool where the runtime has threads)
// and again on one thread: the outputs must be the same bits. Where the runtime has a Float16Array,
// the same workload fed as halves must give the same bits as f32 holding those values.
//
// Inputs come from a tiny seeded PRNG with exact arithmetic only (32-bit integer steps, sums of
// dyadic fractions, multiplications by powers of two): no Math.log/sin, whose last bits may differ
// between engines, so every runtime feeds bit-identical keys, values and queries.

export const SHAPE = { layers: 2, kvHeads: 4, queryHeads: 8, headDim: 64, bits: 2, groupSize: 32, residual: 32 };
export const PREFILL = 100;
export const DECODE = 40;
/** A second, long prompt into layer 0, so that decode steps are large enough to run on the pool. */
export const LONG_PROMPT = 1200;
export const LONG_DECODE = 4;
export const SEED = 0x6b697669; // 'kivi'

/** mulberry32: 32-bit state, uniform numbers in [0, 1) with 32 bits each (exact in a double). */
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** [n][heads][D] numbers, roughly normal (a sum of four uniforms); keys get a per-channel offset and
 *  two outlier channels (×8), as real post-RoPE keys have. */
function tensor(next, n, heads, D, kind) {
  const out = new Float32Array(n * heads * D);
  for (let t = 0; t < n; t++) {
    for (let h = 0; h < heads; h++) {
      for (let c = 0; c < D; c++) {
        let x = next() + next() + next() + next() - 2; // [-2, 2), mean 0
        if (kind === 'keys') {
          x += ((c * 37 + h * 11) % 16) / 16 - 0.5; // channel offset
          if (c === 5 || c === 42) x *= 8;
        }
        out[(t * heads + h) * D + c] = x;
      }
    }
  }
  return out;
}

/** Appends a prefill of PREFILL tokens to every layer and attends all its queries (causal), then
 *  DECODE single-token steps (append, attend). Works on a KiviCache and on the ReferenceCache:
 *  both have append(layer, keys, values) and attend(layer, queries) returning the outputs. */
export function runWorkload(cache, convert = (x) => x) {
  const { layers, kvHeads, queryHeads, headDim } = SHAPE;
  const uniform = mulberry32(SEED);
  const next = uniform;
  const outputs = [];
  const tensorOf = (n, heads, kind) => convert(tensor(next, n, heads, headDim, kind));
  for (let layer = 0; layer < layers; layer++) {
    cache.append(layer, tensorOf(PREFILL, kvHeads, 'keys'), tensorOf(PREFILL, kvHeads, 'values'));
    outputs.push(cache.attend(layer, tensorOf(PREFILL, queryHeads, 'queries')));
  }
  for (let step = 0; step < DECODE; step++) {
    for (let layer = 0; layer < layers; layer++) {
      cache.append(layer, tensorOf(1, kvHeads, 'keys'), tensorOf(1, kvHeads, 'values'));
      outputs.push(cache.attend(layer, tensorOf(1, queryHeads, 'queries')));
    }
  }
  cache.append(0, tensorOf(LONG_PROMPT, kvHeads, 'keys'), tensorOf(LONG_PROMPT, kvHeads, 'values'));
  for (let step = 0; step < LONG_DECODE; step++) {
    cache.append(0, tensorOf(1, kvHeads, 'keys'), tensorOf(1, kvHeads, 'values'));
    outputs.push(cache.attend(0, tensorOf(1, queryHeads, 'queries')));
  }
  const total = outputs.reduce((sum, o) => sum + o.length, 0);
  const all = new Float64Array(total);
  let at = 0;
  for (const o of outputs) {
    all.set(o, at);
    at += o.length;
  }
  return all;
}

/** Little-endian bytes of a typed array as base64 (every runtime here has btoa). */
export function toBase64(array) {
  const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function runtimeName() {
  if (typeof globalThis.Deno !== 'undefined') return `deno ${globalThis.Deno.version.deno}`;
  if (typeof globalThis.Bun !== 'undefined') return `bun ${globalThis.Bun.version}`;
  // Before `process`: workerd defines process.versions.node for its Node.js compatibility.
  if (typeof navigator !== 'undefined' && navigator.userAgent === 'Cloudflare-Workers') return 'workerd';
  if (typeof globalThis.process !== 'undefined' && globalThis.process.versions?.node) return `node ${globalThis.process.versions.node}`;
  return typeof navigator !== 'undefined' ? navigator.userAgent : 'unknown';
}

/** f32 numbers rounded to halves and widened back (the values a half input holds), through Float16Array. */
function throughHalves(x) {
  return new Float32Array(new globalThis.Float16Array(x));
}

async function loadAndRun(Kivi, options, convert) {
  const kivi = await Kivi.load(options);
  const cache = kivi.createCache(SHAPE);
  try {
    return { variant: kivi.variant, threads: kivi.threads, threadsReason: kivi.threadsReason, output: toBase64(new Float32Array(runWorkload(cache, convert))) };
  } finally {
    cache.dispose();
    kivi.close();
  }
}

/**
 * `Kivi`: the class the package exports here. `scalarModule`: the scalar build as bytes or a
 * WebAssembly.Module (from kivi-wasm/kivi.scalar.wasm), to check `Kivi.load({ module })` too.
 * Returns the build `Kivi.load()` picked and the workload's outputs (f32, base64) for both loads;
 * an error is returned, not thrown, so that the runner can print it.
 */
export async function runCheck(Kivi, scalarModule) {
  const result = { runtime: runtimeName() };
  try {
    const auto = await loadAndRun(Kivi);
    result.variant = auto.variant;
    result.threads = auto.threads;
    result.threadsReason = auto.threadsReason;
    result.output = auto.output;
    const two = await Kivi.load({ threads: 2 });
    result.askedTwo = { threads: two.threads, reason: two.threadsReason };
    two.close();
    const single = await loadAndRun(Kivi, { threads: 1 });
    result.singleThreadSameBits = single.output === auto.output && single.threads === 1;
    if (typeof globalThis.Float16Array === 'function') {
      const halves = await loadAndRun(Kivi, {}, (x) => new globalThis.Float16Array(x));
      const widened = await loadAndRun(Kivi, {}, throughHalves);
      result.float16 = halves.output === widened.output ? 'same bits as f32' : 'different bits';
    } else {
      result.float16 = 'no Float16Array';
    }
    const given = await loadAndRun(Kivi, { module: scalarModule });
    result.moduleVariant = given.variant;
    result.moduleOutput = given.output;
  } catch (error) {
    result.error = String(error && error.stack ? error.stack : error);
  }
  return result;
}

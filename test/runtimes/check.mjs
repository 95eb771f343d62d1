// The check every runtime of the matrix runs (test/runtimes/run.mjs): Node 20 (ESM and CommonJS),
// Node 22 and 24, Deno, Bun and workerd all import this file and call runCheck() with the `Kivi` of
// the installed package. It uses no runtime API beyond the language (no fs, no process), so it runs
// unchanged in a Worker; reference.ts runs the same workload on the float64 ReferenceCache.
//
// Inputs come from a tiny seeded PRNG with exact arithmetic only (32-bit integer steps, sums of
// dyadic fractions, multiplications by powers of two): no Math.log/sin, whose last bits may differ
// between engines, so every runtime feeds bit-identical keys, values and queries.

export const SHAPE = { layers: 2, kvHeads: 4, queryHeads: 8, headDim: 64, bits: 2, groupSize: 32, residual: 32 };
export const PREFILL = 100;
export const DECODE = 40;
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
export function runWorkload(cache) {
  const { layers, kvHeads, queryHeads, headDim } = SHAPE;
  const next = mulberry32(SEED);
  const outputs = [];
  for (let layer = 0; layer < layers; layer++) {
    cache.append(layer, tensor(next, PREFILL, kvHeads, headDim, 'keys'), tensor(next, PREFILL, kvHeads, headDim, 'values'));
    outputs.push(cache.attend(layer, tensor(next, PREFILL, queryHeads, headDim, 'queries')));
  }
  for (let step = 0; step < DECODE; step++) {
    for (let layer = 0; layer < layers; layer++) {
      cache.append(layer, tensor(next, 1, kvHeads, headDim, 'keys'), tensor(next, 1, kvHeads, headDim, 'values'));
      outputs.push(cache.attend(layer, tensor(next, 1, queryHeads, headDim, 'queries')));
    }
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

async function loadAndRun(Kivi, options) {
  const kivi = await Kivi.load(options);
  const cache = kivi.createCache(SHAPE);
  try {
    return { variant: kivi.variant, output: toBase64(new Float32Array(runWorkload(cache))) };
  } finally {
    cache.dispose();
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
    result.output = auto.output;
    const given = await loadAndRun(Kivi, { module: scalarModule });
    result.moduleVariant = given.variant;
    result.moduleOutput = given.output;
  } catch (error) {
    result.error = String(error && error.stack ? error.stack : error);
  }
  return result;
}

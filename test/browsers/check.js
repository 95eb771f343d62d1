// THE browser check, shared verbatim by the plain page (served as /check.js), the Vite app (bundled)
// and the Node runner (which runs it against Node's own kivi-wasm and replays the same inputs on
// the float64 reference). Plain ES2022, no imports: it gets the `Kivi` class from its caller.

/** Shapes of the check (the brief: 2 layers, 4 kv heads, 8 query heads, D 64, KIVI-2, G 32, R 32). */
export const SHAPE = Object.freeze({
  layers: 2, kvHeads: 4, queryHeads: 8, headDim: 64,
  bits: 2, groupSize: 32, residual: 32,
  prefill: 100, decode: 20, seed: 0x4b495649, // "KIVI"
});

/** Cache options as given to kivi.createCache (and, with defaults filled in, to the reference). */
export const CACHE_OPTIONS = Object.freeze({
  layers: SHAPE.layers, kvHeads: SHAPE.kvHeads, queryHeads: SHAPE.queryHeads, headDim: SHAPE.headDim,
  bits: SHAPE.bits, groupSize: SHAPE.groupSize, residual: SHAPE.residual,
});

/** mulberry32: uniform in [0, 1) from integer arithmetic only (identical in every engine). */
function mulberry32(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Box-Muller normals. Math.log/sqrt/cos/sin may differ between engines in the last bit; the
 *  numbers are rounded to f32 and the runner compares a hash of every browser's inputs with
 *  Node's, so a difference would be reported (it would make the comparison meaningless). */
function normals(next) {
  let spare;
  return () => {
    if (spare !== undefined) { const s = spare; spare = undefined; return s; }
    const u1 = 1 - next(); // (0, 1]
    const u2 = next();
    const r = Math.sqrt(-2 * Math.log(u1));
    spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  };
}

/** Every input of the check, in the order it is used: per layer, prefill keys/values/queries, then
 *  per decode step one key/value/query token. Keys have 3 outlier channels per kv head (10-20x, offset
 *  a few sigmas), like real post-RoPE keys; nothing is zero. */
export function makeInputs(shape = SHAPE) {
  const { layers, kvHeads, queryHeads, headDim: D, prefill, decode, seed } = shape;
  const next = mulberry32(seed);
  const normal = normals(next);
  const outliers = [];
  for (let h = 0; h < kvHeads; h++) {
    const set = new Set();
    while (set.size < 3) set.add(Math.floor(next() * D));
    outliers.push([...set].map((channel) => {
      const scale = 10 + 10 * next();
      return { channel, scale, offset: (next() < 0.5 ? -1 : 1) * scale * (0.5 + next()) };
    }));
  }
  const draw = (n, heads, kind) => {
    const out = new Float32Array(n * heads * D);
    for (let t = 0; t < n; t++) {
      for (let h = 0; h < heads; h++) {
        const base = (t * heads + h) * D;
        for (let c = 0; c < D; c++) {
          let x = 0;
          while (x === 0) x = Math.fround(normal());
          out[base + c] = x;
        }
        if (kind === 'keys') {
          for (const { channel, scale, offset } of outliers[h]) {
            const x = Math.fround(out[base + channel] * scale + offset);
            out[base + channel] = x !== 0 ? x : Math.fround(offset);
          }
        }
      }
    }
    return out;
  };
  const perLayer = [];
  for (let l = 0; l < layers; l++) {
    const layer = {
      prefill: { keys: draw(prefill, kvHeads, 'keys'), values: draw(prefill, kvHeads, 'values'), queries: draw(3, queryHeads, 'queries') },
      steps: [],
      final3: null,
    };
    for (let s = 0; s < decode; s++) {
      layer.steps.push({ keys: draw(1, kvHeads, 'keys'), values: draw(1, kvHeads, 'values'), queries: draw(1, queryHeads, 'queries') });
    }
    layer.final3 = draw(3, queryHeads, 'queries');
    perLayer.push(layer);
  }
  return perLayer;
}

/** FNV-1a over the bytes of every input array (hex): proves that two engines drew the same inputs. */
export function hashInputs(inputs) {
  let h = 0x811c9dc5;
  const eat = (a) => {
    const b = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 0x01000193);
  };
  for (const layer of inputs) {
    eat(layer.prefill.keys); eat(layer.prefill.values); eat(layer.prefill.queries);
    for (const s of layer.steps) { eat(s.keys); eat(s.values); eat(s.queries); }
    eat(layer.final3);
  }
  return (h >>> 0).toString(16).padStart(8, '0');
}

/** The sequence of operations, on any cache-like object with append(layer, k, v) and
 *  attend(layer, q) -> Float32Array | Float64Array (copied at once). Returns { name: output } in a fixed order:
 *  per layer, 3 queries over the prefill (chunked-prefill style), one 1-query decode attend after
 *  each decode append (the residual of R = 32 is flushed along the way), then 1 and 3 queries over
 *  all 120 tokens. */
export function runOps(cache, inputs) {
  const outputs = {};
  inputs.forEach((layer, l) => {
    cache.append(l, layer.prefill.keys, layer.prefill.values);
    outputs[`L${l} prefill q3`] = cache.attend(l, layer.prefill.queries).slice();
    layer.steps.forEach((s, i) => {
      cache.append(l, s.keys, s.values);
      outputs[`L${l} decode ${i} q1`] = cache.attend(l, s.queries).slice();
    });
    const qw = layer.final3.length / 3;
    outputs[`L${l} final q1`] = cache.attend(l, layer.final3.subarray(2 * qw)).slice();
    outputs[`L${l} final q3`] = cache.attend(l, layer.final3).slice();
  });
  return outputs;
}

/** What the runtime validates, independently of the package: a function returning a v128 constant
 *  (SIMD128), and one applying i8x16.relaxed_swizzle to two (relaxed SIMD). */
export function probeWasm() {
  const v128 = (n) => [0xfd, 0x0c, ...new Array(16).fill(n)];
  const module = (body) => new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b, // type: () -> v128
    0x03, 0x02, 0x01, 0x00, // one function of that type
    0x0a, body.length + 4, 0x01, body.length + 2, 0x00, ...body, 0x0b, // code: one body (no locals, instructions, end)
  ]);
  const validate = (bytes) => { try { return WebAssembly.validate(bytes); } catch { return false; } };
  return {
    simd: validate(module(v128(1))),
    relaxedSimd: validate(module([...v128(1), ...v128(2), 0xfd, 0x80, 0x02])), // i8x16.relaxed_swizzle = 0xfd 256
  };
}

/** A long prompt and a few decode steps (large enough to run on the worker pool), with the default
 *  threads and with one: how many ran, why not more, and whether both gave the same bits. */
async function threadsProbe(Kivi) {
  const shape = { layers: 1, kvHeads: 2, queryHeads: 8, headDim: 64, bits: 2 };
  const run = async (options) => {
    const next = mulberry32(0x7468);
    const draw = (n, heads) => Float32Array.from({ length: n * heads * shape.headDim }, () => next() + next() - 1);
    const kivi = await Kivi.load(options);
    const cache = kivi.createCache(shape);
    const outputs = [];
    cache.append(0, draw(1500, 2), draw(1500, 2));
    outputs.push(cache.attend(0, draw(4, 8)));
    for (let i = 0; i < 3; i++) {
      cache.append(0, draw(1, 2), draw(1, 2));
      outputs.push(cache.attend(0, draw(1, 8)));
    }
    const info = { threads: kivi.threads, reason: kivi.threadsReason };
    kivi.close();
    return { info, bits: outputs.flatMap((o) => Array.from(new Uint32Array(o.buffer, o.byteOffset, o.length))) };
  };
  const auto = await run(undefined);
  const one = await run({ threads: 1 });
  return { count: auto.info.threads, reason: auto.info.reason, sameBits: auto.bits.length === one.bits.length && auto.bits.every((b, i) => b === one.bits[i]) };
}

/** THE check, against the given Kivi class: Kivi.load() (auto) and every build the runtime can
 *  load explicitly. Returns plain JSON-able data (outputs as number arrays). Never throws: errors
 *  are reported in `error`. */
export async function runCheck(Kivi, { allBuilds = true } = {}) {
  const t0 = (globalThis.performance ?? Date).now();
  const env = {
    userAgent: globalThis.navigator?.userAgent ?? null,
    crossOriginIsolated: globalThis.crossOriginIsolated ?? null,
    inWorker: typeof globalThis.WorkerGlobalScope === 'function' && globalThis instanceof globalThis.WorkerGlobalScope,
    hardwareConcurrency: globalThis.navigator?.hardwareConcurrency ?? null,
    sharedArrayBuffer: typeof globalThis.SharedArrayBuffer === 'function',
    validates: probeWasm(),
  };
  try {
    const inputs = makeInputs();
    const inputHash = hashInputs(inputs);
    const runOne = async (variant) => {
      const kivi = await Kivi.load(variant === 'auto' ? undefined : { variant });
      const cache = kivi.createCache(CACHE_OPTIONS);
      try {
        const outs = runOps(cache, inputs);
        const outputs = {};
        for (const [k, v] of Object.entries(outs)) outputs[k] = Array.from(v);
        const stats = [];
        for (let l = 0; l < SHAPE.layers; l++) {
          const s = cache.stats(l);
          stats.push({ tokens: s.tokens, quantizedKeys: s.quantizedKeys, residualKeys: s.residualKeys, quantizedValues: s.quantizedValues, residualValues: s.residualValues });
        }
        return { variant: kivi.variant, outputs, stats };
      } finally {
        cache.dispose();
      }
    };
    const auto = await runOne('auto');
    const threads = await threadsProbe(Kivi);
    const builds = {};
    if (allBuilds) {
      for (const name of ['relaxed-simd', 'simd', 'scalar']) {
        try {
          const r = await runOne(name); // (a fresh instance even for the auto build)
          builds[name] = { outputs: r.outputs, stats: r.stats };
        } catch (e) {
          builds[name] = { error: String(e?.message ?? e) };
        }
      }
    }
    return { ok: true, variant: auto.variant, inputHash, outputs: auto.outputs, stats: auto.stats, threads, builds, env, ms: (globalThis.performance ?? Date).now() - t0 };
  } catch (e) {
    const error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    return { ok: false, error, stack: e?.stack ?? null, env, ms: (globalThis.performance ?? Date).now() - t0 };
  }
}

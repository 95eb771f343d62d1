#!/usr/bin/env node
// Decode-step time of llama.cpp native (node-llama-cpp) at context depths, llama-bench style: the
// time of one decode step (one token through the model) at depth N, for each KV cache type and thread
// count asked for. The attention share is t(N) − t(N0): everything else in a step costs the same at
// every depth.
//
//   node decode.mjs request.json > result.json
//
// request: { model: "<file.gguf>", caches: ["F16", "Q8_0", "Q4_0", "F16-noFA"], depths: [2048, …], threads: [1, 2],
//            steps?: number (timed steps per depth, default 9), baseDepth?: number (N0, default 256) }
// result:  { versions, baseDepth, rows: [{ cache, threads, depth, ms: [per step], medianMs }] }
//
// Filling a cache to 32K tokens by prefill would take hours for a quantized cache (llama.cpp's CPU
// flash attention over a quantized cache is slow in prefill), and what the cache holds does not change
// what a decode step costs. So the cache is filled from a sequence state file: N0 real tokens are
// prefilled, their state is saved (llama_state_seq_save_file), and a state of N cells is written from
// it, position i holding the K and V rows of real cell i mod N0, then loaded into a fresh sequence
// (llama_state_seq_load_file). The format (llama.cpp's llama-context.cpp and llama-kv-cache.cpp,
// LLAMA_STATE_SEQ_VERSION 3) is checked field by field while it is read, and the loaded sequence's
// length is checked against N, so a different format fails loudly instead of measuring something else.
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CACHE_TYPES, llamaCppVersions, loadLlama } from './native.mjs';

const STATE_MAGIC = 0x67677371; // 'ggsq'
const STATE_VERSION = 3;

function fail(message) {
  process.stderr.write(`decode.mjs: ${message}\n`);
  process.exit(2);
}

/** The parts of a one-sequence state file: header, cells, then per layer K rows and V rows. */
function parseState(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const u32 = () => { const v = view.getUint32(at, true); at += 4; return v; };
  const i32 = () => { const v = view.getInt32(at, true); at += 4; return v; };
  const u64 = () => { const v = Number(view.getBigUint64(at, true)); at += 8; return v; };
  const expect = (what, got, want) => { if (got !== want) fail(`state file: ${what} is ${got}, expected ${want} (llama.cpp's state format changed?)`); };
  expect('magic', u32(), STATE_MAGIC);
  expect('version', u32(), STATE_VERSION);
  const nTokens = u32();
  const tokens = Array.from({ length: nTokens }, i32);
  expect('n_stream', u32(), 1);
  const cells = u32();
  expect('cell count', cells, nTokens);
  for (let i = 0; i < cells; i++) {
    expect(`cell ${i} pos`, i32(), i);
    expect(`cell ${i} n_seq_id`, u32(), 1);
    expect(`cell ${i} seq id`, i32(), 0);
  }
  // With flash attention V is stored by rows like K; without, transposed: per channel, one element per cell.
  const vTrans = u32();
  if (vTrans > 1) fail(`state file: v_trans is ${vTrans}, expected 0 or 1`);
  const layers = u32();
  const rowsOf = (transposed) => Array.from({ length: layers }, () => {
    const type = i32();
    if (!transposed) {
      const rowBytes = u64();
      const rows = bytes.subarray(at, at + cells * rowBytes);
      at += cells * rowBytes;
      return { type, rowBytes, rows };
    }
    const elementBytes = u32();
    const channels = u32();
    const columns = bytes.subarray(at, at + channels * cells * elementBytes);
    at += channels * cells * elementBytes;
    return { type, elementBytes, channels, columns };
  });
  const keys = rowsOf(false);
  const values = rowsOf(vTrans === 1);
  expect('bytes read', at, bytes.length);
  return { tokens, cells, layers, vTrans, keys, values };
}

/** Writes a state of `n` cells, cell i a copy of seed cell i mod seed.cells. */
function writeState(path, seed, n) {
  const fd = openSync(path, 'w');
  const put = (buffer) => { for (let done = 0; done < buffer.length;) done += writeSync(fd, buffer, done, buffer.length - done); };
  const ints = (values, signed) => {
    const b = Buffer.alloc(4 * values.length);
    values.forEach((v, i) => (signed ? b.writeInt32LE(v, 4 * i) : b.writeUInt32LE(v, 4 * i)));
    return b;
  };
  put(ints([STATE_MAGIC, STATE_VERSION, n], false));
  put(ints(Array.from({ length: n }, (_, i) => seed.tokens[i % seed.cells]), true));
  put(ints([1, n], false));
  const cell = Buffer.alloc(12 * n);
  for (let i = 0; i < n; i++) { cell.writeInt32LE(i, 12 * i); cell.writeUInt32LE(1, 12 * i + 4); cell.writeInt32LE(0, 12 * i + 8); }
  put(cell);
  put(ints([seed.vTrans, seed.layers], false));
  // `count` of n cells from a run of seed.cells units of `unit` bytes, cycled
  const cycled = (run, unit) => { for (let done = 0; done < n; done += seed.cells) put(run.subarray(0, Math.min(seed.cells, n - done) * unit)); };
  for (const layer of seed.keys) {
    const head = Buffer.alloc(12);
    head.writeInt32LE(layer.type, 0);
    head.writeBigUInt64LE(BigInt(layer.rowBytes), 4);
    put(head);
    cycled(layer.rows, layer.rowBytes);
  }
  for (const layer of seed.values) {
    if (!seed.vTrans) {
      const head = Buffer.alloc(12);
      head.writeInt32LE(layer.type, 0);
      head.writeBigUInt64LE(BigInt(layer.rowBytes), 4);
      put(head);
      cycled(layer.rows, layer.rowBytes);
      continue;
    }
    put(ints([layer.type, layer.elementBytes, layer.channels], false));
    const run = seed.cells * layer.elementBytes;
    for (let c = 0; c < layer.channels; c++) cycled(layer.columns.subarray(c * run, (c + 1) * run), layer.elementBytes);
  }
  closeSync(fd);
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };

const [path] = process.argv.slice(2);
if (!path) fail('usage: node decode.mjs request.json');
const request = JSON.parse(readFileSync(path, 'utf8'));
const { model: modelPath, caches, depths, threads, steps = 9, baseDepth = 256 } = request;
if (typeof modelPath !== 'string') fail(`request.model must be a file name, got ${JSON.stringify(modelPath)}`);
// "F16-noFA": the f16 cache without flash attention (llama.cpp's matrix-multiply attention path, V
// stored transposed); a quantized V cache needs flash attention, so only f16 has both.
const typeOf = (cache) => cache.replace(/-noFA$/, '');
if (!Array.isArray(caches) || caches.length === 0 || caches.some((c) => !CACHE_TYPES.includes(c) && c !== 'F16-noFA')) fail(`request.caches must list cache types from ${CACHE_TYPES.join(', ')} or F16-noFA, got ${JSON.stringify(caches)}`);
if (!Array.isArray(depths) || depths.some((d) => !Number.isInteger(d) || d <= baseDepth)) fail(`request.depths must be integers > baseDepth (${baseDepth}), got ${JSON.stringify(depths)}`);
if (!Array.isArray(threads) || threads.some((t) => !Number.isInteger(t) || t < 1)) fail(`request.threads must be positive integers, got ${JSON.stringify(threads)}`);
if (!Number.isInteger(steps) || steps < 1) fail(`request.steps must be a positive integer, got ${JSON.stringify(steps)}`);

const scratch = mkdtempSync(join(tmpdir(), 'kivi-llamacpp-decode-'));
const llama = await loadLlama();
const model = await llama.loadModel({ modelPath });
const vocab = 256;
const tokenAt = (i) => 3 + ((i * 7919) % vocab); // byte-piece ids: valid in every vocabulary the converter writes
const rows = [];
try {
  for (const cache of caches) {
    for (const t of threads) {
      const contextSize = Math.max(...depths) + steps + 2;
      const context = await model.createContext({
        contextSize, batchSize: 512, sequences: 1, threads: { ideal: t, min: t },
        flashAttention: !cache.endsWith('-noFA'), experimentalKvCacheKeyType: typeOf(cache), experimentalKvCacheValueType: typeOf(cache),
      });
      try {
        const sequence = context.getSequence();
        // N0 real tokens: the seed of every synthesized state, and the base depth.
        await sequence.evaluateWithoutGeneratingNewTokens(Array.from({ length: baseDepth }, (_, i) => tokenAt(i)));
        const seedPath = join(scratch, 'seed.state');
        await sequence.saveStateToFile(seedPath);
        const seed = parseState(readFileSync(seedPath));
        const measure = async (depth) => {
          if (sequence.nextTokenIndex !== depth) fail(`${cache}: the sequence holds ${sequence.nextTokenIndex} tokens, expected ${depth}`);
          await sequence.evaluateWithoutGeneratingNewTokens([tokenAt(depth)]); // warm-up, then the timed steps
          const ms = [];
          for (let s = 0; s < steps; s++) {
            const t0 = performance.now();
            await sequence.evaluateWithoutGeneratingNewTokens([tokenAt(depth + 1 + s)]);
            ms.push(performance.now() - t0);
          }
          rows.push({ cache, threads: t, depth, ms, medianMs: median(ms) });
          process.stderr.write(`llama.cpp ${cache} ${t} thread${t > 1 ? 's' : ''} depth ${depth}: ${median(ms).toFixed(2)} ms/step\n`);
        };
        await measure(baseDepth);
        for (const depth of depths) {
          await sequence.clearHistory();
          const statePath = join(scratch, `${depth}.state`);
          writeState(statePath, seed, depth);
          await sequence.loadStateFromFile(statePath, { acceptRisk: true });
          rmSync(statePath);
          await measure(depth);
        }
      } finally {
        await context.dispose();
      }
    }
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify({ versions: llamaCppVersions(llama), baseDepth, steps, rows }) + '\n');
await model.dispose();
await llama.dispose();

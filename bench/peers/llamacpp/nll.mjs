#!/usr/bin/env node
// Mean negative log-likelihood of token sequences under llama.cpp, from llama.cpp's own token
// probabilities, for each KV cache type asked for.
//
//   node nll.mjs request.json > result.json
//
// request: { model: "<file.gguf>", sequences: [[ids…], …], caches: [{ key: "F16", value: "F16" }, …],
//            threads?: number (default 1) }
// result:  { versions, caches: [{ key, value, tokens, meanNll, perSequence: [{ tokens, nll }] }] }
//
// As protocol B scores our cache (src/llama2c/evaluate.ts): each sequence starts in a fresh context
// (an empty cache) and is fed one token at a time, as decoding would; the NLL of token t+1 is
// −ln p(t+1) with p the softmax of llama.cpp's logits after token t (node-llama-cpp computes it from
// the raw logits: no temperature, top-k or penalty is applied when nothing is asked for). Flash
// attention is on for every cache type: llama.cpp needs it for a quantized V cache, and one attention
// path for all rows keeps the rows comparable.
import { readFileSync } from 'node:fs';
import { llamaCppVersions, loadLlama, CACHE_TYPES } from './native.mjs';

function fail(message) {
  process.stderr.write(`nll.mjs: ${message}\n`);
  process.exit(2);
}

const [path] = process.argv.slice(2);
if (!path) fail('usage: node nll.mjs request.json');
const request = JSON.parse(readFileSync(path, 'utf8'));
const { model: modelPath, sequences, caches, threads = 1 } = request;
if (typeof modelPath !== 'string') fail(`request.model must be a file name, got ${JSON.stringify(modelPath)}`);
if (!Array.isArray(sequences) || sequences.some((s) => !Array.isArray(s) || s.length < 2 || s.some((t) => !Number.isInteger(t) || t < 0))) {
  fail('request.sequences must be arrays of at least 2 token ids (non-negative integers)');
}
if (!Array.isArray(caches) || caches.length === 0 || caches.some((c) => !CACHE_TYPES.includes(c?.key) || !CACHE_TYPES.includes(c?.value))) {
  fail(`request.caches must be a non-empty list of { key, value } from ${CACHE_TYPES.join(', ')}, got ${JSON.stringify(caches)}`);
}
if (!Number.isInteger(threads) || threads < 1) fail(`request.threads must be a positive integer, got ${JSON.stringify(threads)}`);

const llama = await loadLlama();
const model = await llama.loadModel({ modelPath });
const contextSize = Math.max(...sequences.map((s) => s.length));

const results = [];
for (const cache of caches) {
  const perSequence = [];
  let tokens = 0;
  let nll = 0;
  for (const ids of sequences) {
    const context = await model.createContext({
      contextSize, batchSize: Math.min(512, contextSize), sequences: 1, threads: { ideal: threads, min: threads },
      flashAttention: true, experimentalKvCacheKeyType: cache.key, experimentalKvCacheValueType: cache.value,
    });
    try {
      const sequence = context.getSequence();
      let sum = 0;
      for (let t = 0; t + 1 < ids.length; t++) {
        const [out] = await sequence.controlledEvaluate([[ids[t], { generateNext: { probabilities: true } }]]);
        const p = out?.next?.probabilities?.get(ids[t + 1]);
        if (!(p > 0)) fail(`${cache.key}/${cache.value}: no probability > 0 for token ${ids[t + 1]} after position ${t} (got ${p})`);
        sum -= Math.log(p);
      }
      perSequence.push({ tokens: ids.length - 1, nll: sum });
      tokens += ids.length - 1;
      nll += sum;
    } finally {
      await context.dispose();
    }
  }
  results.push({ key: cache.key, value: cache.value, tokens, meanNll: nll / tokens, perSequence });
  process.stderr.write(`llama.cpp ${cache.key}/${cache.value}: ${tokens} tokens, mean NLL ${(nll / tokens).toFixed(5)}\n`);
}
process.stdout.write(JSON.stringify({ versions: llamaCppVersions(llama), contextSize, threads, caches: results }) + '\n');
await model.dispose();
await llama.dispose();

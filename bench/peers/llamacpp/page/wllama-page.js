// The page wllama.mjs drives in headless Chromium: llama.cpp compiled to WebAssembly (wllama), its
// .wasm and the GGUF files served by the local server. window.runJob(job) runs one job and resolves
// with its result; every job loads its model afresh and unloads it at the end. Jobs of kind
// 'kivi-…' run kivi-wasm's runner in a Worker of this page instead (kivi-worker.js).
import { Wllama } from '/wllama/index.js';

const logs = [];
const logger = { debug: (...a) => logs.push(a.join(' ')), log: (...a) => logs.push(a.join(' ')), info: (...a) => logs.push(a.join(' ')), warn: (...a) => logs.push(a.join(' ')), error: (...a) => logs.push(a.join(' ')) };

/** llama.cpp's own account of its KV cache, from its load log: "llama_kv_cache: size = 4.00 MiB
 *  (  512 cells,   2 layers,  1/1 seqs), K (f16):    2.00 MiB, V (f16):    2.00 MiB". */
function kvCacheOf(lines) {
  const line = lines.find((l) => /llama_kv_cache: size =/.test(l));
  const m = line && /size =\s*([\d.]+) MiB \(\s*(\d+) cells,\s*(\d+) layers.*K \((\w+)\):\s*([\d.]+) MiB, V \((\w+)\):\s*([\d.]+) MiB/.exec(line);
  if (!m) return null;
  return { line: line.trim(), mib: Number(m[1]), cells: Number(m[2]), layers: Number(m[3]), typeK: m[4], kMib: Number(m[5]), typeV: m[6], vMib: Number(m[7]) };
}

async function load(job) {
  // native logs on (llama.cpp INFO, which wllama passes to logger.debug): the KV cache's size line is read from them
  const wllama = new Wllama({ default: '/wllama/wasm/wllama.wasm' }, { logger, suppressNativeLog: false, allowOffline: true });
  const blob = await (await fetch(job.model)).blob();
  await wllama.loadModel([blob], {
    n_ctx: job.nCtx, n_batch: 512, n_threads: job.threads, n_gpu_layers: 0, seed: 1, warmup: false,
    n_parallel: 1, // one slot (wllama's default is 4, sharing one unified cache): every prompt reuses the cached prefix
    cache_type_k: job.cacheK ?? 'f16', cache_type_v: job.cacheV ?? 'f16', flash_attn: job.flashAttention ?? true,
  });
  return wllama;
}

/** A prompt of `n` copies of a word ("aa aa aa …": one token each, "▁aa", in the vocabularies that
 *  `kivi-wasm convert --random` writes); the response's token count checks it. */
const promptOf = (n, word) => word + ` ${word}`.repeat(n - 1);

// A random-weight model emits byte pieces (<0x80>…) that are not UTF-8 alone, and wllama's server code
// then fails to encode its JSON answer; banning the 256 byte pieces (ids 3..258) keeps the text valid.
// (llama-server's [token, false] form: wllama passes logit_bias through as it is.)
const NO_BYTE_PIECES = Array.from({ length: 256 }, (_, i) => [3 + i, false]);

const jobs = {
  // Greedy text from a prompt, with the timings llama.cpp's server code reports.
  async generate(job) {
    const wllama = await load(job);
    try {
      const r = await wllama.createCompletion({ prompt: job.prompt, max_tokens: job.maxTokens, temperature: 0, top_k: 1, cache_prompt: false });
      return { text: r.choices[0].text, usage: r.usage, timings: r.timings, threads: wllama.getNumThreads(), multithread: wllama.isMultithread() };
    } finally {
      await wllama.exit();
    }
  },
  // Decode-step time at each depth: after a warm-up, a prompt of `depth` tokens (its prefix already in
  // the cache from the previous depth), then `steps` generated tokens. llama.cpp's server code times the generation
  // from the first sampled token to the last (predicted_ms over predicted_n tokens: steps − 1 decode
  // steps); prompt_ms is the prefill of the prompt's new tokens.
  async decode(job) {
    const wllama = await load(job);
    const kvCache = kvCacheOf(logs);
    try {
      // a warm-up generation first (the first one after loading also allocates and builds its
      // compute graphs); its 8-token prompt is the prefix of every later one
      await wllama.createCompletion({ prompt: promptOf(8, job.word), max_tokens: 4, temperature: 0, top_k: 1, ignore_eos: true, cache_prompt: true, logit_bias: NO_BYTE_PIECES });
      const rows = [];
      for (const depth of job.depths) {
        const r = await wllama.createCompletion({
          prompt: promptOf(depth - 1, job.word), max_tokens: job.steps, temperature: 0, top_k: 1, ignore_eos: true, cache_prompt: true,
          logit_bias: NO_BYTE_PIECES,
        });
        if (r.usage.prompt_tokens !== depth) throw new Error(`prompt of ${depth - 1} words gave ${r.usage.prompt_tokens} tokens, expected ${depth} (BOS included)`);
        rows.push({ depth, timings: r.timings });
      }
      return { rows, threads: wllama.getNumThreads(), multithread: wllama.isMultithread(), crossOriginIsolated, kvCache };
    } finally {
      await wllama.exit();
    }
  },
};

/** A job for kivi-wasm's runner, in a fresh Worker (terminated after the job). */
function kiviJob(job) {
  const worker = new Worker('/page/kivi-worker.js', { type: 'module' });
  return new Promise((resolve) => {
    worker.onmessage = ({ data }) => resolve(data);
    worker.onerror = (e) => resolve({ ok: false, error: `kivi-worker.js: ${e.message ?? e}` });
    worker.postMessage(job);
  }).finally(() => worker.terminate());
}

window.runJob = async (job) => {
  logs.length = 0;
  if (job.kind.startsWith('kivi-')) return kiviJob(job);
  try {
    if (!jobs[job.kind]) throw new Error(`unknown job kind ${job.kind}`);
    return { ok: true, ...(await jobs[job.kind](job)) };
  } catch (error) {
    return { ok: false, error: String(error?.stack ?? error), logs: logs.slice(-30) };
  }
};
window.pageReady = true;

// The page wllama.mjs drives in headless Chromium: llama.cpp compiled to WebAssembly (wllama), its
// .wasm and the GGUF files served by the local server. window.runJob(job) runs one job and resolves
// with its result; every job loads its model afresh and unloads it at the end.
import { Wllama } from '/wllama/index.js';

const logs = [];
const logger = { debug: () => {}, log: (...a) => logs.push(a.join(' ')), info: (...a) => logs.push(a.join(' ')), warn: (...a) => logs.push(a.join(' ')), error: (...a) => logs.push(a.join(' ')) };

async function load(job) {
  const wllama = new Wllama({ default: '/wllama/wasm/wllama.wasm' }, { logger, suppressNativeLog: true, allowOffline: true });
  const blob = await (await fetch(job.model)).blob();
  await wllama.loadModel([blob], {
    n_ctx: job.nCtx, n_batch: 512, n_threads: job.threads, n_gpu_layers: 0, seed: 1, warmup: false,
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
  // Decode-step time at each depth: a prompt of `depth` tokens (its prefix already in the cache from
  // the previous depth), then `steps` generated tokens; predicted_per_token_ms is their mean time.
  async decode(job) {
    const wllama = await load(job);
    try {
      const rows = [];
      for (const depth of job.depths) {
        const r = await wllama.createCompletion({
          prompt: promptOf(depth - 1, job.word), max_tokens: job.steps, temperature: 0, top_k: 1, ignore_eos: true, cache_prompt: true,
          logit_bias: NO_BYTE_PIECES,
        });
        if (r.usage.prompt_tokens !== depth) throw new Error(`prompt of ${depth - 1} words gave ${r.usage.prompt_tokens} tokens, expected ${depth} (BOS included)`);
        rows.push({ depth, timings: r.timings });
      }
      return { rows, threads: wllama.getNumThreads(), multithread: wllama.isMultithread(), crossOriginIsolated };
    } finally {
      await wllama.exit();
    }
  },
};

window.runJob = async (job) => {
  logs.length = 0;
  try {
    return { ok: true, ...(await jobs[job.kind](job)) };
  } catch (error) {
    return { ok: false, error: String(error?.stack ?? error), logs: logs.slice(-30) };
  }
};
window.pageReady = true;

// kivi-wasm's runner in the wllama page's browser, in a dedicated module Worker (as the browser demo
// runs it; a Worker may block on Atomics.wait while the kernels' threads work). It imports the
// package's own ESM build (dist/index.js and dist/llama2c.js, served at /kivi/ by wllama.mjs).
//
// Message in: a job { kind: 'kivi-generate', model: URL of a .gguf, threads, cache: cache options,
//   depths: [ascending], steps, word }; message out: { ok: true, rows, threads, variant,
//   crossOriginIsolated } or { ok: false, error }. What is run at each depth: fill-and-generate.js.
import { Kivi } from '/kivi/index.js';
import { BOS, LlamaRunner, parseModel } from '/kivi/llama2c.js';
import { fillAndGenerate, wordToken } from './fill-and-generate.js';

async function generateAtDepths(job) {
  const kivi = await Kivi.load({ threads: job.threads });
  try {
    if (kivi.threads !== job.threads) throw new Error(`Kivi.load({ threads: ${job.threads} }) runs ${kivi.threads} thread(s): ${kivi.threadsReason}`);
    const bytes = new Uint8Array(await (await fetch(job.model)).arrayBuffer());
    const { model, tokenizer } = parseModel(bytes);
    if (tokenizer === null) throw new Error(`${job.model} carries no tokenizer`);
    const runner = new LlamaRunner(model, kivi, { ...job.cache, maxTokens: Math.max(...job.depths) + job.steps });
    try {
      const rows = fillAndGenerate(runner, {
        depths: job.depths, steps: job.steps, word: wordToken(tokenizer, job.word, BOS), bos: BOS, layers: model.config.layers, vocabSize: model.config.vocabSize,
      });
      return { rows, threads: kivi.threads, variant: kivi.variant, crossOriginIsolated: self.crossOriginIsolated };
    } finally {
      runner.dispose();
    }
  } finally {
    kivi.close();
  }
}

self.onmessage = async ({ data: job }) => {
  try {
    if (job.kind !== 'kivi-generate') throw new Error(`unknown job kind ${job.kind}`);
    postMessage({ ok: true, ...(await generateAtDepths(job)) });
  } catch (error) {
    postMessage({ ok: false, error: String(error?.stack ?? error) });
  }
};

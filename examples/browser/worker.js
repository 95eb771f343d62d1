// The model runs here, off the page's thread: a module worker that imports the package's own
// ESM build (dist/index.js and dist/llama2c.js, served at ./dist/ by serve.mjs; the wasm builds are
// embedded in dist/index.js, so nothing else is fetched).
//
// Messages in:  { type: 'run', checkpoint: File, tokenizer: File (optional for a .gguf), prompt, steps, temperature, cache }
// Messages out: { type: 'ready', variant, threads, threadsReason } once Kivi.load() is done;
//               { type: 'model', ... } after both files parsed; { type: 'token', ... } per token;
//               { type: 'done', ... }; { type: 'error', stage, message }.

import { Kivi } from './dist/index.js';
import { generate, LlamaRunner, parseModel, Tokenizer } from './dist/llama2c.js';

/** An error with the stage it happened in, so that the page can say which input was wrong. */
class StageError extends Error {
  constructor(stage, message) {
    super(message);
    this.stage = stage;
  }
}

const messageOf = (e) => (e instanceof Error ? e.message : String(e));

const kiviReady = Kivi.load();
kiviReady.then(
  (kivi) => postMessage({ type: 'ready', variant: kivi.variant, threads: kivi.threads, threadsReason: kivi.threadsReason }),
  (e) => postMessage({ type: 'error', stage: 'load', message: `Kivi.load() failed: ${messageOf(e)}` }),
);

let busy = false;

self.onmessage = async (event) => {
  const msg = event.data;
  if (msg?.type !== 'run') return;
  if (busy) {
    postMessage({ type: 'error', stage: 'run', message: 'a generation is already running' });
    return;
  }
  busy = true;
  try {
    await run(msg);
  } catch (e) {
    postMessage({ type: 'error', stage: e instanceof StageError ? e.stage : 'generate', message: messageOf(e) });
  } finally {
    busy = false;
  }
};

async function readFile(file, what) {
  if (!(file instanceof Blob)) throw new StageError(what, `no ${what} file chosen`);
  try {
    return new Uint8Array(await file.arrayBuffer());
  } catch (e) {
    throw new StageError(what, `could not read the ${what} file "${file.name}": ${messageOf(e)}`);
  }
}

async function run({ checkpoint, tokenizer: tokenizerFile, prompt, steps, temperature, cache }) {
  let kivi;
  try {
    kivi = await kiviReady;
  } catch (e) {
    throw new StageError('load', `Kivi.load() failed: ${messageOf(e)}`);
  }

  const checkpointBytes = await readFile(checkpoint, 'checkpoint');
  let model;
  let tokenizer;
  try {
    ({ model, tokenizer } = parseModel(checkpointBytes)); // a GGUF file carries its tokenizer; a llama2.c one does not
  } catch (e) {
    throw new StageError('checkpoint', `Checkpoint "${checkpoint.name}": ${messageOf(e)}`);
  }
  let tokenizerSource = 'from the file';
  if (tokenizer === null || tokenizerFile instanceof Blob) {
    const tokenizerBytes = await readFile(tokenizerFile, 'tokenizer');
    try {
      tokenizer = Tokenizer.fromBytes(tokenizerBytes, model.config.vocabSize);
      tokenizerSource = `"${tokenizerFile.name}"`;
    } catch (e) {
      throw new StageError('tokenizer', `Tokenizer "${tokenizerFile.name}" (for the checkpoint's ${model.config.vocabSize}-token vocabulary): ${messageOf(e)}`);
    }
  }

  let runner;
  try {
    runner = new LlamaRunner(model, kivi, cache);
  } catch (e) {
    throw new StageError('cache', `Setting up the model and the cache: ${messageOf(e)}`);
  }
  try {
    const c = model.config;
    const positions = steps === 0 || steps > c.seqLen ? c.seqLen : steps;
    const promptTokens = tokenizer.encode(prompt, { bos: true }).length;
    postMessage({
      type: 'model',
      config: { ...c },
      format: { ...model.format },
      variant: kivi.variant,
      cacheOptions: { ...runner.cacheOptions },
      positions,
      promptTokens,
      tokenizerSource,
      wasmWeightBytes: runner.wasmWeightBytes,
    });

    let index = 0;
    const start = performance.now();
    const result = generate(runner, tokenizer, {
      prompt,
      steps,
      temperature,
      onToken(text, token) {
        const s = runner.cache.stats();
        postMessage({
          type: 'token',
          text,
          token,
          prompt: index < promptTokens - 1,
          position: runner.position,
          elapsedMs: performance.now() - start,
          stats: s,
        });
        index++;
      },
    });
    const elapsedMs = performance.now() - start;
    postMessage({
      type: 'done',
      stop: result.stop,
      positions: runner.position,
      generated: result.tokens.length - result.promptTokens,
      elapsedMs,
      stats: runner.cache.stats(),
    });
  } finally {
    runner.dispose();
  }
}

// The model runs here, off the page's thread: a module worker that imports the package's own
// ESM build (dist/index.js and dist/llama2c.js, served at ./dist/ by serve.mjs; the wasm builds are
// embedded in dist/index.js, so nothing else is fetched).
//
// Messages in:  { type: 'run', checkpoint: File, tokenizer: File (optional for a .gguf), prompt, steps, temperature, cache }
//               { type: 'resume', steps, temperature }: continue the conversation saved in OPFS
//               { type: 'forget' }: delete it
// Messages out: { type: 'ready', variant, threads, threadsReason } once Kivi.load() is done;
//               { type: 'saved', state } with the saved conversation's state (or null), at start
//               and after each save; { type: 'resumed', text, tokens } before a resumed run's tokens;
//               { type: 'model', ... } after both files parsed; { type: 'token', ... } per token;
//               { type: 'done', ... }; { type: 'error', stage, message }.
//
// After a run that stopped because its steps ran out, the conversation is saved in the origin
// private file system (saved.js): the cache streamed into a file, the model files, the token ids.

import { Kivi } from './dist/index.js';
import { BOS, generate, LlamaRunner, parseModel, sample, Tokenizer, XorShiftStar } from './dist/llama2c.js';
import { forgetConversation, saveConversation, savedFiles, savedState } from './saved.js';

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
  async (kivi) => {
    postMessage({ type: 'ready', variant: kivi.variant, threads: kivi.threads, threadsReason: kivi.threadsReason });
    postMessage({ type: 'saved', state: await savedState() });
  },
  (e) => postMessage({ type: 'error', stage: 'load', message: `Kivi.load() failed: ${messageOf(e)}` }),
);

let busy = false;

self.onmessage = async (event) => {
  const msg = event.data;
  if (msg?.type === 'forget') {
    await forgetConversation();
    postMessage({ type: 'saved', state: null });
    return;
  }
  if (msg?.type !== 'run' && msg?.type !== 'resume') return;
  if (busy) {
    postMessage({ type: 'error', stage: 'run', message: 'a generation is already running' });
    return;
  }
  busy = true;
  try {
    await (msg.type === 'run' ? run(msg) : resume(msg));
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
    const stats = runner.cache.stats();
    // A story that ran out of steps can go on: the cache holds every token but the last sampled one.
    const saved = result.stop === 'steps' && runner.position < c.seqLen ? await save(runner, checkpoint, tokenizerFile, {
      checkpointName: checkpoint.name, tokenizerName: tokenizerFile?.name ?? null, cacheOptions: { ...runner.cacheOptions }, tokens: result.tokens, text: result.text,
    }) : null;
    postMessage({ type: 'done', stop: result.stop, positions: runner.position, generated: result.tokens.length - result.promptTokens, elapsedMs, stats, saved });
  } finally {
    runner.dispose();
  }
}

async function save(runner, checkpoint, tokenizer, state) {
  try {
    const saved = await saveConversation({ cache: runner.cache, checkpoint, tokenizer: tokenizer instanceof Blob ? tokenizer : undefined, state });
    postMessage({ type: 'saved', state: saved });
    return saved;
  } catch (e) {
    throw new StageError('save', `Saving the conversation in the browser's storage (OPFS) failed: ${messageOf(e)}`);
  }
}

/** Continues the saved conversation: the cache restored from OPFS as it streams in, then more tokens. */
async function resume({ steps, temperature }) {
  const kivi = await kiviReady;
  let files;
  try {
    files = await savedFiles();
  } catch (e) {
    throw new StageError('resume', `No saved conversation to resume: ${messageOf(e)}`);
  }
  const { state } = files;
  const { model, tokenizer: own } = parseModel(new Uint8Array(await files.checkpoint.arrayBuffer()));
  const tokenizer = own ?? Tokenizer.fromBytes(new Uint8Array(await files.tokenizer.arrayBuffer()), model.config.vocabSize);
  const runner = new LlamaRunner(model, kivi, state.cacheOptions);
  try {
    const t0 = performance.now();
    runner.resume(await kivi.restoreCacheStream(files.cache));
    const restoreMs = performance.now() - t0;
    const tokens = [...state.tokens];
    if (runner.position !== tokens.length - 1) throw new StageError('resume', `the saved cache holds ${runner.position} tokens, the saved text ${tokens.length - 1}`);
    const c = model.config;
    const positions = Math.min(c.seqLen, runner.position + steps);
    postMessage({ type: 'resumed', text: state.text, tokens: tokens.length, restoreMs, cacheBytes: state.cacheBytes });
    postMessage({
      type: 'model', config: { ...c }, format: { ...model.format }, variant: kivi.variant, cacheOptions: { ...runner.cacheOptions },
      positions, promptTokens: tokens.length, tokenizerSource: 'saved', wasmWeightBytes: runner.wasmWeightBytes,
    });
    const rng = new XorShiftStar((Date.now() % 0xffffffff) + 1);
    const logits = new Float64Array(c.vocabSize);
    const decoder = new TextDecoder('utf-8');
    let text = state.text;
    let token = tokens[tokens.length - 1];
    let stop = 'steps';
    const start = performance.now();
    while (runner.position < positions) {
      runner.forward(token, logits);
      const next = sample(logits, temperature, 0.9, rng);
      if (next === BOS) {
        stop = 'bos';
        break;
      }
      const piece = decoder.decode(tokenizer.decodeBytes(token, next), { stream: true });
      text += piece;
      tokens.push(next);
      postMessage({ type: 'token', text: piece, token: next, prompt: false, position: runner.position, elapsedMs: performance.now() - start, stats: runner.cache.stats() });
      token = next;
    }
    text += decoder.decode();
    const stats = runner.cache.stats();
    const saved = stop === 'steps' && runner.position < c.seqLen
      ? await save(runner, files.checkpoint, files.tokenizer, { ...state, tokens, text })
      : null;
    postMessage({ type: 'done', stop, positions: runner.position, generated: tokens.length - state.tokens.length, elapsedMs: performance.now() - start, stats, saved });
  } finally {
    runner.dispose();
  }
}

// A Worker that keeps a system prompt's KiviCache in Workers KV and resumes it per request instead of
// recomputing the prompt's prefill. The cache goes in and out of KV as the streamed format's chunks
// (cache.serializeStream / kivi.restoreCacheStream), one KV value per chunk, so neither a value nor
// the Worker's memory ever holds the cache twice.
//
//   PUT  /models/<file>              store a model or tokenizer file in R2 (the request body)
//   POST /prompts/<name>             {"model","tokenizer","text"}: prefill the prompt, store its cache
//   POST /generate/<name>?from=kv    the first token after the prompt, from the cache in KV
//   POST /generate/<name>?from=prefill    … recomputing the prompt instead
//   POST /synthetic/<name>?layers&kvHeads&headDim&tokens    a seeded cache of that shape, stored
//   GET  /synthetic/<name>?whole=0|1     restore it (streamed, or gathered whole for restoreCache)
//   GET  /synthetic/<name>?read=1        read its chunks from KV and drop them (no restore)
//   PUT  /caches/<name>              a cache of any size made elsewhere (the body: serializeStream's
//                                    bytes) streams into KV, checked frame by frame (checkCacheStream)
//   GET  /caches/<name>              a stored cache streamed out of KV, checked on the way
//
// KV keys: `<name>:manifest` (JSON: generation, frames, bytes, and what the cache is of), then one
// key per chunk, `<name>:<generation>:<k>`. The chunks of a new generation are written before the
// manifest that points at them, so a reader sees one whole cache or the one before it.
import { checkCacheStream, Kivi } from 'kivi-wasm';
import { LlamaRunner, parseCheckpoint, Tokenizer } from 'kivi-wasm/llama2c';
import { seeded } from './seeded.js';

/** Bytes per KV value: far under KV's 25 MiB limit, and what the Worker holds in flight (two). */
const CHUNK_BYTES = 1 << 20;
/** The KIVI cache the prompts are kept in: 2-bit, groups of 32, a full-precision window of 128. */
const CACHE_OPTIONS = { bits: 2, groupSize: 32, residual: 128 };

/** Wasm memory the caches of an isolate may take: a Worker has 128 MB for everything, so the rest
 *  is left to JS (the model's weights, the chunks in flight). As the memory's maximum, it also makes
 *  the allocator grow memory by what it needs rather than by doubling near the limit. */
const WASM_BUDGET = 96 * 2 ** 20;

let kiviLoad;
/** One Kivi instance per isolate (its wasm memory holds every cache of the isolate). */
function kivi() {
  kiviLoad ??= Kivi.load({ maxMemoryBytes: WASM_BUDGET });
  return kiviLoad;
}

let makerLoad;
/** An instance without the budget, for /synthetic's POST alone: it makes a large cache in place of
 *  whatever would make it in production (a Node process, a bigger machine) before it is stored. */
function unboundedKivi() {
  makerLoad ??= Kivi.load();
  return makerLoad;
}

const models = new Map();
/** The model and tokenizer, read from R2 once per isolate. */
async function modelOf(env, modelFile, tokenizerFile) {
  const key = `${modelFile}\n${tokenizerFile}`;
  if (!models.has(key)) {
    models.set(key, (async () => {
      const [m, t] = await Promise.all([env.MODELS.get(modelFile), env.MODELS.get(tokenizerFile)]);
      if (m === null || t === null) throw new HttpError(404, `R2 has no ${m === null ? modelFile : tokenizerFile}; PUT it to /models/ first`);
      const model = parseCheckpoint(new Uint8Array(await m.arrayBuffer()));
      const tokenizer = Tokenizer.fromBytes(new Uint8Array(await t.arrayBuffer()), model.config.vocabSize);
      return { model, tokenizer };
    })().catch((error) => {
      models.delete(key);
      throw error;
    }));
  }
  return models.get(key);
}

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Writes a cache to KV chunk by chunk, then the manifest that makes it visible. */
async function saveCache(env, name, cache, about) {
  return putChunks(env, name, cache.serializeStream({ chunkBytes: CHUNK_BYTES }), async () => about);
}

/**
 * Writes the pieces of a stream to KV as values of CHUNK_BYTES (the last one shorter), then the
 * manifest that makes them visible, with what `describe()` says once the stream has ended. If the
 * stream fails, the values written for it are deleted and the stored cache stays as it was.
 */
async function putChunks(env, name, pieces, describe) {
  const generation = crypto.randomUUID();
  let frames = 0;
  let bytes = 0;
  let buffer = null;
  let fill = 0;
  const put = async (value) => {
    await env.CACHES.put(`${name}:${generation}:${frames}`, value);
    frames++;
    bytes += value.length;
  };
  try {
    for await (const piece of pieces) {
      if (fill === 0 && piece.length === CHUNK_BYTES) {
        await put(piece); // serializeStream's frames are whole values already
        continue;
      }
      for (let at = 0; at < piece.length;) {
        buffer ??= new Uint8Array(CHUNK_BYTES);
        const take = Math.min(CHUNK_BYTES - fill, piece.length - at);
        buffer.set(piece.subarray(at, at + take), fill);
        fill += take;
        at += take;
        if (fill === CHUNK_BYTES) {
          await put(buffer); // written once put resolves: the buffer is filled again
          fill = 0;
        }
      }
    }
    if (fill > 0) await put(buffer.subarray(0, fill));
    const about = await describe();
    const old = await env.CACHES.get(`${name}:manifest`, 'json');
    const manifest = { generation, frames, bytes, ...about };
    await env.CACHES.put(`${name}:manifest`, JSON.stringify(manifest));
    // The previous generation's chunks are no longer reachable.
    if (old !== null) for (let k = 0; k < old.frames; k++) await env.CACHES.delete(`${name}:${old.generation}:${k}`);
    return manifest;
  } catch (error) {
    for (let k = 0; k < frames; k++) await env.CACHES.delete(`${name}:${generation}:${k}`);
    throw error;
  }
}

/** PUT /caches/<name>: a cache made elsewhere (any size) streams in, checked frame by frame on its
 *  way into KV; nothing of it is kept unless every frame passed. */
async function uploadCache(env, name, body) {
  if (body === null) throw new HttpError(400, 'PUT /caches/<name> needs the serialized cache (serializeStream) as its body');
  const checked = checkCacheStream();
  let manifest;
  try {
    // preventCancel: a refused upload is read to its end below, so the client gets the answer
    // (cancelling the body makes a local wrangler dev reset the connection instead).
    manifest = await putChunks(env, name, body.pipeThrough(checked, { preventCancel: true }), async () => {
      const { options, tokens, frames, bytes } = await checked.summary;
      return { options, tokens: tokens[0], streamFrames: frames, streamBytes: bytes };
    });
  } catch (error) {
    await body.pipeTo(new WritableStream()).catch(() => undefined);
    throw error;
  }
  return { kvValues: manifest.frames, bytes: manifest.bytes, tokens: manifest.tokens, options: manifest.options };
}

/** GET /caches/<name>: the stored cache streamed out of KV, each frame checked on the way. */
async function downloadCache(env, name) {
  const manifest = await manifestOf(env, name);
  const chunks = chunksOf(env, name, manifest);
  const source = new ReadableStream({
    async pull(controller) {
      const { done, value } = await chunks.next();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel: () => chunks.return(),
  }, { highWaterMark: 0 });
  return new Response(source.pipeThrough(checkCacheStream()), {
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(manifest.bytes) },
  });
}

async function manifestOf(env, name) {
  const manifest = await env.CACHES.get(`${name}:manifest`, 'json');
  if (manifest === null) throw new HttpError(404, `KV has no cache named ${JSON.stringify(name)}`);
  return manifest;
}

/** The chunks of a stored cache, read one ahead (two KV values in flight at most). */
async function* chunksOf(env, name, manifest) {
  const get = (k) => env.CACHES.get(`${name}:${manifest.generation}:${k}`, 'arrayBuffer');
  let next = manifest.frames > 0 ? get(0) : null;
  for (let k = 0; k < manifest.frames; k++) {
    const value = await next;
    if (value === null) throw new RangeError(`KV lost chunk ${k} of ${manifest.frames} of ${JSON.stringify(name)}`);
    next = k + 1 < manifest.frames ? get(k + 1) : null;
    yield new Uint8Array(value);
  }
}

/** SHA-256 of attend outputs (the test compares them with the original's, bit for bit). */
async function digest(arrays) {
  const hash = await crypto.subtle.digest('SHA-256', concat(arrays.map((a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength))));
  return [...new Uint8Array(hash)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

function concat(arrays) {
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of arrays) {
    out.set(a, at);
    at += a.length;
  }
  return out;
}

/** Attention of one seeded query per layer: what "attends identically" is checked on. */
function probe(cache) {
  const o = cache.options;
  const random = seeded(99);
  const outputs = [];
  for (let l = 0; l < o.layers; l++) outputs.push(cache.attend(l, random(o.queryHeads * o.headDim)));
  return outputs;
}

function argmax(logits) {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

const json = (value, status = 200) => new Response(JSON.stringify(value), { status, headers: { 'content-type': 'application/json' } });

async function prompt(env, name, body) {
  const { model, tokenizer } = await modelOf(env, body.model, body.tokenizer);
  const seqLen = model.config.seqLen;
  const ids = tokenizer.encode(body.text, { bos: true }).slice(0, seqLen);
  if (ids.length < 2) throw new HttpError(400, 'the prompt must be at least one token after BOS');
  const runner = new LlamaRunner(model, await kivi(), CACHE_OPTIONS);
  try {
    // The cache holds every prompt token but the last: a request feeds that one and reads the
    // logits of the first new token, as the prefill does.
    for (const id of ids.slice(0, -1)) runner.advance(id);
    const attends = await digest(probe(runner.cache));
    const manifest = await saveCache(env, name, runner.cache, { model: body.model, tokenizer: body.tokenizer, tokens: ids });
    return { frames: manifest.frames, bytes: manifest.bytes, tokens: ids.length, cachedTokens: ids.length - 1, statsBytes: runner.cache.stats().bytes, attends };
  } finally {
    runner.dispose();
  }
}

async function generate(env, name, from) {
  const manifest = await manifestOf(env, name);
  const { model, tokenizer } = await modelOf(env, manifest.model, manifest.tokenizer);
  const k = await kivi();
  const ids = manifest.tokens;
  const runner = new LlamaRunner(model, k, CACHE_OPTIONS);
  try {
    const t0 = Date.now();
    let attends = null;
    if (from === 'kv') {
      runner.resume(await k.restoreCacheStream(chunksOf(env, name, manifest)));
      attends = await digest(probe(runner.cache));
    } else {
      for (const id of ids.slice(0, -1)) runner.advance(id);
    }
    const logits = runner.forward(ids[ids.length - 1]);
    const token = argmax(logits);
    return { from, token, text: tokenizer.decode(ids[ids.length - 1], token), logits: await digest([logits]), attends, workerMs: Date.now() - t0 };
  } finally {
    runner.dispose();
  }
}

function integerParam(url, key, fallback, max) {
  const raw = url.searchParams.get(key);
  const value = raw === null ? fallback : Number(raw);
  if (!Number.isInteger(value) || value < 1 || value > max) throw new HttpError(400, `${key} must be an integer from 1 to ${max}, got ${raw}`);
  return value;
}

async function synthetic(env, name, url) {
  const o = {
    layers: integerParam(url, 'layers', 16, 128), kvHeads: integerParam(url, 'kvHeads', 8, 64), headDim: integerParam(url, 'headDim', 128, 256),
    queryHeads: integerParam(url, 'queryHeads', 32, 256), ...CACHE_OPTIONS,
  };
  const tokens = integerParam(url, 'tokens', 4096, 1 << 20);
  const k = await unboundedKivi();
  const cache = k.createCache(o);
  try {
    const random = seeded(1);
    const row = o.kvHeads * o.headDim;
    for (let l = 0; l < o.layers; l++) {
      for (let t = 0; t < tokens; t += 256) {
        const n = Math.min(256, tokens - t);
        cache.append(l, random(n * row), random(n * row));
      }
    }
    const attends = await digest(probe(cache));
    const manifest = await saveCache(env, name, cache, { options: o, tokens });
    return { frames: manifest.frames, bytes: manifest.bytes, statsBytes: cache.stats().bytes, attends, wasmMemoryBytes: k.memoryBytes };
  } finally {
    cache.dispose();
  }
}

/** Reads the chunks and drops them: what the KV reads alone cost (for the memory measurement). */
async function readSynthetic(env, name) {
  const manifest = await manifestOf(env, name);
  let bytes = 0;
  for await (const chunk of chunksOf(env, name, manifest)) bytes += chunk.length;
  return { read: bytes };
}

async function restoreSynthetic(env, name, whole) {
  const manifest = await manifestOf(env, name);
  const k = await kivi();
  const t0 = Date.now();
  let cache;
  if (whole) {
    // The whole-file path, for comparison: every chunk gathered into one buffer, then restoreCache.
    const parts = [];
    for await (const chunk of chunksOf(env, name, manifest)) parts.push(chunk);
    cache = k.restoreCache(concat(parts));
  } else {
    cache = await k.restoreCacheStream(chunksOf(env, name, manifest));
  }
  try {
    const attends = await digest(probe(cache));
    return { whole, attends, statsBytes: cache.stats().bytes, wasmMemoryBytes: k.memoryBytes, workerMs: Date.now() - t0 };
  } finally {
    cache.dispose();
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const [, route, name] = url.pathname.split('/');
    try {
      if (route === 'models' && request.method === 'PUT' && name) {
        const stored = await env.MODELS.put(name, request.body);
        return json({ file: name, bytes: stored.size });
      }
      if (route === 'prompts' && request.method === 'POST' && name) return json(await prompt(env, name, await request.json()));
      if (route === 'generate' && request.method === 'POST' && name) {
        const from = url.searchParams.get('from') ?? 'kv';
        if (from !== 'kv' && from !== 'prefill') throw new HttpError(400, `from must be kv or prefill, got ${from}`);
        return json(await generate(env, name, from));
      }
      if (route === 'caches' && name) {
        if (request.method === 'PUT') return json(await uploadCache(env, name, request.body));
        if (request.method === 'GET') return await downloadCache(env, name);
      }
      if (route === 'synthetic' && name) {
        if (request.method === 'POST') return json(await synthetic(env, name, url));
        if (url.searchParams.get('read') === '1') return json(await readSynthetic(env, name));
        return json(await restoreSynthetic(env, name, url.searchParams.get('whole') === '1'));
      }
      return json({ error: `no route ${request.method} ${url.pathname}` }, 404);
    } catch (error) {
      return json({ error: String(error?.message ?? error) }, error instanceof HttpError ? error.status : error instanceof TypeError || error instanceof RangeError ? 400 : 500);
    }
  },
};

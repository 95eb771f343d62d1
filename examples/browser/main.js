// The page: reads the form, runs the model in worker.js, streams the text and draws the cache's
// bytes against the f32 cache as the context grows.

import { BACKGROUND, drawChart } from './chart.js';
import { cacheBytes, formatBytes } from './memory.js';

const $ = (id) => document.getElementById(id);
const form = $('form');
const runButton = $('run');
const stopButton = $('stop');
const errorBox = $('error');
const outPrompt = $('out-prompt');
const outGen = $('out-gen');
const output = $('output');
const canvas = $('chart');
const legend = $('legend');
const check = $('check');

const COLORS = { 32: '#7b8494', 4: '#2457d6', 2: '#e0533d' };
const NAMES = { 32: 'f32', 4: 'KIVI-4', 2: 'KIVI-2' };
const GROUP_SIZE = 32;

let worker = null;
let variant = null;
/** The conversation saved in OPFS (the worker's state.json), or null. */
let saved = null;
/** The run being shown: options, model shape, series of the chart. */
let current = null;
let frame = 0;

function setState(state) {
  document.body.dataset.state = state;
  const running = state === 'running';
  runButton.disabled = running || variant === null;
  runButton.textContent = variant === null ? 'Loading kernels…' : running ? 'Generating…' : 'Generate';
  stopButton.disabled = !running;
  $('resume').disabled = running || variant === null;
}

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function clearError() {
  errorBox.textContent = '';
  errorBox.hidden = true;
}

function startWorker() {
  variant = null;
  $('stat-variant').textContent = '…';
  worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  worker.onmessage = (event) => onMessage(event.data);
  worker.onerror = (event) => {
    event.preventDefault();
    showError(
      `The worker failed${event.message ? `: ${event.message}` : ' to start'}. ` +
        'It imports ./dist/index.js and ./dist/llama2c.js: serve the page with `npm run demo:browser`, which builds the package if needed.',
    );
    setState('error');
  };
  worker.onmessageerror = () => showError('A message from the worker could not be read.');
}

function onMessage(msg) {
  switch (msg.type) {
    case 'ready':
      variant = msg.variant;
      $('stat-variant').textContent = variant;
      $('stat-threads').textContent = String(msg.threads);
      $('stat-threads').title = msg.threadsReason ?? '';
      setState(document.body.dataset.state === 'starting' ? 'ready' : document.body.dataset.state);
      break;
    case 'saved':
      showSaved(msg.state);
      break;
    case 'resumed':
      outPrompt.textContent = msg.text;
      current.resumed = msg;
      break;
    case 'model':
      beginChart(msg);
      if (current.resumed) {
        const r = current.resumed;
        $('model-info').append(` Resumed from this browser's storage: ${r.tokens} tokens, a ${formatBytes(r.cacheBytes)} cache restored in ${r.restoreMs.toFixed(0)} ms.`);
      }
      break;
    case 'token':
      onToken(msg);
      break;
    case 'done':
      onDone(msg);
      break;
    case 'error':
      showError(msg.message);
      if (msg.stage === 'load') variant = null;
      if (!current?.series) $('model-info').textContent = 'Pick a checkpoint and its tokenizer (or a .gguf file), then Generate.';
      setState('error');
      break;
  }
}

function readForm() {
  const checkpoint = $('checkpoint').files[0];
  if (!checkpoint) throw new Error('Choose a model file (for example stories260K.bin, or a .gguf).');
  // A .gguf file carries its tokenizer, which is the one used; a llama2.c checkpoint needs its .bin.
  const gguf = /\.gguf$/i.test(checkpoint.name);
  const tokenizer = gguf ? undefined : $('tokenizer').files[0];
  if (!tokenizer && !gguf) throw new Error('Choose a tokenizer file (tok512.bin for stories260K, tok4096.bin for stories3M); a .gguf file carries its own.');
  const steps = Number($('steps').value);
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`Tokens must be a whole number of at least 1, got "${$('steps').value}".`);
  const temperature = Number($('temperature').value);
  if (!Number.isFinite(temperature) || temperature < 0) throw new Error(`Temperature must be a number of at least 0, got "${$('temperature').value}".`);
  const bits = Number(form.elements.bits.value);
  const cache = { bits, groupSize: GROUP_SIZE, residual: Number($('residual').value), keyWindow: $('keyWindow').value };
  return { checkpoint, tokenizer, prompt: $('prompt').value, steps, temperature, cache };
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  if (variant === null || document.body.dataset.state === 'running') return;
  clearError();
  let request;
  try {
    request = readForm();
  } catch (e) {
    showError(e.message);
    return;
  }
  resetOutput();
  current = { request, cache: request.cache, fileName: request.checkpoint.name };
  setState('running');
  worker.postMessage({ type: 'run', ...request });
});

function showSaved(state) {
  saved = state;
  const panel = $('saved');
  panel.hidden = state === null;
  panel.dataset.tokens = state === null ? '0' : String(state.tokens.length);
  if (state === null) return;
  const bits = state.cacheOptions.bits === 32 ? 'f32' : `KIVI-${state.cacheOptions.bits}`;
  $('saved-info').textContent =
    `${state.tokens.length} tokens of ${state.checkpointName}, a ${bits} cache of ${formatBytes(state.cacheBytes)}, saved ${new Date(state.savedAt).toLocaleString()}.`;
  $('resume').disabled = variant === null || document.body.dataset.state === 'running';
}

$('resume').addEventListener('click', () => {
  if (variant === null || saved === null || document.body.dataset.state === 'running') return;
  clearError();
  const steps = Number($('steps').value);
  const temperature = Number($('temperature').value);
  if (!Number.isInteger(steps) || steps < 1 || !Number.isFinite(temperature) || temperature < 0) {
    showError('Tokens must be a whole number of at least 1 and temperature a number of at least 0.');
    return;
  }
  resetOutput();
  current = { request: null, cache: saved.cacheOptions, fileName: saved.checkpointName };
  setState('running');
  worker.postMessage({ type: 'resume', steps, temperature });
});

$('forget').addEventListener('click', () => worker.postMessage({ type: 'forget' }));

stopButton.addEventListener('click', () => {
  // generate() runs synchronously in the worker, so stopping it means ending the worker.
  worker.terminate();
  if (current?.series) $('model-info').append(' Stopped.');
  setState('stopped');
  startWorker();
});

function resetOutput() {
  outPrompt.textContent = '';
  outGen.textContent = '';
  for (const id of ['stat-tokens', 'stat-tps', 'stat-cache', 'stat-f32', 'stat-ratio', 'stat-bits', 'stat-quantized']) {
    $(id).textContent = '–';
    $(id).dataset.value = '0';
  }
  check.textContent = '';
  delete check.dataset.match;
  legend.textContent = '';
  $('model-info').textContent = 'Reading the files…';
  current = null;
  drawChart(canvas, { maxTokens: 256, maxBytes: 1024, series: [] });
}

function beginChart({ config, format, positions, promptTokens, tokenizerSource, wasmWeightBytes }) {
  const c = config;
  const chosen = current.cache.bits;
  const kind = format.version === 'gguf'
    ? `GGUF, mostly ${format.weights.toUpperCase()} (${formatBytes(wasmWeightBytes)} of weights in wasm memory), tokenizer ${tokenizerSource}`
    : `llama2.c ${format.version === 2 ? `v2, Q8_0 (group ${format.groupSize})` : `v${format.version}, f32`}`;
  $('model-info').textContent =
    `${current.fileName}: ${kind}; dim ${c.dim}, ${c.layers} layers, ${c.heads} heads / ${c.kvHeads} kv heads, ` +
    `head dim ${c.headDim}, vocab ${c.vocabSize}, seq_len ${c.seqLen}. Prompt: ${promptTokens === 1 ? 'BOS only' : `${promptTokens} tokens with BOS`}.`;
  const series = [32, 4, 2].map((bits) => ({
    bits,
    label: NAMES[bits],
    color: COLORS[bits],
    dashed: bits !== chosen,
    width: bits === chosen ? 2.5 : 1.5,
    points: [[0, 0]],
  }));
  Object.assign(current, {
    shape: { layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim },
    positions,
    series,
    mismatches: 0,
    last: null,
  });
  legend.textContent = '';
  for (const s of series) {
    const li = document.createElement('li');
    li.style.color = s.color;
    const swatch = document.createElement('i');
    if (s.dashed) swatch.className = 'dashed';
    const label = document.createElement('span');
    label.style.color = 'var(--ink)';
    label.textContent = `${s.label} ${s.dashed ? '(computed)' : '(measured)'}`;
    const value = document.createElement('b');
    value.style.color = 'var(--ink)';
    s.legendValue = value;
    li.append(swatch, label, value);
    legend.append(li);
  }
  scheduleDraw();
}

function appendText(span, text) {
  if (text === '') return;
  const nearBottom = output.scrollHeight - output.scrollTop - output.clientHeight < 24;
  if (span.lastChild?.nodeType === Node.TEXT_NODE) span.lastChild.appendData(text);
  else span.append(text);
  if (nearBottom) output.scrollTop = output.scrollHeight;
}

function onToken(msg) {
  if (!current?.series) return;
  appendText(msg.prompt ? outPrompt : outGen, msg.text);
  addPoint(msg.position, msg.stats, msg.elapsedMs);
  scheduleDraw();
}

/** One more point of every series at N tokens: the measured bytes for the cache that runs, the formula's for the others. */
function addPoint(N, stats, elapsedMs) {
  const measured = stats.bytes;
  if (current.last === null || N > current.last.N) {
    for (const s of current.series) s.points.push([N, s.dashed ? cacheBytes(s.bits, N, current.shape, current.cache) : measured]);
    if (measured !== cacheBytes(current.cache.bits, N, current.shape, current.cache)) current.mismatches++;
  }
  current.last = { N, elapsedMs, stats };
}

function onDone(msg) {
  if (current?.series) {
    // The last forward pass (the one that produced BOS, when the story ends) has no onToken call.
    addPoint(msg.positions, msg.stats, msg.elapsedMs);
    if (msg.stop === 'bos') $('model-info').append(` The model ended the story (it produced BOS) after ${msg.positions} tokens.`);
    draw();
  }
  setState('done');
}

function scheduleDraw() {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    draw();
  });
}

function draw() {
  if (frame) {
    cancelAnimationFrame(frame);
    frame = 0;
  }
  if (!current?.series) return;
  const { shape, cache, positions, series, last } = current;
  drawChart(canvas, { maxTokens: positions, maxBytes: cacheBytes(32, positions, shape, cache), series });
  if (!last) return;
  const { N, elapsedMs, stats } = last;
  const f32 = cacheBytes(32, N, shape, cache);
  const tps = elapsedMs > 0 ? N / (elapsedMs / 1000) : 0;
  set('stat-tokens', `${N} / ${positions}`, N);
  set('stat-tps', tps >= 100 ? tps.toFixed(0) : tps.toFixed(1), tps);
  set('stat-cache', formatBytes(stats.bytes), stats.bytes);
  set('stat-f32', formatBytes(f32), f32);
  set('stat-ratio', stats.bytes > 0 ? `${(f32 / stats.bytes).toFixed(2)}×` : '–', stats.bytes > 0 ? f32 / stats.bytes : 0);
  set('stat-bits', stats.bitsPerElement.toFixed(2), stats.bitsPerElement);
  set('stat-quantized', `${stats.quantizedKeys / shape.layers} / ${stats.quantizedValues / shape.layers}`, stats.quantizedKeys / shape.layers);
  for (const s of series) s.legendValue.textContent = formatBytes(s.points[s.points.length - 1][1]);
  const ok = current.mismatches === 0;
  check.dataset.match = String(ok);
  check.textContent = ok
    ? 'measured = formula at every token ✓'
    : `measured ≠ formula at ${current.mismatches} tokens`;
}

function set(id, text, value) {
  const el = $(id);
  el.textContent = text;
  el.dataset.value = String(value);
}

new ResizeObserver(() => (current?.series ? draw() : drawChart(canvas, { maxTokens: 256, maxBytes: 1024, series: [] }))).observe(canvas);
canvas.style.background = BACKGROUND;
setState('starting');
startWorker();

// The browser demo (examples/browser) end to end in headless Chromium: serve it, feed it stories260K
// from ../shared/models, generate 150 tokens with a KIVI-2 cache in the page's Web Worker, and check
// what the page shows: the greedy story, tokens/s, the wasm build, the cache bytes against f32 (and
// against the README's Memory formula), and a chart that was actually drawn (screenshot + pixels).
// Then a GGUF file (stories260K converted to Q8_0 at test time, into a temporary folder): its own
// tokenizer, its matrices multiplied by the wasm kernels in the page's worker.
// Needs /usr/bin/chromium and a built dist/ (npm test builds first); fails if either is missing.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToGguf, parseCheckpoint, Tokenizer } from '../src/llama2c/index';

const ROOT = join(__dirname, '..');
const MODELS = join(__dirname, '..', '..', 'shared', 'models');
const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// stories260K: 5 layers, 4 kv heads, head dim 8.
const SHAPE = { layers: 5, kvHeads: 4, headDim: 8 };
const TOKENS = 150;
const CACHE = { bits: 2, groupSize: 32, residual: 32, keyWindow: 'sliding' as const };

/** README "Memory" for one-token decode, no sinks, keyWindow 'sliding' (R >= G). */
function expectedBytes(bits: number, N: number): number {
  const { residual: R, groupSize: G } = CACHE;
  const D = SHAPE.headDim;
  const perHead = SHAPE.layers * SHAPE.kvHeads * D;
  if (bits === 32) return perHead * 8 * N;
  const Nk = N - 1 >= R ? G * Math.ceil((N - R) / G) : 0;
  const Nv = Math.max(0, N - 1 - R);
  const gv = Math.min(G, D);
  return perHead * ((Nk * (bits + 32 / G)) / 8 + (Nv * (bits + 32 / gv)) / 8 + 4 * (N - Nk) + 4 * (N - Nv));
}

function startServer(): Promise<{ server: ChildProcess; url: string }> {
  // --no-build: this test must not rebuild dist/ under the other test files; npm test builds first.
  const server = spawn(process.execPath, [join(ROOT, 'examples', 'browser', 'serve.mjs'), '--port', '0', '--no-build'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the demo server printed no URL within 15 s\nstdout: ${stdout}\nstderr: ${stderr}`)), 15_000);
    server.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    server.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      const m = /http:\/\/127\.0\.0\.1:\d+\//.exec(stdout);
      if (m) {
        clearTimeout(timer);
        resolve({ server, url: m[0] });
      }
    });
    server.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the demo server exited (code ${code})\nstdout: ${stdout}\nstderr: ${stderr}`));
    });
  });
}

async function state(page: Page): Promise<string> {
  await page.waitForFunction(() => ['ready', 'done', 'error', 'stopped'].includes(document.body.dataset.state ?? ''), undefined, { timeout: 30_000 });
  return page.evaluate(() => document.body.dataset.state ?? '');
}

/** Picks the files (names in ../shared/models, or absolute paths; no tokenizer for a .gguf) and runs. */
async function run(page: Page, checkpoint: string, tokenizer: string | null): Promise<string> {
  await page.setInputFiles('#checkpoint', checkpoint.startsWith('/') ? checkpoint : join(MODELS, checkpoint));
  await page.setInputFiles('#tokenizer', tokenizer === null ? [] : join(MODELS, tokenizer));
  await page.click('#run');
  await page.waitForFunction(() => document.body.dataset.state !== 'running' && document.body.dataset.state !== 'ready', undefined, { timeout: 30_000 });
  return state(page);
}

/** Pixels of the chart canvas that are not background, and those of the KIVI-2 (#e0533d) and KIVI-4 (#2457d6) colors. */
function chartPixels(page: Page): Promise<{ drawn: number; kivi2: number; kivi4: number; total: number }> {
  return page.evaluate(() => {
    const canvas = document.getElementById('chart') as HTMLCanvasElement;
    const { data, width, height } = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height);
    const near = (r: number, g: number, b: number, rgb: number) => Math.abs(r - (rgb >> 16)) < 30 && Math.abs(g - ((rgb >> 8) & 255)) < 30 && Math.abs(b - (rgb & 255)) < 30;
    let drawn = 0;
    let kivi2 = 0;
    let kivi4 = 0;
    for (let i = 0; i < data.length; i += 4) {
      const r = data[i]!;
      const g = data[i + 1]!;
      const b = data[i + 2]!;
      if (r < 245 || g < 245 || b < 245) drawn++;
      if (near(r, g, b, 0xe0533d)) kivi2++;
      if (near(r, g, b, 0x2457d6)) kivi4++;
    }
    return { drawn, kivi2, kivi4, total: width * height };
  });
}

const dataValue = async (page: Page, id: string): Promise<number> => Number(await page.getAttribute(`#${id}`, 'data-value'));

describe('browser demo (examples/browser) in headless Chromium', () => {
  let browser: Browser | undefined;
  let server: ChildProcess | undefined;
  let url = '';
  const problems: string[] = [];
  const ggufDir = mkdtempSync(join(tmpdir(), 'kivi-demo-gguf-'));
  const gguf = join(ggufDir, 'stories260K.q8_0.gguf');
  const truncated = join(ggufDir, 'truncated.gguf');

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: this test needs Debian's chromium (apt-get install chromium)`);
    for (const f of ['stories260K.bin', 'tok512.bin', 'tok4096.bin']) {
      if (!existsSync(join(MODELS, f))) throw new Error(`${join(MODELS, f)} is missing (the models live in ../shared/models)`);
    }
    const model = parseCheckpoint(new Uint8Array(readFileSync(join(MODELS, 'stories260K.bin'))));
    const bytes = convertToGguf(model, Tokenizer.fromBytes(new Uint8Array(readFileSync(join(MODELS, 'tok512.bin'))), 512), { type: 'q8_0' });
    writeFileSync(gguf, bytes);
    writeFileSync(truncated, bytes.subarray(0, bytes.length - 1000));
    ({ server, url } = await startServer());
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  }, 40_000);

  afterAll(async () => {
    await browser?.close();
    server?.kill();
  });

  it('generates stories260K with KIVI-2 in a worker, streams the story and charts the cache', async () => {
    const page = await browser!.newPage({ viewport: { width: 1280, height: 1000 } });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
    });
    page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
    page.on('response', (r) => {
      if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
    });

    await page.goto(url);
    expect(await state(page)).toBe('ready');
    const emptyChart = await chartPixels(page);
    expect(emptyChart.kivi2).toBe(0);
    const variant = (await page.textContent('#stat-variant'))?.trim();
    expect(['relaxed-simd', 'simd', 'scalar']).toContain(variant);
    // The server sends COOP/COEP: the page is cross-origin isolated and the kernels run threaded.
    expect(await page.evaluate(() => crossOriginIsolated)).toBe(true);
    const cores = await page.evaluate(() => navigator.hardwareConcurrency);
    expect(Number((await page.textContent('#stat-threads'))?.trim())).toBe(cores);
    expect(cores).toBeGreaterThan(1);

    // Wrong files give the loaders' messages in the page.
    expect(await run(page, 'tok512.bin', 'tok512.bin')).toBe('error');
    const checkpointError = await page.textContent('#error');
    expect(checkpointError).toMatch(/^Checkpoint "tok512\.bin": parseCheckpoint: /);
    expect(await page.isVisible('#error')).toBe(true);
    expect(await run(page, 'stories260K.bin', 'tok4096.bin')).toBe('error');
    const tokenizerError = await page.textContent('#error');
    expect(tokenizerError).toMatch(/^Tokenizer "tok4096\.bin" .*Tokenizer\.fromBytes: /);

    // The real run: no prompt (greedy from BOS), 150 tokens, KIVI-2, R = 32, sliding key window.
    await page.fill('#prompt', '');
    await page.fill('#steps', String(TOKENS));
    await page.fill('#temperature', '0');
    await page.locator('#bits label', { hasText: 'KIVI-2' }).click();
    expect(await page.isChecked('input[name="bits"][value="2"]')).toBe(true);
    await page.selectOption('#residual', String(CACHE.residual));
    await page.selectOption('#keyWindow', CACHE.keyWindow);
    const started = Date.now();
    const final = await run(page, 'stories260K.bin', 'tok512.bin');
    if (final !== 'done') throw new Error(`the run ended in state ${final}: ${await page.textContent('#error')}`);
    expect(await page.isHidden('#error')).toBe(true);

    const text = (await page.textContent('#output')) ?? '';
    expect(text.startsWith('Once upon a time')).toBe(true);
    expect(text).toMatch(/^Once upon a time, there was a little girl named Lily\./);
    expect(text.length).toBeGreaterThan(300);
    expect(await dataValue(page, 'stat-tokens')).toBe(TOKENS);
    const tps = await dataValue(page, 'stat-tps');
    expect(tps).toBeGreaterThan(0);
    const cacheBytes = await dataValue(page, 'stat-cache');
    const f32Bytes = await dataValue(page, 'stat-f32');
    expect(f32Bytes).toBe(expectedBytes(32, TOKENS)); // 150 × 5 × 2 × 4 × 8 × 4
    expect(cacheBytes).toBeLessThan(f32Bytes);
    expect(cacheBytes).toBe(expectedBytes(2, TOKENS));
    expect(await page.getAttribute('#check', 'data-match')).toBe('true');
    expect(await page.textContent('#stat-variant')).toBe(variant);

    // The chart: a screenshot of the canvas that is not trivially small, and pixels actually drawn.
    const dir = mkdtempSync(join(tmpdir(), 'kivi-demo-browser-'));
    const chartPng = join(dir, 'chart.png');
    const pagePng = join(dir, 'page.png');
    await page.locator('#chart').screenshot({ path: chartPng });
    await page.screenshot({ path: pagePng, fullPage: true });
    console.log(`demo-browser: ${TOKENS} tokens at ${tps.toFixed(0)} tokens/s (${variant}), KIVI-2 ${cacheBytes} B vs f32 ${f32Bytes} B; run took ${Date.now() - started} ms`);
    console.log(`demo-browser: screenshots ${chartPng} and ${pagePng}`);
    expect(statSync(chartPng).size).toBeGreaterThan(8_000);

    const pixels = await chartPixels(page);
    // An empty chart (axes, grid, labels) has about 2% of its pixels drawn; the three lines add more.
    expect(pixels.drawn).toBeGreaterThan(emptyChart.drawn + 2_000);
    expect(pixels.kivi2).toBeGreaterThan(500); // the measured KIVI-2 line, solid
    expect(pixels.kivi4).toBeGreaterThan(100); // the computed KIVI-4 line, dashed

    expect(problems).toEqual([]);
    await page.close();
  }, 60_000);

  it('runs a .gguf file (stories260K as Q8_0) with the tokenizer it carries, and reports a broken one', async () => {
    const page = await browser!.newPage({ viewport: { width: 1280, height: 1000 } });
    const pageProblems: string[] = [];
    page.on('pageerror', (e) => pageProblems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') pageProblems.push(`console error: ${m.text()}`);
    });
    await page.goto(url);
    expect(await state(page)).toBe('ready');
    expect(await page.getAttribute('#checkpoint', 'accept')).toContain('.gguf');

    expect(await run(page, truncated, null)).toBe('error');
    expect(await page.textContent('#error')).toMatch(/^Checkpoint "truncated\.gguf": readGguf: truncated file: tensor /);

    await page.fill('#prompt', '');
    await page.fill('#steps', String(TOKENS));
    await page.fill('#temperature', '0');
    await page.locator('#bits label', { hasText: 'KIVI-2' }).click();
    await page.selectOption('#residual', String(CACHE.residual));
    await page.selectOption('#keyWindow', CACHE.keyWindow);
    const final = await run(page, gguf, null);
    if (final !== 'done') throw new Error(`the GGUF run ended in state ${final}: ${await page.textContent('#error')}`);
    const text = (await page.textContent('#output')) ?? '';
    // Q8_0 weights and int8 activations: the greedy story of the f32 model for its first sentences
    // (measured in Node: identical for the first ~150 characters).
    expect(text).toMatch(/^Once upon a time, there was a little girl named Lily\. She loved to play outside in the park\./);
    expect(await dataValue(page, 'stat-tokens')).toBe(TOKENS);
    expect(await dataValue(page, 'stat-cache')).toBe(expectedBytes(2, TOKENS));
    const info = (await page.textContent('#model-info')) ?? '';
    expect(info).toMatch(/stories260K\.q8_0\.gguf: GGUF, mostly Q8_0 \([\d.]+ [KM]i?B of weights in wasm memory\), tokenizer from the file; dim 64, 5 layers/);
    console.log(`demo-browser (GGUF Q8_0): ${TOKENS} tokens at ${(await dataValue(page, 'stat-tps')).toFixed(0)} tokens/s (${await page.textContent('#stat-variant')})`);
    expect(pageProblems).toEqual([]);
    await page.close();
  }, 60_000);
});

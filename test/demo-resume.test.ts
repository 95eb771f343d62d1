// The browser demo keeps a conversation in OPFS and resumes it after a reload (headless Chromium):
// generate 60 tokens of stories260K with a KIVI-2 cache, reload the page, resume for 40 more (the
// cache restored as its OPFS file streams in), and compare with one uninterrupted run of 100
// tokens: greedy decoding from the restored cache must give the same story, character for character.
// Needs /usr/bin/chromium and a built dist/ (npm test builds first); fails if either is missing.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = join(__dirname, '..');
const MODELS = join(__dirname, '..', '..', 'shared', 'models');
const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function startServer(): Promise<{ server: ChildProcess; url: string }> {
  const server = spawn(process.execPath, [join(ROOT, 'examples', 'browser', 'serve.mjs'), '--port', '0', '--no-build'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
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

async function settled(page: Page): Promise<string> {
  await page.waitForFunction(() => ['done', 'error', 'stopped'].includes(document.body.dataset.state ?? ''), undefined, { timeout: 60_000 });
  return page.evaluate(() => document.body.dataset.state ?? '');
}

async function ready(page: Page): Promise<void> {
  await page.waitForFunction(() => document.body.dataset.state === 'ready', undefined, { timeout: 30_000 });
}

const shownText = (page: Page) => page.evaluate(() => (document.getElementById('out-prompt')!.textContent ?? '') + (document.getElementById('out-gen')!.textContent ?? ''));
const savedTokens = (page: Page) => page.evaluate(() => {
  const panel = document.getElementById('saved')!;
  return panel.hidden ? 0 : Number(panel.dataset.tokens);
});

describe('browser demo: a conversation saved in OPFS resumes after a reload', () => {
  let browser: Browser | undefined;
  let server: ChildProcess | undefined;
  let url = '';
  const problems: string[] = [];

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: this test needs Debian's chromium (apt-get install chromium)`);
    ({ server, url } = await startServer());
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  }, 40_000);

  afterAll(async () => {
    await browser?.close();
    server?.kill();
  });

  it('generates, reloads, resumes from the saved cache and continues exactly as one uninterrupted run', async () => {
    const context = await browser!.newContext({ viewport: { width: 1280, height: 1100 } });
    const page = await context.newPage();
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
    });
    await page.goto(url);
    await ready(page);
    expect(await savedTokens(page), 'a new browser profile has nothing saved').toBe(0);

    const pick = async () => {
      await page.setInputFiles('#checkpoint', join(MODELS, 'stories260K.bin'));
      await page.setInputFiles('#tokenizer', join(MODELS, 'tok512.bin'));
      await page.fill('#temperature', '0');
      await page.check('input[name="bits"][value="2"]');
    };
    await pick();
    await page.fill('#steps', '60');
    await page.click('#run');
    expect(await settled(page)).toBe('done');
    const first = await shownText(page);
    await page.waitForFunction(() => !document.getElementById('saved')!.hidden, undefined, { timeout: 30_000 });
    expect(await savedTokens(page)).toBe(61); // BOS and 60 tokens

    // What is in OPFS, read by the page itself.
    const stored = await page.evaluate(async () => {
      const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle('kivi-demo');
      const size = async (name: string) => (await (await dir.getFileHandle(name)).getFile()).size;
      const head = new Uint8Array(await (await (await dir.getFileHandle('cache.kivi')).getFile()).slice(0, 6).arrayBuffer());
      return { cache: await size('cache.kivi'), checkpoint: await size('checkpoint'), magic: String.fromCharCode(...head.subarray(0, 4)), version: head[4]! | (head[5]! << 8) };
    });
    expect(stored.magic).toBe('KIVI');
    expect(stored.version).toBe(2);
    expect(stored.cache).toBeGreaterThan(1000);

    await page.reload();
    await ready(page);
    expect(await savedTokens(page), 'the saved conversation is found after the reload').toBe(61);
    expect(await page.textContent('#saved-info')).toContain('61 tokens of stories260K.bin');
    await page.fill('#steps', '40');
    await page.click('#resume');
    expect(await settled(page)).toBe('done');
    const resumed = await shownText(page);
    expect(resumed.startsWith(first)).toBe(true);
    expect(resumed.length).toBeGreaterThan(first.length);
    expect(await page.textContent('#model-info')).toMatch(/Resumed from this browser's storage: 61 tokens, a [\d.]+ [KM]?i?B cache restored in \d+ ms/);
    expect(await savedTokens(page), 'the longer conversation is saved in turn').toBe(101);
    await page.screenshot({ path: join(tmpdir(), 'kivi-demo-resume.png') });

    // One run of 100 tokens from the same prompt, without the save and the reload.
    await pick();
    await page.fill('#steps', '100');
    await page.click('#run');
    expect(await settled(page)).toBe('done');
    expect(await shownText(page)).toBe(resumed);

    await page.click('#forget');
    await page.waitForFunction(() => document.getElementById('saved')!.hidden, undefined, { timeout: 10_000 });
    expect(problems).toEqual([]);
    await context.close();
  }, 240_000);
});

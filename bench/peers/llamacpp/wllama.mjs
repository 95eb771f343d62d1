// wllama (llama.cpp in WebAssembly) in Debian's headless Chromium: a local server for the page, the
// wllama package and the GGUF files, and puppeteer-core (the project's own dev dependency) to drive it.
// Every response carries COOP/COEP, so the page is cross-origin isolated and wllama can run threads;
// a job with threads: 1 runs on one. The same page runs kivi-wasm's runner (page/kivi-worker.js, the
// package's dist/ build served at /kivi/), so both engines run in the same browser.
import { createReadStream, existsSync, mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const WLLAMA = join(here, 'node_modules/@wllama/wllama/esm');
/** The package's ESM build (npm run build); the wasm builds are embedded in index.js. */
export const KIVI_DIST = join(here, '../../../dist');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-default-apps', '--disable-extensions', '--no-default-browser-check',
];
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.gguf': 'application/octet-stream' };

export function wllamaVersion() {
  return JSON.parse(readFileSync(join(here, 'node_modules/@wllama/wllama/package.json'), 'utf8')).version;
}

/** Serves /page/*, /wllama/*, /kivi/* (dist/) and /models/<name> (the files given) on 127.0.0.1. */
function serve(models) {
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    let file;
    if (url.pathname.startsWith('/page/')) file = join(here, 'page', normalize(url.pathname.slice(6)));
    else if (url.pathname.startsWith('/wllama/')) file = join(WLLAMA, normalize(url.pathname.slice(8)));
    else if (url.pathname.startsWith('/kivi/')) file = join(KIVI_DIST, normalize(url.pathname.slice(6)));
    else if (url.pathname.startsWith('/models/')) file = models[decodeURIComponent(url.pathname.slice(8))];
    const headers = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp', 'Cache-Control': 'no-store' };
    const allowed = file && (file.startsWith(here) || file.startsWith(KIVI_DIST) || Object.values(models).includes(file));
    if (!allowed || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404, headers).end('not found');
      return;
    }
    res.writeHead(200, { ...headers, 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream', 'Content-Length': statSync(file).size });
    createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** CPU seconds (user + system) used so far by a process and all its descendants (Linux /proc). */
export function treeCpuSeconds(rootPid) {
  const children = new Map();
  const cpu = new Map();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'latin1');
    } catch {
      continue; // gone meanwhile
    }
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // after "pid (comm) "
    const ppid = Number(fields[1]);
    cpu.set(Number(entry), Number(fields[11]) + Number(fields[12])); // utime, stime (clock ticks)
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid).push(Number(entry));
  }
  let ticks = 0;
  for (const stack = [rootPid]; stack.length;) {
    const pid = stack.pop();
    ticks += cpu.get(pid) ?? 0;
    stack.push(...(children.get(pid) ?? []));
  }
  return ticks / 100; // USER_HZ is 100 on Linux
}

/** Opens the page in Chromium; returns { run(job), version, close() }. `models`: name → file path.
 *  Each result carries `cpuSeconds` and `wallSeconds`: the browser's CPU time over the job's wall
 *  time, more than 1 only if the job ran on more than one core. */
export async function openWllama(models, { timeoutSeconds = 3600 } = {}) {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} does not exist: install Debian's chromium (apt-get install chromium)`);
  if (!existsSync(join(WLLAMA, 'index.js'))) throw new Error(`${WLLAMA}/index.js does not exist: cd ${here} && npm ci --omit=optional`);
  if (!existsSync(join(KIVI_DIST, 'index.js')) || !existsSync(join(KIVI_DIST, 'llama2c.js'))) throw new Error(`${KIVI_DIST}/index.js and llama2c.js do not exist: npm run build`);
  const { default: puppeteer } = await import('puppeteer-core');
  const server = await serve(models);
  const { port } = server.address();
  const userDataDir = mkdtempSync(join(tmpdir(), 'kivi-wllama-profile-'));
  const browser = await puppeteer.launch({ browser: 'chrome', executablePath: CHROMIUM, headless: true, userDataDir, args: CHROMIUM_FLAGS, timeout: 60_000, protocolTimeout: timeoutSeconds * 1000 });
  try {
    const page = await browser.newPage();
    const log = [];
    page.on('console', (m) => log.push(`console.${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => log.push(`pageerror: ${e?.message ?? e}`));
    await page.goto(`http://127.0.0.1:${port}/page/index.html`, { waitUntil: 'load' });
    await page.waitForFunction(() => window.pageReady === true, { timeout: 30_000 }).catch(() => {
      throw new Error(`the wllama page did not start:\n${log.join('\n')}`);
    });
    const isolated = await page.evaluate(() => crossOriginIsolated);
    if (!isolated) throw new Error('the wllama page is not cross-origin isolated (COOP/COEP headers missing?)');
    return {
      version: await browser.version(),
      async run(job) {
        const pid = browser.process()?.pid;
        const cpu0 = pid ? treeCpuSeconds(pid) : NaN;
        const t0 = performance.now();
        const result = await page.evaluate((j) => window.runJob(j), job);
        if (!result.ok) throw new Error(`${job.kind.startsWith('kivi-') ? 'kivi-wasm' : 'wllama'} ${job.kind}: ${result.error}\n${(result.logs ?? []).join('\n')}\n${log.slice(-20).join('\n')}`);
        return { ...result, cpuSeconds: pid ? treeCpuSeconds(pid) - cpu0 : NaN, wallSeconds: (performance.now() - t0) / 1000 };
      },
      async close() {
        await browser.close().catch(() => {});
        server.close();
      },
    };
  } catch (error) {
    await browser.close().catch(() => {});
    server.close();
    throw error;
  }
}

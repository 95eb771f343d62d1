#!/usr/bin/env node
// Runs the package in real browsers (no mocks): headless Chromium and Firefox ESR load a plain page
// that imports the built ESM dist, and Chromium loads a Vite-built app that imports `kivi-wasm` by
// name. Every browser runs THE check of ./check.js; its outputs are compared with the float64
// reference (src/reference.ts, through tsx) and with Node's own run of the same dist.
//
//   node test/browsers/run.mjs [--dist DIR] [--package DIR] [--tarball FILE.tgz]
//                              [--chromium PATH] [--firefox PATH] [--only chromium,firefox,vite]
//                              [--json FILE] [--timeout SECONDS]
//
//   --dist      the built dist served as /dist/ to the plain page and imported by Node (default: <root>/dist)
//   --package   the package root the Vite app installs as node_modules/kivi-wasm (default: <root>)
//   --tarball   an `npm pack` tarball: extracted to a temp dir and used for both of the above
//   --chromium  default /usr/bin/chromium (env CHROMIUM_PATH); --firefox default /usr/bin/firefox-esr (env FIREFOX_PATH)
//
// Exit code 0 only if every target passes. A browser that is missing or does not launch fails the
// run. No browser is ever downloaded (puppeteer-core only drives the executables given).
// Everything under /isolated/ is served with COOP/COEP (cross-origin isolated: the worker pool runs,
// with navigator.hardwareConcurrency threads); the rest without (one thread, and kivi.threadsReason
// says why). Each page reports `crossOriginIsolated`, checked against where it was served from.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const TOLERANCE = 2e-3; // relative L2 vs the float64 reference (the package's documented accuracy)
const T0 = performance.now();

// ---------------------------------------------------------------------------------------------
// Options

function parseArgs(argv) {
  const o = {
    dist: path.join(ROOT, 'dist'),
    package: ROOT,
    tarball: null,
    chromium: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    firefox: process.env.FIREFOX_PATH || '/usr/bin/firefox-esr',
    only: ['chromium', 'firefox', 'vite'],
    json: null,
    timeout: 60,
  };
  let distGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    switch (a) {
      case '--dist': o.dist = path.resolve(value()); distGiven = true; break;
      case '--package': o.package = path.resolve(value()); break;
      case '--tarball': o.tarball = path.resolve(value()); break;
      case '--chromium': o.chromium = value(); break;
      case '--firefox': o.firefox = value(); break;
      case '--only': o.only = value().split(',').map((s) => s.trim()).filter(Boolean); break;
      case '--json': o.json = path.resolve(value()); break;
      case '--timeout': o.timeout = Number(value()); break;
      case '-h': case '--help':
        console.log(fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1, 18).map((l) => l.replace(/^\/\/ ?/, '')).join('\n'));
        process.exit(0);
        break;
      default: throw new Error(`unknown argument ${a} (see --help)`);
    }
  }
  for (const t of o.only) if (!['chromium', 'firefox', 'vite'].includes(t)) throw new Error(`--only: unknown target ${t}`);
  if (!(o.timeout > 0)) throw new Error('--timeout must be > 0 seconds');
  if (!distGiven && o.package !== ROOT) o.dist = path.join(o.package, 'dist');
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'kivi-browsers-'));
const cleanups = [() => fs.rmSync(TMP, { recursive: true, force: true })];

if (opts.tarball) {
  const into = path.join(TMP, 'package');
  fs.mkdirSync(into);
  const r = spawnSync('tar', ['-xzf', opts.tarball, '-C', into, '--strip-components=1'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cannot extract ${opts.tarball}: ${r.stderr || r.error}`);
  opts.package = into;
  opts.dist = path.join(into, 'dist');
}
if (!fs.existsSync(path.join(opts.dist, 'index.js'))) {
  console.error(`test/browsers: ${path.join(opts.dist, 'index.js')} does not exist — run \`npm run build\` first (or pass --dist / --tarball)`);
  process.exit(1);
}

// ---------------------------------------------------------------------------------------------
// Static server: 127.0.0.1, free port, no COOP/COEP headers.

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.cjs': 'text/javascript; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.ts': 'text/plain; charset=utf-8',
};

/** URL prefix -> directory (longest prefix first) and single files. */
const mounts = []; // { prefix, dir }
const files = new Map([
  ['/', path.join(HERE, 'page.html')],
  ['/index.html', path.join(HERE, 'page.html')],
  ['/check.js', path.join(HERE, 'check.js')],
  ['/check-worker.js', path.join(HERE, 'check-worker.js')],
]);
mounts.push({ prefix: '/dist/', dir: opts.dist });
const served = { ok: 0, missing: [] };

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  let pathname;
  try { pathname = decodeURIComponent(url.pathname); } catch { pathname = '\0'; }
  const isolated = pathname.startsWith('/isolated/');
  if (isolated) pathname = pathname.slice('/isolated'.length);
  let file = files.get(pathname);
  if (file === undefined) {
    const m = mounts.filter((m) => pathname.startsWith(m.prefix)).sort((a, b) => b.prefix.length - a.prefix.length)[0];
    if (m !== undefined) {
      let rel = pathname.slice(m.prefix.length);
      if (rel === '' || rel.endsWith('/')) rel += 'index.html';
      const candidate = path.resolve(m.dir, rel);
      if (candidate.startsWith(m.dir + path.sep)) file = candidate;
    }
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { Allow: 'GET, HEAD' }).end();
    return;
  }
  if (file === undefined || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
    served.missing.push(pathname);
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
    return;
  }
  const body = fs.readFileSync(file);
  served.ok++;
  res.writeHead(200, {
    'Content-Type': MIME[path.extname(file)] ?? 'application/octet-stream',
    'Content-Length': body.length,
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    ...(isolated ? { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' } : {}),
  });
  res.end(req.method === 'HEAD' ? undefined : body);
});
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
const ORIGIN = `http://127.0.0.1:${server.address().port}`;
cleanups.unshift(() => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }));

// ---------------------------------------------------------------------------------------------
// Expected results: the float64 reference, and Node running the same dist.

const check = await import(pathToFileURL(path.join(HERE, 'check.js')).href);
const { tsImport } = await import('tsx/esm/api');
const ref = await tsImport(pathToFileURL(path.join(ROOT, 'src/reference.ts')).href, import.meta.url);

const tRef = performance.now();
const inputs = check.makeInputs();
const refCache = new ref.ReferenceCache({
  ...check.CACHE_OPTIONS, sinkTokens: 0, keyWindow: 'chunked', keyGrouping: 'channel', valueGrouping: 'token',
});
const expected = check.runOps(refCache, inputs);
const expectedStats = Array.from({ length: check.SHAPE.layers }, (_, l) => {
  const s = refCache.stats(l);
  return { tokens: s.tokens, quantizedKeys: s.quantizedKeys, residualKeys: s.residualKeys, quantizedValues: s.quantizedValues, residualValues: s.residualValues };
});
const expectedHash = check.hashInputs(inputs);
const refMs = performance.now() - tRef;

const tNode = performance.now();
const { Kivi: NodeKivi } = await import(pathToFileURL(path.join(opts.dist, 'index.js')).href);
const node = await withTimeout(check.runCheck(NodeKivi), opts.timeout, 'Node run of the check')
  .catch((e) => ({ ok: false, error: String(e?.message ?? e) }));
node.ms = performance.now() - tNode;

// ---------------------------------------------------------------------------------------------
// Comparison

function compare(a, b) {
  let num = 0, den = 0, maxAbs = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    num += d * d;
    den += b[i] * b[i];
    maxAbs = Math.max(maxAbs, Math.abs(d));
  }
  return { rel: Math.sqrt(num) / Math.sqrt(den), maxAbs, identical: maxAbs === 0 && a.length === b.length };
}

/** Worst relative L2 over the attend calls of one run, against `want` ({ name: array }). */
function worstError(outputs, want) {
  let worst = { rel: 0, name: null, identical: true };
  const names = Object.keys(want);
  const missing = names.filter((n) => outputs?.[n] === undefined || outputs[n].length !== want[n].length);
  if (missing.length > 0) return { rel: Infinity, name: `missing/short outputs: ${missing.slice(0, 3).join(', ')}`, identical: false };
  for (const n of names) {
    const c = compare(outputs[n], want[n]);
    if (!c.identical) worst.identical = false;
    if (!(c.rel <= worst.rel)) worst = { rel: c.rel, name: n, identical: worst.identical };
  }
  return worst;
}

const firstRun = new Map(); // build -> { who, outputs } of the first browser that ran it

/** Every check on one result; returns a list of failures (empty = pass) and table cells. */
function judge(result, expectVariant, { probe = true, isolated = false } = {}) {
  const fail = [];
  if (!result?.ok) {
    const stack = String(result?.stack ?? '').split('\n').filter((l) => l.trim() && !l.includes(result?.error)).slice(0, 6);
    return { fail: [`check failed: ${result?.error ?? 'no result'}${stack.length ? `\n      ${stack.join('\n      ')}` : ''}`], cells: {} };
  }
  if (result.inputHash !== expectedHash) fail.push(`inputs differ from Node's (hash ${result.inputHash} vs ${expectedHash}): the engine's Math differs`);
  if (expectVariant && result.variant !== expectVariant) fail.push(`variant ${result.variant}, expected ${expectVariant}`);
  // Independently of the package: what the engine validates decides what auto must pick (the
  // known-answer check may only veto a build in a runtime known to miscompute it, e.g. Node 20).
  const v = result.env?.validates ?? {};
  const predicted = v.relaxedSimd ? 'relaxed-simd' : v.simd ? 'simd' : 'scalar';
  if (probe && result.variant !== predicted) fail.push(`variant ${result.variant}, but the engine validates ${JSON.stringify(v)}, so ${predicted} was expected`);
  const vsRef = worstError(result.outputs, expected);
  if (!(vsRef.rel < TOLERANCE)) fail.push(`auto (${result.variant}) vs reference: rel. L2 ${vsRef.rel.toExponential(2)} >= ${TOLERANCE} at ${vsRef.name}`);
  if (JSON.stringify(result.stats) !== JSON.stringify(expectedStats)) fail.push(`stats ${JSON.stringify(result.stats)} differ from the reference's ${JSON.stringify(expectedStats)}`);
  if (result.env?.crossOriginIsolated !== null && result.env?.crossOriginIsolated !== isolated) {
    fail.push(`crossOriginIsolated is ${result.env?.crossOriginIsolated}, but the page was served ${isolated ? 'with' : 'without'} COOP/COEP`);
  }
  // Threads: the pool where the page is isolated (and from inside a Worker), one thread with the
  // reason where it is not; the same bits either way.
  const t = result.threads;
  if (!t) fail.push('no threads probe result');
  else {
    if (!t.sameBits) fail.push(`threads ${t.count} and threads 1 gave different bits`);
    if (isolated && !(t.count === result.env?.hardwareConcurrency && t.count > 1)) fail.push(`isolated page: ${t.count} threads, expected navigator.hardwareConcurrency = ${result.env?.hardwareConcurrency} (reason: ${t.reason})`);
    if (!isolated && result.env?.crossOriginIsolated === false && !(t.count === 1 && /not cross-origin isolated/.test(t.reason ?? ''))) fail.push(`plain page: ${t.count} threads (reason ${t.reason}), expected 1 saying the page is not cross-origin isolated`);
  }
  // Every build the runtime loads explicitly must pass too; list the ones it refuses.
  const builds = [];
  let worstBuild = vsRef.rel;
  for (const [name, b] of Object.entries(result.builds ?? {})) {
    if (b.error) { builds.push(`${name}: refused`); continue; }
    const e = worstError(b.outputs, expected);
    worstBuild = Math.max(worstBuild, e.rel);
    // Bit-identical to Node's run of this build, or (builds Node refuses) to the first browser's?
    const other = node.builds?.[name]?.outputs ? { who: 'node', outputs: node.builds[name].outputs } : firstRun.get(name);
    let same = '';
    if (result === node) same = '';
    else if (other) same = worstError(b.outputs, other.outputs).identical ? ` (=${other.who})` : ` (≠${other.who})`;
    else if (result !== node) firstRun.set(name, { who: result.env?.userAgent?.includes('Firefox') ? 'firefox' : 'chromium', outputs: b.outputs });
    builds.push(`${name}: ${e.rel.toExponential(1)}${same}`);
    if (!(e.rel < TOLERANCE)) fail.push(`${name} build vs reference: rel. L2 ${e.rel.toExponential(2)} >= ${TOLERANCE} at ${e.name}`);
    if (JSON.stringify(b.stats) !== JSON.stringify(expectedStats)) fail.push(`${name} build: stats differ from the reference`);
  }
  if (result.builds?.[result.variant]?.error) fail.push(`auto chose ${result.variant}, but loading it explicitly failed`);
  // Node's own run of the same dist.
  const vsNode = node.ok ? worstError(result.outputs, node.outputs) : { rel: NaN, identical: false };
  if (node.ok && !(vsNode.rel < TOLERANCE)) fail.push(`auto vs Node's ${node.variant}: rel. L2 ${vsNode.rel.toExponential(2)} at ${vsNode.name}`);
  if (node.ok && result.variant === node.variant && !vsNode.identical) {
    // Same build, same inputs: WebAssembly arithmetic is deterministic, so expect the same bits.
    fail.push(`same build as Node (${node.variant}) but outputs differ (rel. L2 ${vsNode.rel.toExponential(2)} at ${vsNode.name})`);
  }
  return {
    fail,
    cells: {
      variant: result.variant,
      vsRef: vsRef.rel.toExponential(2),
      vsNode: vsNode.identical ? `identical (${node.variant})` : `${vsNode.rel.toExponential(1)} (${node.variant})`,
      builds: builds.join(', '),
      coi: `${result.env?.crossOriginIsolated === true ? 'yes' : result.env?.crossOriginIsolated === false ? 'no' : 'n/a'}, SAB ${result.env?.sharedArrayBuffer ? 'yes' : 'no'}${result.env?.inWorker ? ', in a Worker' : ''}`,
      threads: result.threads ? `${result.threads.count}${result.threads.sameBits ? ' (= 1 thread)' : ' (≠ 1 thread)'}` : '-',
      relaxed: v.relaxedSimd ? 'yes' : 'no',
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Vite: a user's app that imports `kivi-wasm` by name, built with Vite's JS API in a temp copy.

async function buildVite() {
  const t = performance.now();
  const app = path.join(TMP, 'vite', 'browsers', 'vite-app');
  fs.mkdirSync(app, { recursive: true });
  fs.copyFileSync(path.join(HERE, 'check.js'), path.join(TMP, 'vite', 'browsers', 'check.js'));
  for (const f of ['index.html', 'main.js']) fs.copyFileSync(path.join(HERE, 'vite-app', f), path.join(app, f));
  // The package as an app's dependency: a symlink to the package root (its package.json "exports"
  // decide what `import 'kivi-wasm'` means), or the extracted tarball.
  fs.mkdirSync(path.join(app, 'node_modules'));
  fs.symlinkSync(opts.package, path.join(app, 'node_modules', 'kivi-wasm'), 'dir');
  const outDir = path.join(TMP, 'vite-out');
  const { build } = await import('vite');
  const out = await build({
    root: app,
    base: './',
    configFile: false,
    envDir: false,
    logLevel: 'warn',
    build: { outDir, emptyOutDir: true, minify: true, reportCompressedSize: false },
  });
  const outputs = (Array.isArray(out) ? out : [out]).flatMap((o) => o.output ?? []);
  const assets = outputs.map((o) => `${o.fileName} (${Math.round((o.code ?? o.source ?? '').length / 1024)} KiB)`);
  mounts.push({ prefix: '/vite/', dir: outDir });
  return { ms: performance.now() - t, assets };
}

// ---------------------------------------------------------------------------------------------
// Browsers, through puppeteer-core (CDP for Chromium, WebDriver BiDi for Firefox).

const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-default-apps', '--disable-extensions', '--no-default-browser-check',
];
const FIREFOX_PREFS = {
  // nothing but 127.0.0.1 is reachable; keep Firefox from trying
  'network.captive-portal-service.enabled': false,
  'network.connectivity-service.enabled': false,
  'app.update.enabled': false,
  'browser.safebrowsing.update.enabled': false,
  'extensions.update.enabled': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'toolkit.telemetry.enabled': false,
};

function withTimeout(promise, seconds, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: timed out after ${seconds} s`)), seconds * 1000); }),
  ]).finally(() => clearTimeout(timer));
}

async function launch(kind, prefs = {}) {
  const exe = kind === 'chromium' ? opts.chromium : opts.firefox;
  if (!fs.existsSync(exe)) throw new Error(`${exe} does not exist (install Debian's ${kind === 'chromium' ? 'chromium' : 'firefox-esr'}, or pass --${kind})`);
  const { default: puppeteer } = await import('puppeteer-core');
  const userDataDir = fs.mkdtempSync(path.join(TMP, `${kind}-profile-`));
  const browser = await puppeteer.launch(kind === 'chromium'
    ? { browser: 'chrome', executablePath: exe, headless: true, userDataDir, args: CHROMIUM_FLAGS, timeout: 30_000, protocolTimeout: opts.timeout * 1000 }
    : { browser: 'firefox', executablePath: exe, headless: true, userDataDir, extraPrefsFirefox: { ...FIREFOX_PREFS, ...prefs }, timeout: 30_000, protocolTimeout: opts.timeout * 1000 });
  return { browser, version: await browser.version() };
}

/** Opens `url` in a fresh context, waits for window.__result, returns it with the page's console. */
async function visit(browser, url) {
  const context = await browser.createBrowserContext();
  const log = [];
  try {
    const page = await context.newPage();
    page.on('console', (m) => log.push(`console.${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => log.push(`pageerror: ${e?.message ?? e}`));
    page.on('requestfailed', (r) => log.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`));
    const t = performance.now();
    const response = await page.goto(url, { waitUntil: 'load', timeout: opts.timeout * 1000 });
    if (!response?.ok()) throw new Error(`GET ${url}: HTTP ${response?.status()}`);
    await page.waitForFunction(() => window.__result !== undefined, { timeout: opts.timeout * 1000, polling: 50 })
      .catch((e) => {
        throw new Error(`no window.__result within ${opts.timeout} s (${e?.message ?? e})${log.length ? `; page log:\n      ${log.slice(0, 20).join('\n      ')}` : ''}`);
      });
    // As JSON text: the protocols' own serializers may merge or drop repeated structures.
    const result = JSON.parse(await page.evaluate(() => JSON.stringify(window.__result)));
    return { result, log, ms: performance.now() - t };
  } finally {
    await context.close().catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Run

const rows = [];
rows.push({
  target: 'node (same dist, baseline)', browser: `node ${process.version}`, expect: null,
  ...judgeRow(node, null, { probe: false }), ms: node.ms,
});

function judgeRow(result, expectVariant, how) {
  const j = judge(result, expectVariant, how);
  return { ...j.cells, fail: j.fail };
}

const vitePromise = opts.only.includes('vite') ? buildVite().then((v) => ({ v }), (e) => ({ e })) : null;

async function runBrowser(kind, targets, prefs) {
  const t = performance.now();
  const first = rows.length;
  let launched;
  try {
    launched = await withTimeout(launch(kind, prefs), 45, `launching ${kind}`);
  } catch (e) {
    for (const target of targets) {
      rows.push({ target: target.name, browser: kind, version: '-', fail: [`${kind} did not launch: ${e?.message ?? e}`], ms: performance.now() - t });
    }
    return;
  }
  const launchMs = performance.now() - t;
  try {
    for (const target of targets) {
      const t1 = performance.now();
      try {
        const url = await target.url();
        const v = await withTimeout(visit(launched.browser, url), opts.timeout + 5, `${target.name}`);
        const row = { target: target.name, browser: kind, version: launched.version, ...judgeRow(v.result, target.expect, { isolated: target.isolated === true }), ms: v.ms, extra: target.extra };
        if (row.fail.length > 0 && v.log.length > 0) row.fail.push(`page log:\n      ${v.log.slice(0, 20).join('\n      ')}`);
        rows.push(row);
      } catch (e) {
        rows.push({ target: target.name, browser: kind, version: launched.version, fail: [String(e?.message ?? e)], ms: performance.now() - t1 });
      }
    }
  } finally {
    await withTimeout(launched.browser.close(), 15, `closing ${kind}`).catch((e) => {
      console.error(`warning: ${e.message}; killing it`);
      launched.browser.process()?.kill('SIGKILL');
    });
  }
  rows.slice(first).forEach((r) => { r.launchMs = launchMs; });
}

const chromiumTargets = [];
if (opts.only.includes('chromium')) {
  chromiumTargets.push({ name: 'chromium plain page', expect: 'relaxed-simd', url: async () => `${ORIGIN}/` });
  chromiumTargets.push({ name: 'chromium isolated page (threads)', expect: 'relaxed-simd', isolated: true, url: async () => `${ORIGIN}/isolated/` });
  chromiumTargets.push({ name: 'chromium isolated, in a Worker', expect: 'relaxed-simd', isolated: true, url: async () => `${ORIGIN}/isolated/?worker` });
}
if (opts.only.includes('vite')) {
  chromiumTargets.push({
    name: 'chromium vite', expect: 'relaxed-simd',
    url: async () => {
      const r = await vitePromise;
      if (r.e) throw new Error(`vite build failed: ${r.e?.stack ?? r.e}`);
      viteInfo = r.v;
      return `${ORIGIN}/vite/`;
    },
  });
}
let viteInfo = null;
if (chromiumTargets.length > 0) await runBrowser('chromium', chromiumTargets);
if (opts.only.includes('firefox')) {
  // Firefox ESR 153 validates relaxed SIMD (auto must then pick relaxed-simd, as the probe says);
  // with relaxed SIMD switched off, Kivi.load() must fall back to the simd build.
  await runBrowser('firefox', [
    { name: 'firefox-esr plain page', expect: null, url: async () => `${ORIGIN}/` },
    { name: 'firefox-esr isolated page (threads)', expect: null, isolated: true, url: async () => `${ORIGIN}/isolated/` },
    { name: 'firefox-esr isolated, in a Worker', expect: null, isolated: true, url: async () => `${ORIGIN}/isolated/?worker` },
  ]);
  await runBrowser('firefox', [{ name: 'firefox-esr, relaxed SIMD off', expect: 'simd', url: async () => `${ORIGIN}/` }],
    { 'javascript.options.wasm_relaxed_simd': false });
}

for (const c of cleanups) await c();

// ---------------------------------------------------------------------------------------------
// Report

const pad = (s, n) => String(s ?? '').padEnd(n);
const header = ['target', 'browser version', 'relaxed SIMD', 'variant', 'threads', 'rel. err vs ref', 'vs node', 'isolated', 'time', 'result'];
const table = rows.map((r) => [
  r.target,
  r.version ?? r.browser,
  r.relaxed ?? '-',
  r.variant ? (r.expect && r.expect !== r.variant ? `${r.variant} (want ${r.expect})` : r.variant) : '-',
  r.threads ?? '-',
  r.vsRef ?? '-',
  r.vsNode ?? '-',
  r.coi ?? '-',
  `${(r.ms / 1000).toFixed(2)} s`,
  r.fail.length === 0 ? 'PASS' : 'FAIL',
]);
const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => String(row[i]).length)));
const shown = (p) => (path.relative(process.cwd(), p).startsWith('..') ? p : path.relative(process.cwd(), p) || '.');
console.log(`\nkivi-wasm in browsers — dist: ${shown(opts.dist)}${opts.tarball ? ` (from ${path.basename(opts.tarball)})` : ''}; ` +
  `check: ${check.SHAPE.layers} layers, ${check.SHAPE.kvHeads} kv / ${check.SHAPE.queryHeads} q heads, D ${check.SHAPE.headDim}, ` +
  `${check.SHAPE.bits}-bit, G ${check.SHAPE.groupSize}, R ${check.SHAPE.residual}; ${check.SHAPE.prefill} prefill + ${check.SHAPE.decode} decode tokens; ` +
  `${Object.keys(expected).length} attend calls per run (q = 1 and 3); inputs ${expectedHash}; tolerance ${TOLERANCE}`);
console.log(header.map((h, i) => pad(h, widths[i])).join(' | '));
console.log(widths.map((w) => '-'.repeat(w)).join('-|-'));
for (const row of table) console.log(row.map((c, i) => pad(c, widths[i])).join(' | '));
console.log('\nbuilds each runtime loads explicitly: worst rel. err vs ref (=X: bit-identical to X\'s run of that build):');
for (const r of rows) console.log(`  ${pad(r.target, widths[0])}  ${r.builds ?? '-'}`);
if (viteInfo) console.log(`\nvite build: ${(viteInfo.ms / 1000).toFixed(2)} s → ${viteInfo.assets.join(', ')}`);
const launches = [...new Set(rows.filter((r) => r.launchMs).map((r) => r.launchMs))]
  .map((ms) => `${rows.filter((r) => r.launchMs === ms).map((r) => r.target).join(' + ')} ${(ms / 1000).toFixed(2)} s`);
if (launches.length) console.log(`browser launch (per launch): ${launches.join(', ')}; reference ${(refMs / 1000).toFixed(2)} s`);
if (served.missing.length) console.log(`server 404s: ${served.missing.join(', ')}`);

const failed = rows.filter((r) => r.fail.length > 0);
for (const r of failed) console.log(`\nFAIL ${r.target}:\n  - ${r.fail.join('\n  - ')}`);
const total = (performance.now() - T0) / 1000;
console.log(`\n${failed.length === 0 ? 'PASS' : 'FAIL'}: ${rows.length - failed.length}/${rows.length} passed; total ${total.toFixed(1)} s`);

if (opts.json) {
  fs.writeFileSync(opts.json, JSON.stringify({ ok: failed.length === 0, totalSeconds: total, rows: rows.map(({ extra, ...r }) => r) }, null, 2));
}
process.exit(failed.length === 0 ? 0 : 1);

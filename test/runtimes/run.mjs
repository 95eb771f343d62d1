#!/usr/bin/env node
// The runtime matrix (npm run test:runtimes): the packed package, installed from its tarball into a
// scratch project, runs the same check (check.mjs) in Node 20 (this node; ESM and CommonJS), Node 22,
// Node 24, Deno, Bun and workerd, and every output is compared with the float64 reference.
//
//   1. npm run build; npm pack (into a temp dir); scripts/pack-check.mjs on the tarball (file list,
//      no bare imports, no base64 in the workerd entry, publint, arethetypeswrong).
//   2. <tmp>/runtimes: npm ci of test/runtimes/package.json + package-lock.json (the runtimes, pinned).
//      <tmp>/app: a project that depends on the tarball (npm install), with check.mjs and its entries.
//   3. The reference: reference.ts on src/reference.ts (float64), through tsx.
//   4. Every runtime runs the check; workerd serves the check as a Worker bundled like wrangler does
//      (esbuild, conditions workerd/worker/browser, .wasm imports as modules) on 127.0.0.1:<free port>.
//   5. A table: runtime, version, build chosen by Kivi.load(), relative L2 error against the
//      reference (auto and Kivi.load({ module: scalar })), pass/fail.
//   6. The browsers from the same tarball: test/browsers/run.mjs (headless Chromium and Firefox ESR,
//      a plain <script type="module"> page each, and a Vite-built page in Chromium).
// Exit code 1 on any failure: a runtime or browser that cannot run fails the run; nothing is skipped.
//
// Options: --keep (keep the temp dir), --no-build (use dist/ as it is).
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { checkTarball } from '../../scripts/pack-check.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const args = new Set(process.argv.slice(2));
const TOLERANCE = 2e-3; // relative L2 against float64 attention over the same cache (README, Accuracy)
const TIMEOUT_MS = 120_000;
const cores = availableParallelism();
const nodeMajor = Number(process.versions.node.split('.')[0]);

// Child processes get this environment: no NODE_OPTIONS (vitest's flags would change what Node
// validates), no update checks.
const env = { ...process.env, DENO_NO_UPDATE_CHECK: '1', NO_COLOR: '1' };
delete env.NODE_OPTIONS;

const started = performance.now();
const timings = [];
async function step(name, fn) {
  const t0 = performance.now();
  process.stdout.write(`== ${name}\n`);
  try {
    return await fn();
  } finally {
    timings.push([name, (performance.now() - t0) / 1000]);
  }
}

/** Runs a command to completion; resolves with stdout, rejects with stdout+stderr on failure/timeout. */
function exec(command, argv, { cwd, inherit = false, timeout = TIMEOUT_MS } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, argv, { cwd, env, stdio: ['ignore', inherit ? 'inherit' : 'pipe', inherit ? 'inherit' : 'pipe'] });
    let out = '';
    let err = '';
    child.stdout?.on('data', (d) => (out += d));
    child.stderr?.on('data', (d) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeout);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${basename(command)} ${argv.join(' ')} exited with ${signal ?? code}${signal === 'SIGKILL' ? ` (timeout ${timeout / 1000}s)` : ''}\n${(out + err).trim().slice(-4000)}`));
    });
  });
}

const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function decode(base64, Type) {
  const bytes = Buffer.from(base64, 'base64');
  return new Type(bytes.buffer, bytes.byteOffset, bytes.byteLength / Type.BYTES_PER_ELEMENT);
}

function maxAbsDiff(a, b) {
  if (a.length !== b.length) return Infinity;
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

function relativeL2(got, want) {
  if (got.length !== want.length) return Infinity;
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    const d = got[i] - want[i];
    num += d * d;
    den += want[i] * want[i];
  }
  return Number.isFinite(num) ? Math.sqrt(num / den) : Infinity;
}

// ---------------------------------------------------------------------------------------------

const tmp = mkdtempSync(join(tmpdir(), 'kivi-wasm-runtimes-'));
const rows = [];
let baseline; // the first runtime's outputs: the others are compared with them too (for the table)
let failed = false;
let workerd;

try {
  if (!args.has('--no-build')) await step('build', () => exec(npm, ['run', 'build'], { cwd: root, inherit: true }));

  const tarball = await step('pack + pack-check', async () => {
    const packed = JSON.parse(await exec(npm, ['pack', '--json', '--ignore-scripts', '--pack-destination', tmp], { cwd: root }));
    const file = join(tmp, packed[0].filename);
    const { files, problems } = checkTarball(file);
    console.log(`${packed[0].filename}: ${files.length} files, ${packed[0].size} bytes packed; publint and arethetypeswrong ${problems.length ? 'ran' : 'report nothing'}`);
    if (problems.length) {
      failed = true;
      console.log(`pack-check FAILED:\n- ${problems.join('\n- ')}`);
    }
    return file;
  });

  const runtimes = join(tmp, 'runtimes');
  const app = join(tmp, 'app');
  await step('install the runtimes (npm ci)', async () => {
    mkdirSync(runtimes);
    for (const f of ['package.json', 'package-lock.json']) copyFileSync(join(here, f), join(runtimes, f));
    await exec(npm, ['ci', '--no-audit', '--no-fund'], { cwd: runtimes, timeout: 600_000 });
  });
  await step('install the tarball into a scratch project', async () => {
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({
      name: 'kivi-wasm-runtime-check', private: true, type: 'module',
      dependencies: { 'kivi-wasm': `file:${tarball}` },
    }, null, 2));
    for (const f of ['check.mjs', 'main.mjs', 'main.cjs', 'worker.mjs']) copyFileSync(join(here, f), join(app, f));
    // The fs-streams example (examples/node-fs), run below in Node, Deno and Bun.
    mkdirSync(join(app, 'node-fs'));
    for (const f of ['cache-file.mjs', 'demo.mjs']) copyFileSync(join(root, 'examples', 'node-fs', f), join(app, 'node-fs', f));
    await exec(npm, ['install', '--no-audit', '--no-fund'], { cwd: app, timeout: 300_000 });
  });

  const reference = await step('float64 reference (src/reference.ts)', async () => {
    const out = await exec(process.execPath, ['--import', 'tsx', join(here, 'reference.ts')], { cwd: root });
    return decode(JSON.parse(out).output, Float64Array);
  });

  const bin = (...p) => join(runtimes, 'node_modules', ...p);
  const matrix = [
    { name: `node ${nodeMajor} (ESM)`, expect: nodeMajor <= 20 ? 'simd' : 'relaxed-simd', major: nodeMajor, threads: cores, run: () => exec(process.execPath, ['main.mjs'], { cwd: app }) },
    { name: `node ${nodeMajor} (CJS)`, expect: nodeMajor <= 20 ? 'simd' : 'relaxed-simd', major: nodeMajor, threads: cores, run: () => exec(process.execPath, ['main.cjs'], { cwd: app }) },
    { name: 'node 22', expect: 'relaxed-simd', major: 22, threads: cores, run: () => exec(bin('node22', 'bin', 'node'), ['main.mjs'], { cwd: app }) },
    { name: 'node 24', expect: 'relaxed-simd', major: 24, threads: cores, float16: true, run: () => exec(bin('node24', 'bin', 'node'), ['main.mjs'], { cwd: app }) },
    { name: 'deno', threads: cores, float16: true, run: () => exec(bin('.bin', 'deno'), ['run', '--no-lock', '--allow-read', 'main.mjs'], { cwd: app }) },
    { name: 'bun', threads: cores, float16: true, run: () => exec(bin('.bin', 'bun'), ['--no-install', 'main.mjs'], { cwd: app }) },
    // workerd has no threads: one, and the reason says so.
    { name: 'workerd', threads: 1, reason: /Cloudflare Workers have no threads/, run: () => runWorkerd(runtimes, app) },
  ];

  await step('runtimes', async () => {
    for (const runtime of matrix) {
      const row = { runtime: runtime.name, version: '', variant: '', error: '', moduleError: '', status: 'FAIL', note: '' };
      rows.push(row);
      const t0 = performance.now();
      try {
        const result = JSON.parse(await runtime.run());
        row.version = result.runtime;
        if (result.error) throw new Error(result.error);
        row.variant = result.variant;
        const output = decode(result.output, Float32Array);
        const err = relativeL2(output, reference);
        baseline ??= { name: runtime.name, output };
        row.delta = maxAbsDiff(output, baseline.output);
        const moduleErr = relativeL2(decode(result.moduleOutput, Float32Array), reference);
        row.error = err.toExponential(2);
        row.moduleError = `${moduleErr.toExponential(2)} (${result.moduleVariant})`;
        const problems = [];
        if (!(err < TOLERANCE)) problems.push(`error ${row.error} >= ${TOLERANCE}`);
        if (!(moduleErr < TOLERANCE)) problems.push(`module error ${moduleErr} >= ${TOLERANCE}`);
        if (result.moduleVariant !== 'scalar') problems.push(`Kivi.load({ module: scalar }) ran ${result.moduleVariant}`);
        if (runtime.expect && result.variant !== runtime.expect) problems.push(`expected the ${runtime.expect} build`);
        row.threads = `${result.threads}${result.threadsReason ? ` (${result.threadsReason})` : ''}`;
        if (result.threads !== runtime.threads) problems.push(`expected ${runtime.threads} threads, got ${row.threads}`);
        // Asked for 2: where threads run, 2 run; where they cannot, 1 and the reason.
        const two = result.askedTwo;
        if (runtime.reason ? !(two.threads === 1 && runtime.reason.test(two.reason ?? '')) : two.threads !== 2) {
          problems.push(`threads: 2 gave ${two.threads} threads (reason: ${two.reason})`);
        }
        if (!result.singleThreadSameBits) problems.push('threads: 1 did not give the same bits as the default threads');
        row.float16 = result.float16;
        if (runtime.float16 && result.float16 !== 'same bits as f32') problems.push(`Float16Array inputs: ${result.float16}`);
        if (result.float16 === 'different bits') problems.push('Float16Array inputs gave different bits than f32 holding the same values');
        if (runtime.major && !result.runtime.startsWith(`node ${runtime.major}.`)) problems.push(`expected node ${runtime.major}`);
        if (runtime.name === 'workerd') row.version = workerd.version;
        if (problems.length) throw new Error(problems.join('; '));
        row.status = 'pass';
      } catch (error) {
        row.note = String(error.message ?? error).split('\n').slice(0, 12).join('\n    ');
      }
      row.seconds = ((performance.now() - t0) / 1000).toFixed(1);
      if (row.status !== 'pass') failed = true;
      console.log(`${row.runtime}: ${row.status}${row.note ? `\n    ${row.note}` : ''}`);
    }
  });

  // A cache written to a file with fs streams and restored from it (examples/node-fs/demo.mjs): a
  // 4-layer KIVI-2 cache of 4096 tokens in 1 MiB chunks, restored bit-identically, in each runtime.
  await step('fs streams (examples/node-fs) in Node, Deno, Bun', async () => {
    const file = (name) => join(tmp, `fs-${name}.cache`);
    for (const [name, run] of [
      ['node', () => exec(process.execPath, ['node-fs/demo.mjs', file('node')], { cwd: app })],
      ['deno', () => exec(bin('.bin', 'deno'), ['run', '--no-lock', '--allow-read', '--allow-write', '--allow-env', '--allow-sys', 'node-fs/demo.mjs', file('deno')], { cwd: app })],
      ['bun', () => exec(bin('.bin', 'bun'), ['--no-install', 'node-fs/demo.mjs', file('bun')], { cwd: app })],
    ]) {
      try {
        const out = (await run()).trim();
        if (!/restored attends bit-identically/.test(out)) throw new Error(out);
        console.log(`${name}: ${out}`);
      } catch (error) {
        failed = true;
        console.log(`${name}: fs streams FAILED: ${String(error.message ?? error).split('\n').slice(0, 8).join('\n    ')}`);
      }
    }
  });

  // The browsers (headless Chromium and Firefox ESR from Debian, and a Vite-built page in Chromium)
  // run the same check from the same tarball: test/browsers/run.mjs.
  await step('browsers (test/browsers/run.mjs, from the tarball)', async () => {
    try {
      await exec(process.execPath, [join(root, 'test', 'browsers', 'run.mjs'), '--tarball', tarball], { cwd: root, inherit: true, timeout: 600_000 });
    } catch (error) {
      failed = true;
      console.log(`browsers FAILED: ${String(error.message ?? error).split('\n')[0]}`);
    }
  });
} catch (error) {
  failed = true;
  console.error(`\nthe matrix could not run: ${error.stack ?? error}`);
} finally {
  workerd?.stop();
  if (args.has('--keep')) console.log(`kept ${tmp}`);
  else rmSync(tmp, { recursive: true, force: true });
}

if (rows.length) {
  const header = ['runtime', 'version', 'wasm build', 'threads', 'rel. L2 (auto)', 'rel. L2 (module: scalar)', `max |Δ| vs ${baseline?.name ?? '-'}`, 'f16 inputs', 'time s', 'result'];
  const table = rows.map((r) => [r.runtime, r.version, r.variant, r.threads ?? '', r.error, r.moduleError, r.delta === undefined ? '' : r.delta === 0 ? '0 (identical)' : r.delta.toExponential(2), r.float16 ?? '', r.seconds ?? '', r.status]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((t) => String(t[i]).length)));
  const line = (cells) => `| ${cells.map((c, i) => String(c).padEnd(widths[i])).join(' | ')} |`;
  console.log(`\n${line(header)}\n| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |\n${table.map(line).join('\n')}`);
  console.log(`\nreference: float64 ReferenceCache (src/reference.ts); tolerance: relative L2 < ${TOLERANCE}`);
}
console.log(`\ntimings: ${timings.map(([n, s]) => `${n} ${s.toFixed(1)}s`).join(', ')}; total ${((performance.now() - started) / 1000).toFixed(1)}s`);
console.log(failed ? '\ntest:runtimes FAILED' : '\ntest:runtimes: every runtime passed');
process.exit(failed ? 1 : 0);

// ---------------------------------------------------------------------------------------------

/** Bundles worker.mjs like wrangler, serves it with `workerd serve`, fetches the check's JSON. */
async function runWorkerd(runtimes, app) {
  const dir = join(app, 'workerd');
  mkdirSync(dir);
  const esbuild = await import(pathToFileURL(join(runtimes, 'node_modules', 'esbuild', 'lib', 'main.js')).href);
  const wasmModules = new Map(); // module name -> file
  const bundle = await esbuild.build({
    entryPoints: [join(app, 'worker.mjs')],
    outfile: join(dir, 'worker.js'),
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    conditions: ['workerd', 'worker', 'browser'], // wrangler's
    mainFields: ['browser', 'module', 'main'],
    logLevel: 'silent',
    plugins: [{
      name: 'wasm-modules', // wrangler's CompiledWasm rule: `.wasm` imports become wasm modules of the worker
      setup(build) {
        build.onResolve({ filter: /\.wasm$/ }, async (a) => {
          if (a.pluginData?.resolving) return undefined;
          const resolved = await build.resolve(a.path, { kind: a.kind, resolveDir: a.resolveDir, importer: a.importer, pluginData: { resolving: true } });
          if (resolved.errors.length) return { errors: resolved.errors };
          const name = basename(resolved.path);
          wasmModules.set(name, resolved.path);
          return { path: `./${name}`, external: true };
        });
      },
    }],
  });
  if (bundle.errors.length) throw new Error(`esbuild: ${JSON.stringify(bundle.errors)}`);
  const code = readFileSync(join(dir, 'worker.js'), 'utf8');
  if (/AGFzbQ/.test(code)) throw new Error('the worker bundle embeds base64 wasm: the workerd export condition was not used');
  for (const [name, file] of wasmModules) cpSync(file, join(dir, name));

  const version = (await exec(join(runtimes, 'node_modules', '.bin', 'workerd'), ['--version'])).trim();
  const compatibilityDate = version.match(/\d{4}-\d{2}-\d{2}/)?.[0] ?? '2025-01-01';
  const port = await freePort();
  writeFileSync(join(dir, 'config.capnp'), `using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [ (name = "main", worker = .checkWorker) ],
  sockets = [ (name = "http", address = "127.0.0.1:${port}", http = (), service = "main") ],
);

const checkWorker :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
${[...wasmModules.keys()].map((name) => `    (name = "${name}", wasm = embed "${name}"),`).join('\n')}
  ],
  compatibilityDate = "${compatibilityDate}",
);
`);

  const child = spawn(join(runtimes, 'node_modules', '.bin', 'workerd'), ['serve', 'config.capnp'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  let exited = null;
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  child.on('exit', (code, signal) => (exited = signal ?? code));
  workerd = {
    version,
    stop() {
      if (exited === null) child.kill('SIGTERM');
    },
  };
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (exited !== null) throw new Error(`workerd exited (${exited}) before serving:\n${log.trim()}`);
      try {
        const response = await fetch(`http://127.0.0.1:${port}/`);
        const text = await response.text();
        if (!response.ok) throw Object.assign(new Error(`HTTP ${response.status}: ${text}\n${log.trim()}`), { fatal: true });
        return text;
      } catch (error) {
        if (error.fatal || Date.now() > deadline) throw error;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } finally {
    workerd.stop();
  }
}

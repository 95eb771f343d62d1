#!/usr/bin/env node
// Serves the browser demo on 127.0.0.1: this folder at /, the package's build (dist/) at /dist/.
// Builds the package first (npm run build) when dist/ is missing or older than the sources.
//
//   node examples/browser/serve.mjs [--port 5180] [--host 127.0.0.1] [--no-build]
//
// (npm run demo:browser runs it.) --port 0 picks a free port. No dependencies: node:http only.
// Every response carries COOP/COEP, so the page is cross-origin isolated and the kernels run threaded.

import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, extname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..', '..');
const DIST = join(ROOT, 'dist');
/** What the page needs from dist/. */
const DIST_FILES = ['index.js', 'llama2c.js'];
/** What the build reads (a newer file here means dist/ is stale). */
const SOURCES = ['src', 'assembly', 'scripts/build-wasm.mjs', 'tsup.config.ts', 'asconfig.json'];

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

function parseArgs(argv) {
  const args = { port: process.env.PORT === undefined ? undefined : Number(process.env.PORT), host: '127.0.0.1', build: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) fail(`${a} needs a value`);
      return v;
    };
    if (a === '--port') args.port = Number(value());
    else if (a.startsWith('--port=')) args.port = Number(a.slice(7));
    else if (a === '--host') args.host = value();
    else if (a === '--no-build') args.build = false;
    else if (a === '--help' || a === '-h') {
      console.log('usage: node examples/browser/serve.mjs [--port 5180] [--host 127.0.0.1] [--no-build]');
      process.exit(0);
    } else fail(`unknown argument ${a} (try --help)`);
  }
  if (args.port !== undefined && !(Number.isInteger(args.port) && args.port >= 0 && args.port < 65536)) fail(`--port must be 0..65535, got ${args.port}`);
  return args;
}

function fail(message) {
  console.error(`serve.mjs: ${message}`);
  process.exit(1);
}

/** Newest modification time of a file or of the files under a folder. */
function newestMtime(path) {
  let st;
  try {
    st = statSync(path);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = 0;
  for (const entry of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, entry)));
  return newest;
}

/** Why dist/ must be (re)built, or null when it is up to date. */
function staleReason() {
  let oldest = Infinity;
  for (const f of DIST_FILES) {
    try {
      oldest = Math.min(oldest, statSync(join(DIST, f)).mtimeMs);
    } catch {
      return `dist/${f} is missing`;
    }
  }
  for (const s of SOURCES) if (newestMtime(join(ROOT, s)) > oldest) return `${s} is newer than dist/`;
  return null;
}

function buildIfNeeded(allowed) {
  const reason = staleReason();
  if (reason === null) return;
  if (!allowed) {
    if (reason.endsWith('missing')) fail(`${reason}; run \`npm run build\` first (or drop --no-build)`);
    console.error(`serve.mjs: note: ${reason}; serving it anyway (--no-build)`);
    return;
  }
  console.error(`serve.mjs: ${reason}: running npm run build…`);
  // Build output goes to stderr so that stdout carries only the URL line.
  const r = spawnSync('npm', ['run', 'build'], { cwd: ROOT, stdio: ['ignore', 2, 2], shell: process.platform === 'win32' });
  if (r.status !== 0) fail(`npm run build failed (${r.error?.message ?? `exit code ${r.status}`})`);
}

// dist/ files are kept in memory and re-read when their modification time changes, so that a
// rebuild running while the server is up (tsup first empties dist/) does not break a page load.
const distCache = new Map();
function distFile(name) {
  const path = join(DIST, name);
  try {
    const mtimeMs = statSync(path).mtimeMs;
    const cached = distCache.get(name);
    if (cached?.mtimeMs === mtimeMs) return cached.body;
    const body = readFileSync(path);
    distCache.set(name, { mtimeMs, body });
    return body;
  } catch {
    return distCache.get(name)?.body ?? null;
  }
}

/** The file a URL path names: /dist/… from dist/, everything else from this folder; null if outside. */
function lookup(urlPath) {
  let path;
  try {
    path = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (path.includes('\0')) return null;
  if (path === '/' || path === '') path = '/index.html';
  if (path.startsWith('/dist/')) {
    const name = path.slice('/dist/'.length);
    const full = resolve(DIST, name);
    if (!full.startsWith(DIST + sep)) return null;
    const body = distFile(relative(DIST, full));
    return body === null ? null : { body, type: TYPES[extname(full)] ?? 'application/octet-stream' };
  }
  const full = resolve(HERE, `.${path}`);
  if (!full.startsWith(HERE + sep)) return null;
  try {
    if (!statSync(full).isFile()) return null;
    return { body: readFileSync(full), type: TYPES[extname(full)] ?? 'application/octet-stream' };
  } catch {
    return null;
  }
}

function serve(args) {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    const found = lookup(url.pathname);
    if (found === null) {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end(`not found: ${url.pathname}\n`);
      return;
    }
    res.writeHead(200, {
      'content-type': found.type,
      'content-length': found.body.length,
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      // Cross-origin isolation: SharedArrayBuffer, so the kernels run on a worker pool.
      'cross-origin-opener-policy': 'same-origin',
      'cross-origin-embedder-policy': 'require-corp',
    });
    res.end(req.method === 'HEAD' ? undefined : found.body);
  });

  const explicit = args.port !== undefined;
  const listen = (port) => server.listen(port, args.host);
  server.on('error', (e) => {
    if (e.code === 'EADDRINUSE' && !explicit) {
      console.error(`serve.mjs: port ${DEFAULT_PORT} is in use, taking a free one`);
      listen(0);
      return;
    }
    fail(`cannot listen on ${args.host}:${args.port ?? DEFAULT_PORT}: ${e.message}`);
  });
  server.on('listening', () => {
    const { port } = server.address();
    const host = args.host.includes(':') ? `[${args.host}]` : args.host;
    console.log(`kivi-wasm browser demo: http://${host}:${port}/`);
    console.error('  open it, pick a checkpoint and its tokenizer (e.g. stories260K.bin + tok512.bin) and Generate; Ctrl+C stops the server');
  });
  listen(explicit ? args.port : DEFAULT_PORT);

  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

const DEFAULT_PORT = 5180;
const args = parseArgs(process.argv.slice(2));
buildIfNeeded(args.build);
for (const f of DIST_FILES) if (distFile(f) === null) fail(`dist/${f} is missing; run \`npm run build\``);
serve(args);

// The Worker under `wrangler dev` (workerd with KV and R2 simulated on this machine), on 127.0.0.1:
//
// 1. stories3M (read from ../shared/models at test time, uploaded to the local R2): a 512-token
//    system prompt (the model's whole context) is prefilled once and its KIVI-2 cache stored in KV;
//    the first token after it, from the cache in KV, is the token and the logits (SHA-256 of their
//    bytes) of recomputing the prefill, and the restored cache attends bit-identically to the one
//    the prefill made. Time to first token, both ways, as the client sees it (warm isolate, medians),
//    and once from a freshly started Worker (model read from R2 again).
// 2. Memory: a synthetic KIVI-2 cache of 16 layers × 8 kv heads × head dim 128 × 4000 tokens (76 MB
//    stored) is made and stored by one Worker process, then restored in a fresh one, streamed
//    from KV, and in another fresh one through the whole-file path (every chunk gathered, then
//    restoreCache). Measured per path: the Worker's wasm memory (kivi.memoryBytes) and the growth of
//    the workerd process's peak resident memory during the request (VmHWM, reset through
//    /proc/PID/clear_refs before it). That process also runs the KV simulator, so the growth is an
//    upper bound on the isolate's own memory; a third fresh process only reads the chunks from KV
//    and drops them, which says how much of that growth is the reading alone. Workers have 128 MB;
//    the streamed restore must stay under it, the whole-file path needs about twice the cache.
// 3. A cache larger than the Worker's 128 MB (made here in Node, as a bigger machine would) streams
//    through it: PUT into KV and GET back out, checked frame by frame by checkCacheStream on both
//    ways, while the workerd process grows by less than 128 MB; what comes out restores here and
//    attends bit-identically to the original. An upload with a corrupted frame is refused, and the
//    cache stored before it is still the one served.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Kivi, type KiviCache } from '../../../dist/index.js';
import { seeded } from '../src/seeded.js';

const here = dirname(fileURLToPath(import.meta.url));
const example = join(here, '..');
const root = join(example, '..', '..');
const MODELS = join(root, '..', 'shared', 'models');
const WORKER_LIMIT = 128 * 2 ** 20;
const state = mkdtempSync(join(tmpdir(), 'kivi-worker-'));
const results: Record<string, unknown> = {};

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Every process below `pid` (from /proc). */
function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(parent, [...(children.get(parent) ?? []), Number(entry)]);
    } catch {
      // The process ended while the table was read.
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}

function memoryOf(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(status.match(new RegExp(`${key}:\\s+(\\d+) kB`))![1]) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

interface Wrangler {
  url: string;
  /** The workerd process that runs the Worker (not wrangler's proxy in front of it). */
  workerPid: number;
  /** What wrangler printed so far (for failure messages). */
  readonly log: string;
  stop(): Promise<void>;
}

async function startWrangler(): Promise<Wrangler> {
  const port = await freePort();
  const bin = join(example, 'node_modules', '.bin', 'wrangler');
  if (!existsSync(bin)) throw new Error(`wrangler is not installed: run npm ci in ${example} (npm run test:worker does)`);
  const env = { ...process.env, CLOUDFLARE_CF_FETCH_ENABLED: 'false', WRANGLER_SEND_METRICS: 'false', CI: 'true', NO_COLOR: '1' };
  delete env.NODE_OPTIONS;
  const child: ChildProcess = spawn(bin, ['dev', '--ip', '127.0.0.1', '--port', String(port), '--persist-to', state, '--log-level', 'info'], { cwd: example, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  let exited: number | string | null = null;
  child.on('exit', (code, signal) => (exited = signal ?? code));
  const deadline = Date.now() + 120_000;
  while (!/Ready on http:\/\/127\.0\.0\.1/.test(log)) {
    if (exited !== null) throw new Error(`wrangler dev exited (${exited}):\n${log}`);
    if (Date.now() > deadline) throw new Error(`wrangler dev did not start in 120 s:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  // wrangler runs two workerd processes: its proxy (listening on our port) and the Worker's.
  const workerds = descendants(child.pid!).filter((pid) => {
    try {
      return /workerd/.test(readFileSync(`/proc/${pid}/comm`, 'utf8'));
    } catch {
      return false;
    }
  });
  const worker = workerds.filter((pid) => !readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`127.0.0.1:${port}`));
  if (worker.length !== 1) throw new Error(`expected one workerd process running the Worker, found ${worker.length} of ${workerds.length}`);
  return {
    url: `http://127.0.0.1:${port}`,
    workerPid: worker[0]!,
    get log() {
      return log;
    },
    async stop() {
      if (exited !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGINT');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(timer);
    },
  };
}

async function call(w: Wrangler, method: string, path: string, body?: BodyInit): Promise<{ json: Record<string, unknown>; ms: number }> {
  const t0 = performance.now();
  const response = await fetch(`${w.url}${path}`, { method, body, headers: body === undefined ? undefined : { 'content-type': 'application/octet-stream' } });
  const json = (await response.json()) as Record<string, unknown>;
  const ms = performance.now() - t0;
  if (!response.ok) throw new Error(`${method} ${path}: HTTP ${response.status}: ${JSON.stringify(json)}`);
  return { json, ms };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

let wrangler: Wrangler | null = null;

beforeAll(() => {
  for (const f of ['workerd.js', 'llama2c.js', 'kivi.simd.wasm']) {
    if (!existsSync(join(root, 'dist', f))) throw new Error(`dist/${f} is missing: npm run build first (npm run test:worker does)`);
  }
});

afterAll(async () => {
  await wrangler?.stop();
  rmSync(state, { recursive: true, force: true });
  writeFileSync(join(tmpdir(), 'kivi-worker-results.json'), JSON.stringify(results, null, 2));
  console.log(`worker results: ${JSON.stringify(results, null, 2)}`);
});

describe('the Worker under wrangler dev', () => {
  it('resumes a 512-token stories3M system prompt from KV: the same first token and logits as recomputing it', async () => {
    wrangler = await startWrangler();
    for (const file of ['stories3M.f32.bin', 'tok4096.bin']) {
      const bytes = readFileSync(join(MODELS, file));
      const { json } = await call(wrangler, 'PUT', `/models/${file}`, bytes);
      expect(json.bytes).toBe(bytes.length);
    }
    // The start of the validation text, more than the 512 tokens the model's context holds.
    const text = readFileSync(join(MODELS, 'tinystories_val.txt'), 'utf8').slice(0, 6000);
    const primed = (await call(wrangler, 'POST', '/prompts/system', JSON.stringify({ model: 'stories3M.f32.bin', tokenizer: 'tok4096.bin', text }))).json;
    expect(primed.tokens).toBe(512);
    expect(primed.cachedTokens).toBe(511);
    const fromKv = (await call(wrangler, 'POST', '/generate/system?from=kv')).json;
    const fromPrefill = (await call(wrangler, 'POST', '/generate/system?from=prefill')).json;
    expect(fromKv.attends, 'the restored cache attends as the one the prefill made').toBe(primed.attends);
    expect(fromKv.token).toBe(fromPrefill.token);
    expect(fromKv.logits, 'logits bit for bit').toBe(fromPrefill.logits);
    // Time to first token on a warm isolate (the model already read from R2), alternating.
    const kv: number[] = [];
    const prefill: number[] = [];
    const workerKv: number[] = [];
    const workerPrefill: number[] = [];
    for (let i = 0; i < 5; i++) {
      const a = await call(wrangler, 'POST', '/generate/system?from=kv');
      const b = await call(wrangler, 'POST', '/generate/system?from=prefill');
      expect(a.json.logits).toBe(fromPrefill.logits);
      expect(b.json.logits).toBe(fromPrefill.logits);
      kv.push(a.ms);
      prefill.push(b.ms);
      workerKv.push(a.json.workerMs as number);
      workerPrefill.push(b.json.workerMs as number);
    }
    results.stories3M = {
      promptTokens: 512, cacheFrames: primed.frames, cacheBytes: primed.bytes, statsBytes: primed.statsBytes, firstToken: fromKv.text,
      ttftMs: { fromKv: median(kv), prefill: median(prefill), all: { fromKv: kv, prefill } },
      inWorkerMs: { fromKv: median(workerKv), prefill: median(workerPrefill) },
    };
    // A new Worker process: KV and R2 persist, the isolate is cold (the model is read from R2 again).
    await wrangler.stop();
    wrangler = await startWrangler();
    const cold = await call(wrangler, 'POST', '/generate/system?from=kv');
    expect(cold.json.logits).toBe(fromPrefill.logits);
    (results.stories3M as Record<string, unknown>).coldFromKvMs = cold.ms;
    await wrangler.stop();
    wrangler = null;
  });

  it('restores a 76 MB cache streamed from KV under the 128 MB Worker limit; the whole-file path needs about twice that', async () => {
    const shape = 'layers=16&kvHeads=8&headDim=128&queryHeads=32';
    wrangler = await startWrangler();
    const big = (await call(wrangler, 'POST', `/synthetic/big?${shape}&tokens=4000`)).json;
    (await call(wrangler, 'POST', `/synthetic/small?${shape}&tokens=64`));
    expect(big.statsBytes as number).toBeGreaterThan(64 * 2 ** 20); // more than half the Worker's memory
    expect(big.frames as number).toBeGreaterThan(64);
    await wrangler.stop();
    const measured: Record<string, unknown> = { statsBytes: big.statsBytes, storedBytes: big.bytes, kvValues: big.frames, primeWasmMemoryBytes: big.wasmMemoryBytes };
    // What reading the values from the simulated KV costs the process, without a restore.
    wrangler = await startWrangler();
    await call(wrangler, 'GET', '/synthetic/small?read=1');
    const idle = memoryOf(wrangler.workerPid);
    writeFileSync(`/proc/${wrangler.workerPid}/clear_refs`, '5'); // resets VmHWM to the current RSS
    const read = await call(wrangler, 'GET', '/synthetic/big?read=1');
    expect(read.json.read).toBe(big.bytes);
    measured.readOnly = { processRssBefore: idle.rss, processPeakGrowth: memoryOf(wrangler.workerPid).peak - idle.rss, requestMs: Math.round(read.ms) };
    await wrangler.stop();
    for (const whole of [false, true]) {
      wrangler = await startWrangler();
      // Warm the isolate (Kivi loaded, the code paths compiled) on a small cache first.
      await call(wrangler, 'GET', `/synthetic/small?whole=${whole ? 1 : 0}`);
      const before = memoryOf(wrangler.workerPid);
      writeFileSync(`/proc/${wrangler.workerPid}/clear_refs`, '5');
      const restored = await call(wrangler, 'GET', `/synthetic/big?whole=${whole ? 1 : 0}`);
      const after = memoryOf(wrangler.workerPid);
      expect(restored.json.attends, 'bit-identical attention after the restore').toBe(big.attends);
      expect(restored.json.statsBytes).toBe(big.statsBytes);
      measured[whole ? 'whole' : 'streamed'] = {
        wasmMemoryBytes: restored.json.wasmMemoryBytes, processRssBefore: before.rss, processPeakGrowth: after.peak - before.rss, requestMs: Math.round(restored.ms),
      };
      if (!whole) {
        expect(restored.json.wasmMemoryBytes as number).toBeLessThan(WORKER_LIMIT);
        expect(after.peak - before.rss, 'the Worker process grew by less than 128 MB').toBeLessThan(WORKER_LIMIT);
      } else {
        expect(after.peak - before.rss, 'the whole-file path holds the file besides the cache').toBeGreaterThan(1.5 * (big.statsBytes as number));
      }
      await wrangler.stop();
      wrangler = null;
    }
    results.memory = measured;
  });

  it('a cache larger than 128 MB streams into KV and back out through the Worker, checked, under the 128 MB limit', async () => {
    const kivi = await Kivi.load({ threads: 1 });
    const o = { layers: 16, kvHeads: 8, headDim: 128, queryHeads: 32, bits: 2 as const, groupSize: 32, residual: 128 };
    const cache = kivi.createCache(o);
    const random = seeded(7);
    const tokens = 8192;
    for (let l = 0; l < o.layers; l++) for (let t = 0; t < tokens; t += 512) cache.append(l, random(512 * o.kvHeads * o.headDim), random(512 * o.kvHeads * o.headDim));
    const statsBytes = cache.stats().bytes;
    expect(statsBytes).toBeGreaterThan(WORKER_LIMIT);
    const queries = Array.from({ length: o.layers }, () => random(o.queryHeads * o.headDim));
    const want = queries.map((q, l) => cache.attend(l, q));
    wrangler = await startWrangler();
    // Warm the isolate on a small upload first (the code paths compiled, KV opened).
    const small = kivi.createCache(o);
    small.append(0, random(64 * o.kvHeads * o.headDim), random(64 * o.kvHeads * o.headDim));
    await upload(wrangler, 'small', small.serializeStream());
    small.dispose();
    const measured: Record<string, unknown> = { statsBytes };

    const before = memoryOf(wrangler.workerPid);
    writeFileSync(`/proc/${wrangler.workerPid}/clear_refs`, '5');
    const t0 = performance.now();
    const stored = await upload(wrangler, 'big', cache.serializeStream());
    const upMs = performance.now() - t0;
    const afterUp = memoryOf(wrangler.workerPid);
    expect(stored.tokens).toBe(tokens);
    measured.upload = { storedBytes: stored.bytes, kvValues: stored.kvValues, processRssBefore: before.rss, processPeakGrowth: afterUp.peak - before.rss, ms: Math.round(upMs) };
    expect(afterUp.peak - before.rss, 'the Worker process grew by less than 128 MB while the cache streamed in').toBeLessThan(WORKER_LIMIT);

    const rss = memoryOf(wrangler.workerPid).rss;
    writeFileSync(`/proc/${wrangler.workerPid}/clear_refs`, '5');
    const t1 = performance.now();
    const response = await fetch(`${wrangler.url}/caches/big`);
    expect(response.status).toBe(200);
    const restored = await kivi.restoreCacheStream(response.body!);
    const downMs = performance.now() - t1;
    const afterDown = memoryOf(wrangler.workerPid);
    measured.download = { processRssBefore: rss, processPeakGrowth: afterDown.peak - rss, ms: Math.round(downMs) };
    expect(afterDown.peak - rss, 'the Worker process grew by less than 128 MB while the cache streamed out').toBeLessThan(WORKER_LIMIT);
    expect(restored.stats().bytes).toBe(statsBytes);
    expectSame(restored, queries, want);
    restored.dispose();

    // A corrupted upload: refused with the frame named, and 'big' is still the cache it was.
    const bad = corrupt(cache.serializeStream(), 40, 1000);
    const refused = await fetch(`${wrangler.url}/caches/big`, { method: 'PUT', body: bad, duplex: 'half' } as RequestInit);
    const text = await refused.text();
    let error: { error: string };
    try {
      error = JSON.parse(text) as { error: string };
    } catch {
      throw new Error(`PUT of a corrupted cache: HTTP ${refused.status}: ${text}\nwrangler:\n${wrangler!.log.slice(-3000)}`);
    }
    expect(refused.status).toBe(400);
    expect(error.error).toMatch(/^checkCacheStream: frame 40 checksum mismatch/);
    const again = await kivi.restoreCacheStream((await fetch(`${wrangler.url}/caches/big`)).body!);
    expectSame(again, queries, want);
    again.dispose();
    cache.dispose();
    kivi.close();
    await wrangler.stop();
    wrangler = null;
    results.throughWorker = measured;
  });
});

/** PUT a cache stream as the request body (streamed, not gathered). */
async function upload(w: Wrangler, name: string, stream: ReadableStream<Uint8Array>): Promise<Record<string, number>> {
  const response = await fetch(`${w.url}/caches/${name}`, { method: 'PUT', body: stream, duplex: 'half', headers: { 'content-type': 'application/octet-stream' } } as RequestInit);
  const json = (await response.json()) as Record<string, number>;
  if (!response.ok) throw new Error(`PUT /caches/${name}: HTTP ${response.status}: ${JSON.stringify(json)}`);
  return json;
}

/** The stream with one byte of frame `frame` flipped at `at`. */
function corrupt(stream: ReadableStream<Uint8Array>, frame: number, at: number): ReadableStream<Uint8Array> {
  let k = 0;
  return stream.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      if (k++ === frame) {
        chunk = chunk.slice();
        chunk[at]! ^= 0x01;
      }
      controller.enqueue(chunk);
    },
  }));
}

function expectSame(cache: KiviCache, queries: Float32Array[], want: Float32Array[]): void {
  queries.forEach((q, l) => {
    const got = cache.attend(l, q);
    expect(Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(Buffer.from(want[l]!.buffer, want[l]!.byteOffset, want[l]!.byteLength)), `layer ${l} attends bit-identically`).toBe(true);
  });
}

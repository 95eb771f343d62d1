// The wasm side of the facade: the kernels' signatures, instantiation, views on linear memory that
// are re-derived after it grows, allocation with clear out-of-memory errors, a shared workspace, and
// where jobs run: on the calling thread, or on the worker pool (src/pool/) for a threaded build.

import { buildByFeatures, type Build, type Variant } from './variants';
import { DEFAULT_POOL_SETTINGS, PoolFailure, WorkerPool, CONTROL_BYTES, type PoolSettings } from './pool/pool';
import { JobWord } from '../assembly/job-layout';

/** The exports of every build (assembly/index.ts). Pointers are byte offsets into `memory`. */
export interface KernelExports {
  readonly memory: WebAssembly.Memory;
  alloc(bytes: number): number;
  realloc(ptr: number, bytes: number): number;
  free(ptr: number): void;
  features(): number;
  selfTest(scratch: number): number;
  f32_first_invalid(count: number, src: number, maxAbs: number): number;
  f32_scatter_heads(tokens: number, heads: number, D: number, src: number, dst: number, dstHeadStride: number): void;
  f32_qchannel_quantize(heads: number, blocks: number, D: number, G: number, bits: number, src: number, srcHeadStride: number, dst: number, dstHeadStride: number, scratch: number): void;
  f32_qtoken_quantize(heads: number, tokens: number, first: number, D: number, gv: number, bits: number, src: number, srcHeadStride: number, dst: number, dstHeadStride: number, scratch: number): void;
  f32_f32_scores(rows: number, tokens: number, D: number, queries: number, keys: number, keyStride: number, scores: number, scoreStride: number): void;
  qchannel_f32_scores(rows: number, blocks: number, D: number, G: number, bits: number, queries: number, keys: number, blockStride: number, scores: number, scoreStride: number, scratch: number): void;
  qtoken_f32_scores(rows: number, tokens: number, D: number, gv: number, bits: number, queries: number, keys: number, blockStride: number, scores: number, scoreStride: number, scratch: number): void;
  f32_softmax_partial(rows: number, length: number, firstVisible: number, rowsPerToken: number, scores: number, scoreStride: number, rowMax: number, rowSum: number): void;
  f32_f32_accumulate(rows: number, tokens: number, D: number, weights: number, weightStride: number, values: number, valueStride: number, out: number): void;
  qtoken_f32_accumulate(rows: number, tokens: number, D: number, gv: number, bits: number, weights: number, weightStride: number, values: number, blockStride: number, out: number, scratch: number): void;
  qchannel_f32_accumulate(rows: number, blocks: number, D: number, G: number, bits: number, weights: number, weightStride: number, values: number, blockStride: number, out: number, scratch: number): void;
  /** Runs the tasks of the job at `job` as thread `thread` (assembly/jobs.ts). */
  run_job(job: number, thread: number): void;
  /** Threaded builds: copies the data segments in and runs the start function (main instance, once). */
  init_memory?(): void;
  // Weight matrix × vector for GGUF models (assembly/matvec.ts, src/gguf/weights.ts).
  matvec_scratch_bytes(cols: number): number;
  q8_0_f32_matvec(rows: number, cols: number, x: number, codes: number, scales: number, out: number, scratch: number): void;
  q4_0_f32_matvec(rows: number, cols: number, x: number, codes: number, scales: number, out: number, scratch: number): void;
  f16_f32_matvec(rows: number, cols: number, x: number, halves: number, out: number): void;
}


/** Every function a build must export. */
export const KERNEL_EXPORT_NAMES = [
  'alloc', 'realloc', 'free', 'features', 'selfTest', 'f32_first_invalid', 'f32_scatter_heads', 'f32_qchannel_quantize', 'f32_qtoken_quantize',
  'f32_f32_scores', 'qchannel_f32_scores', 'qtoken_f32_scores', 'f32_softmax_partial', 'f32_f32_accumulate',
  'qtoken_f32_accumulate', 'qchannel_f32_accumulate', 'run_job',
  'matvec_scratch_bytes', 'q8_0_f32_matvec', 'q4_0_f32_matvec', 'f16_f32_matvec',
] as const;

/** Work (multiply-adds) below which a job runs on the calling thread: waking the pool costs more. */
export const DISPATCH_WORK = 1 << 19;

/** The largest block the allocator (AssemblyScript's TLSF) hands out: 1 GiB minus its header. */
export const MAX_BLOCK_BYTES = 2 ** 30 - 16;

/** The wasm32 ceiling of a memory. */
export const WASM32_MAX_BYTES = 2 ** 32;

/** One instance of one build, with its memory. Every cache created by a `Kivi` lives in it. */
export class WasmRuntime {
  readonly build: Build;
  readonly kernels: KernelExports;
  readonly module: WebAssembly.Module;
  /** No allocation may end beyond this byte offset (Kivi.load's maxMemoryBytes; else 4 GiB). */
  readonly maxMemoryBytes: number;
  private buffer: ArrayBufferLike | null = null;
  private f32View = new Float32Array(0);
  private i32View = new Int32Array(0);
  private u16View = new Uint16Array(0);
  private u8View = new Uint8Array(0);
  private workspacePtr = 0;
  private workspaceBytes = 0;
  private pool: WorkerPool | null = null;
  /** A pool being started (after a failure); it takes over at the next call. */
  private nextPool: Promise<WorkerPool | null> | null = null;
  private startedPool: WorkerPool | null = null;
  /** Threads asked for, and the settings pools are started with. */
  private wantedThreads = 1;
  private poolSettings: PoolSettings = DEFAULT_POOL_SETTINGS;
  /** Frees held back while workers that stopped responding are being terminated (they might still write). */
  private heldFrees: number[] | null = null;
  private closed = false;
  /** Why the pool does not run now although threads were asked for, or null. */
  poolTrouble: string | null = null;
  /** @internal Work below which jobs run on the calling thread (tests set 0 to use the pool always). */
  dispatchWork = DISPATCH_WORK;
  /** @internal Tests: the thread that traps instead of running its first task of each job, or -1. */
  faultThread = -1;
  /** @internal Benchmarks: i32 counters (one per thread) that every job handed to the pool adds its tasks to, or 0. */
  profileCounters = 0;

  constructor(build: Build, kernels: KernelExports, module: WebAssembly.Module, maxMemoryBytes: number = WASM32_MAX_BYTES) {
    this.build = build;
    this.kernels = kernels;
    this.module = module;
    this.maxMemoryBytes = maxMemoryBytes;
  }

  get variant(): Variant {
    return this.build.variant;
  }

  /** Float32 view on the whole memory, valid until the next allocation. */
  get f32(): Float32Array {
    this.refreshViews();
    return this.f32View;
  }

  get i32(): Int32Array {
    this.refreshViews();
    return this.i32View;
  }

  get u16(): Uint16Array {
    this.refreshViews();
    return this.u16View;
  }

  get u8(): Uint8Array {
    this.refreshViews();
    return this.u8View;
  }

  get memoryBytes(): number {
    return this.kernels.memory.buffer.byteLength;
  }

  private refreshViews(): void {
    const buffer = this.kernels.memory.buffer;
    if (buffer !== this.buffer) {
      this.buffer = buffer;
      this.f32View = new Float32Array(buffer);
      this.i32View = new Int32Array(buffer);
      this.u16View = new Uint16Array(buffer);
      this.u8View = new Uint8Array(buffer);
    }
  }

  // ── threads ────────────────────────────────────────────────────────────────────────────────────

  /** Starts the worker pool: `threads` threads in all (the caller and threads − 1 workers). */
  async startThreads(threads: number, settings: PoolSettings): Promise<void> {
    this.wantedThreads = threads;
    this.poolSettings = settings;
    this.pool = await this.launchPool();
  }

  private async launchPool(): Promise<WorkerPool> {
    const control = this.alloc(CONTROL_BYTES, 'the worker pool\'s control block');
    try {
      return await WorkerPool.start(this.module, this.kernels.memory, control, this.wantedThreads - 1, (job, thread) => this.kernels.run_job(job, thread), this.poolSettings);
    } catch (error) {
      this.free(control);
      throw error;
    }
  }

  /** Threads a job may run on now (scratch is laid out for this many). Read once per call. */
  get threads(): number {
    if (this.startedPool !== null) {
      this.pool = this.startedPool;
      this.startedPool = null;
      this.poolTrouble = null;
    }
    return this.pool?.threads ?? 1;
  }

  /** Tests: the pool, while one runs. */
  get workerPool(): WorkerPool | null {
    return this.pool;
  }

  /** Runs the job at `job`: on the calling thread alone when the pool would cost more than it gives
   *  (`work`: about how many multiply-adds it holds), else on every thread of the pool. */
  run(job: number, work: number): void {
    if (this.closed) throw new TypeError('kivi-wasm: the Kivi instance was closed');
    if (this.faultThread >= 0) this.i32[(job >>> 2) + JobWord.FAULT] = this.faultThread;
    const pool = this.pool;
    if (pool === null || work < this.dispatchWork) {
      this.kernels.run_job(job, 0);
      return;
    }
    if (this.profileCounters !== 0) this.i32[(job >>> 2) + JobWord.PROFILE] = this.profileCounters;
    try {
      pool.run(job);
    } catch (error) {
      if (!(error instanceof PoolFailure)) throw error;
      this.pool = null;
      this.poolTrouble = `the worker pool failed and is being restarted (${error.message})`;
      if (error.stalled) this.holdFreesUntilTerminated();
      this.restartPool();
      throw new Error(`${error.message}. The caches are unchanged; this instance runs on one thread until its workers are restarted.`, { cause: error });
    }
  }

  private holdFreesUntilTerminated(): void {
    if (this.heldFrees !== null) return;
    this.heldFrees = [];
    // The pool terminated its workers; a worker that still ran gets a moment to be stopped.
    setTimeout(() => {
      const held = this.heldFrees ?? [];
      this.heldFrees = null;
      for (const ptr of held) this.free(ptr);
    }, 1000);
  }

  private restartPool(): void {
    if (this.nextPool !== null || this.wantedThreads <= 1) return;
    this.nextPool = this.launchPool().then(
      (pool) => {
        this.nextPool = null;
        if (this.closed) pool.close();
        else this.startedPool = pool;
        return pool;
      },
      (failure: unknown) => {
        this.nextPool = null; // workers cannot be started again: one thread from now on
        this.poolTrouble = `the worker pool failed and could not be restarted: ${failure instanceof Error ? failure.message : String(failure)}`;
        return null;
      },
    );
  }

  /** Resolves once a pool restarted after a failure runs (or could not be started). */
  async whenRestarted(): Promise<void> {
    await this.nextPool;
  }

  /** Terminates the workers; later calls throw. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pool?.close();
    this.startedPool?.close();
    this.pool = this.startedPool = null;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Allocates `bytes` (16-byte aligned). Throws a RangeError naming the request, the limit and what
   * is left when the block would reach past `maxMemoryBytes`, when one block would exceed what the
   * allocator hands out, or when memory.grow fails (the allocator traps; the trap is converted).
   * Nothing is allocated when it throws.
   */
  alloc(bytes: number, what: string): number {
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`kivi-wasm: cannot allocate ${bytes} bytes for ${what}`);
    if (bytes > MAX_BLOCK_BYTES) {
      throw this.outOfMemory(bytes, what, undefined, `one block holds at most ${MAX_BLOCK_BYTES} bytes`);
    }
    if (bytes > this.maxMemoryBytes) throw this.outOfMemory(bytes, what, undefined);
    let ptr: number;
    try {
      ptr = this.kernels.alloc(bytes) >>> 0;
    } catch (error) {
      throw this.outOfMemory(bytes, what, error);
    }
    if (ptr + bytes > this.maxMemoryBytes) {
      this.kernels.free(ptr);
      throw this.outOfMemory(bytes, what, undefined);
    }
    return ptr;
  }

  /** Grows or shrinks a block, keeping its contents; on failure the old block is untouched.
   *  (alloc, copy, free, so that the limit is checked before the old block is given up.) */
  realloc(ptr: number, bytes: number, what: string): number {
    if (ptr === 0) return this.alloc(bytes, what);
    const fresh = this.alloc(bytes, what);
    // The header before a TLSF block holds its size (low 2 bits are flags).
    const oldBytes = (new Uint32Array(this.kernels.memory.buffer, ptr - 4, 1)[0]! & ~3) >>> 0;
    const u8 = this.u8;
    u8.copyWithin(fresh, ptr, ptr + Math.min(oldBytes, bytes));
    this.free(ptr);
    return fresh;
  }

  free(ptr: number): void {
    if (ptr === 0) return;
    if (this.heldFrees !== null) this.heldFrees.push(ptr);
    else this.kernels.free(ptr);
  }

  /** A scratch area of at least `bytes`, shared by every cache of this instance (calls are
   *  synchronous); `what` names it in an out-of-memory error. */
  workspace(bytes: number, what = 'attention workspace'): number {
    if (bytes > this.workspaceBytes) {
      let size = Math.max(bytes, Math.ceil(this.workspaceBytes * 1.5));
      let ptr: number;
      try {
        ptr = this.alloc(size, what);
      } catch (error) {
        if (size === bytes) throw error;
        size = bytes; // the 1.5× headroom did not fit: try the exact size
        ptr = this.alloc(size, what);
      }
      this.free(this.workspacePtr);
      this.workspacePtr = ptr;
      this.workspaceBytes = size;
    }
    return this.workspacePtr;
  }

  /** Frees the workspace if it is larger than `bytes` (a long prompt's staging area should not stay
   *  allocated for the decode steps after it). */
  trimWorkspace(bytes: number): void {
    if (this.workspaceBytes <= bytes) return;
    this.free(this.workspacePtr);
    this.workspacePtr = 0;
    this.workspaceBytes = 0;
  }

  private outOfMemory(bytes: number, what: string, cause: unknown, why?: string): RangeError {
    const limit = this.maxMemoryBytes;
    const held = this.memoryBytes;
    const left = Math.max(0, limit - held);
    const limitText = limit < WASM32_MAX_BYTES
      ? `the limit is maxMemoryBytes = ${limit} bytes`
      : `the limit is the wasm32 ceiling of ${WASM32_MAX_BYTES} bytes (4 GiB)`;
    const error = new RangeError(
      `kivi-wasm: out of WebAssembly memory: asked for ${bytes} bytes for ${what}; ${why ? `${why}; ` : ''}${limitText}; ` +
      `the module's memory is ${held} bytes, ${left} bytes left below the limit (free space inside it is fragmented or taken)`,
    );
    if (cause !== undefined) (error as { cause?: unknown }).cause = cause;
    return error;
  }
}

function readAbortMessage(memory: WebAssembly.Memory, ptr: number): string {
  ptr >>>= 0; // an i32 argument: above 2 GiB it arrives negative
  if (ptr === 0) return '';
  const bytes = new Uint8Array(memory.buffer);
  const length = new Uint32Array(memory.buffer, (ptr - 4) - ((ptr - 4) % 4), 1)[0]! >>> 1;
  let text = '';
  for (let i = 0; i < length; i++) text += String.fromCharCode(bytes[ptr + 2 * i]! | (bytes[ptr + 2 * i + 1]! << 8));
  return text;
}

/** Bytes per wasm page. */
const WASM_PAGE_BYTES = 65536;
/** Pages the builds ask for at start (asconfig.json "initialMemory"). */
const INITIAL_PAGES = 2;

/** Instantiates a compiled build and runs its known-answer check; says why when it cannot be used.
 *  A threaded build gets a shared memory (its maximum must be declared) and its data copied in once. */
export async function instantiateChecked(module: WebAssembly.Module, maxMemoryBytes?: number): Promise<WasmRuntime | { failed: string }> {
  const exported = new Set(WebAssembly.Module.exports(module).map((e) => e.name));
  const missing = ['memory', ...KERNEL_EXPORT_NAMES].filter((name) => !exported.has(name));
  if (missing.length > 0) return { failed: `not a kivi-wasm build: missing exports ${missing.join(', ')}` };
  const shared = exported.has('init_memory');
  // The module imports its memory (asconfig.json "importMemory"), so the limit is the memory's own
  // maximum: the allocator's doubling grow then fails at the limit and falls back to exactly what it
  // needs, and the memory never grows past maxMemoryBytes.
  let memory: WebAssembly.Memory | undefined;
  try {
    memory = new WebAssembly.Memory({ initial: INITIAL_PAGES, maximum: Math.floor((maxMemoryBytes ?? WASM32_MAX_BYTES) / WASM_PAGE_BYTES), shared });
  } catch (error) {
    return { failed: `cannot create a${shared ? ' shared' : ''} WebAssembly.Memory: ${String(error)}` };
  }
  const imports = {
    env: {
      memory,
      abort(message: number, file: number, line: number, column: number): never {
        let text = '';
        try {
          text = memory ? `${readAbortMessage(memory, message)} at ${readAbortMessage(memory, file)}:${line}:${column}` : '';
        } catch {
          // an unreadable message: report the abort without it
        }
        throw new Error(`kivi-wasm: the wasm module aborted: ${text}`);
      },
    },
  };
  let instance: WebAssembly.Instance;
  try {
    instance = await WebAssembly.instantiate(module, imports);
  } catch (error) {
    return { failed: `cannot instantiate: ${String(error)}` };
  }
  const kernels = instance.exports as unknown as KernelExports;
  memory = kernels.memory;
  kernels.init_memory?.();
  const build = buildByFeatures(kernels.features());
  if (!build || build.threaded !== shared) return { failed: `unknown feature bits ${kernels.features()} (not a kivi-wasm module?)` };
  const scratch = kernels.alloc(1024);
  let result: number;
  try {
    result = kernels.selfTest(scratch);
  } catch (error) {
    return { failed: `known-answer check trapped: ${String(error)}` };
  } finally {
    kernels.free(scratch);
  }
  if (result !== 0) return { failed: `known-answer check failed (code ${result})` };
  return new WasmRuntime(build, kernels, module, maxMemoryBytes);
}

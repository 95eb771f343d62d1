// The worker pool: workers started once, each running the same module on the one shared memory,
// driven through a control block in that memory (worker.ts). A job is handed out by a store and a
// notify on the generation word; the caller runs it too (as thread 0) and then waits until every
// worker has arrived, so the job's memory can be reused by the next call. That wait is the only
// place a failure can show: a worker whose run_job threw reports it in the control block, and a
// worker that died stops arriving, which the caller notices when no task has finished for
// `stallMs`. Either way the pool is finished: the call throws PoolFailure and the runtime rebuilds.
//
// The kernels and the cache do not know this exists: they see WasmRuntime.run(job) (wasm.ts).

import { JobWord } from '../../assembly/job-layout';
import { canBlock, startWorker, type HostWorker } from './host';
import { Control, CONTROL_BYTES, MESSAGE_BYTES } from './worker';

export { CONTROL_BYTES };

/** A job did not complete on the pool; `stalled`: a worker stopped responding (it may still run). */
export class PoolFailure extends Error {
  constructor(message: string, readonly stalled: boolean) {
    super(message);
    this.name = 'PoolFailure';
  }
}

export interface PoolSettings {
  /** No task finished for this long while workers are missing: the pool failed. */
  stallMs: number;
  /** Checks of a word before sleeping on it (workers, and the caller where it may block). */
  spins: number;
  /** How long the workers may take to start. */
  startMs: number;
}

export const DEFAULT_POOL_SETTINGS: PoolSettings = { stallMs: 5000, spins: 20_000, startMs: 30_000 };

export class WorkerPool {
  /** Threads that run a job: the workers and the caller. */
  readonly threads: number;
  private readonly ctl: Int32Array;
  private readonly workers: HostWorker[];
  private closed = false;

  private constructor(
    private readonly memory: WebAssembly.Memory,
    readonly control: number,
    workers: HostWorker[],
    private readonly runJob: (job: number, thread: number) => void,
    private readonly settings: PoolSettings,
  ) {
    this.ctl = new Int32Array(memory.buffer, control, CONTROL_BYTES / 4);
    this.workers = workers;
    this.threads = workers.length + 1;
  }

  /**
   * Starts `workers` workers on `memory` and waits (asynchronously) until each has instantiated
   * `module`. `control` is CONTROL_BYTES of zeroed shared memory; `runJob` is the caller's run_job.
   */
  static async start(module: WebAssembly.Module, memory: WebAssembly.Memory, control: number, workers: number,
    runJob: (job: number, thread: number) => void, settings: PoolSettings): Promise<WorkerPool> {
    new Uint8Array(memory.buffer, control, CONTROL_BYTES).fill(0);
    const ctl = new Int32Array(memory.buffer, control, CONTROL_BYTES / 4);
    Atomics.store(ctl, Control.KILL, -1);
    const started: HostWorker[] = [];
    let failure: string | null = null;
    const stopAll = () => {
      Atomics.store(ctl, Control.STOP, 1);
      Atomics.add(ctl, Control.GENERATION, 1);
      Atomics.notify(ctl, Control.GENERATION);
      for (const worker of started) worker.terminate();
    };
    try {
      for (let i = 1; i <= workers; i++) {
        started.push(startWorker({ module, memory, control, index: i, workers, spins: settings.spins }, (message) => (failure ??= `worker ${i}: ${message}`)));
      }
    } catch (error) {
      stopAll();
      throw new Error(`cannot start a worker: ${String(error)}`);
    }
    const deadline = performance.now() + settings.startMs;
    while (Atomics.load(ctl, Control.READY) < workers) {
      if (failure !== null) {
        stopAll();
        throw new Error(`a worker failed to start: ${failure}`);
      }
      if (performance.now() > deadline) {
        stopAll();
        throw new Error(`only ${Atomics.load(ctl, Control.READY)} of ${workers} workers started within ${settings.startMs} ms`);
      }
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    for (const worker of started) worker.started();
    if (Atomics.load(ctl, Control.SETUP_ERROR) !== 0) {
      const message = readMessage(memory, control);
      stopAll();
      throw new Error(`worker ${Atomics.load(ctl, Control.SETUP_ERROR) - 1} could not instantiate the kernels: ${message}`);
    }
    return new WorkerPool(memory, control, started, runJob, settings);
  }

  /**
   * Runs the job at `job` on every thread and returns when all have finished with it. Throws
   * PoolFailure if a worker failed (the pool is then closed) and rethrows a trap of the caller's own
   * run_job once the workers are done.
   */
  run(job: number): void {
    if (this.closed) throw new PoolFailure('kivi-wasm: the worker pool is closed', false);
    const ctl = this.ctl;
    Atomics.store(ctl, Control.ARRIVED, 0);
    Atomics.store(ctl, Control.JOB, job);
    Atomics.add(ctl, Control.GENERATION, 1);
    Atomics.notify(ctl, Control.GENERATION);
    let own: unknown;
    try {
      this.runJob(job, 0);
    } catch (error) {
      own = error;
    }
    this.waitForWorkers(job);
    const failed = Atomics.load(ctl, Control.ERROR);
    if (failed !== 0) {
      const message = readMessage(this.memory, this.control);
      this.close();
      throw new PoolFailure(`kivi-wasm: worker thread ${failed - 1} failed while running a job: ${message}`, false);
    }
    if (own !== undefined) throw own;
  }

  private waitForWorkers(job: number): void {
    const ctl = this.ctl;
    const workers = this.threads - 1;
    const done = new Int32Array(this.memory.buffer, job + JobWord.DONE * 4, 1);
    const blocking = canBlock();
    let lastArrived = -1;
    let lastDone = -1;
    let lastProgress = 0;
    for (let spin = 0; ; spin++) {
      const arrived = Atomics.load(ctl, Control.ARRIVED);
      if (arrived === workers) return;
      if (spin < this.settings.spins) continue;
      if (blocking) Atomics.wait(ctl, Control.ARRIVED, arrived, 50);
      else if (spin % 1024 !== 0) continue; // a page's main thread may not sleep: it checks the clock now and then
      const now = performance.now();
      const finished = Atomics.load(done, 0);
      if (arrived !== lastArrived || finished !== lastDone) {
        lastArrived = arrived;
        lastDone = finished;
        lastProgress = now;
      } else if (now - lastProgress > this.settings.stallMs) {
        const missing = workers - arrived;
        this.close();
        throw new PoolFailure(
          `kivi-wasm: ${missing} of ${workers} worker threads stopped responding (no task finished for ${this.settings.stallMs} ms): ` +
          'a worker died or was terminated',
          true,
        );
      }
    }
  }

  /** Tests: the worker with this index exits when the next job starts, as if it had died. */
  killWorkerAtNextJob(index: number): void {
    Atomics.store(this.ctl, Control.KILL, index);
  }

  /** Stops and terminates every worker. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    Atomics.store(this.ctl, Control.STOP, 1);
    Atomics.add(this.ctl, Control.GENERATION, 1);
    Atomics.notify(this.ctl, Control.GENERATION);
    for (const worker of this.workers) worker.terminate();
  }

  get isClosed(): boolean {
    return this.closed;
  }
}

function readMessage(memory: WebAssembly.Memory, control: number): string {
  const ctl = new Int32Array(memory.buffer, control, CONTROL_BYTES / 4);
  const length = Math.min(Atomics.load(ctl, Control.MESSAGE_LENGTH), MESSAGE_BYTES);
  // TextDecoder refuses views of shared memory: copy first.
  return new TextDecoder().decode(new Uint8Array(memory.buffer, control + Control.MESSAGE * 4, length).slice());
}

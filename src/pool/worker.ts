// The code each worker of the pool runs, started as a worker in every runtime the same way
// (workerSource): self-contained plain JavaScript, no imports.
//
// The hot path is shared memory only (STYLE.md, thread pools over wasm memory): the worker waits for
// the control block's generation to change, runs run_job on the job the caller published, counts
// itself as arrived, and notifies the caller when it is the last. postMessage is used only to hand
// the worker its module and memory (web workers) and never on the hot path.

/** The control block: i32 words in the shared memory, allocated by the caller (pool.ts). */
export const enum Control {
  /** Incremented by the caller to start a job. */
  GENERATION = 0,
  /** The job's address. */
  JOB,
  /** Workers done with the current generation. */
  ARRIVED,
  /** 1: leave the loop. */
  STOP,
  /** 0, or 1 + the index of the first worker whose run_job threw. */
  ERROR,
  /** Tests: the index of a worker that exits instead of running the next job (it dies mid-call). */
  KILL,
  /** Workers that instantiated the module (or failed to). */
  READY,
  /** 0, or 1 + the index of a worker that could not instantiate the module. */
  SETUP_ERROR,
  /** Bytes of the error message at MESSAGE. */
  MESSAGE_LENGTH,
  MESSAGE,
}

/** Bytes of the error message area. */
export const MESSAGE_BYTES = 512;
export const CONTROL_BYTES = Control.MESSAGE * 4 + MESSAGE_BYTES;

/** What a worker is given (structured-cloned: a WebAssembly.Module and a shared Memory clone). */
export interface WorkerInit {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  /** Byte offset of the control block. */
  control: number;
  /** This worker's thread index (the caller is 0). */
  index: number;
  /** Workers in the pool. */
  workers: number;
  /** Checks of the generation word before sleeping on it. */
  spins: number;
}

/**
 * The worker's loop (see the module comment), as source text: a function of (init: WorkerInit,
 * exit: () => void) that never returns while the pool runs; `exit` ends the worker as if it had died.
 * Kept as text, not a function's toString(), so that no build tool can add helpers it would need.
 */
const WORKER_MAIN = String.raw`function workerMain(init, exit) {
  const GENERATION = 0, JOB = 1, ARRIVED = 2, STOP = 3, ERROR = 4, KILL = 5, READY = 6, SETUP_ERROR = 7, MESSAGE_LENGTH = 8, MESSAGE = 9;
  const ctl = new Int32Array(init.memory.buffer, init.control, MESSAGE + 128);
  function report(word, error) {
    if (Atomics.compareExchange(ctl, word, 0, init.index + 1) !== 0) return;
    const text = new TextEncoder().encode(String(error instanceof Error && error.stack ? error.stack : error)).subarray(0, 512);
    new Uint8Array(init.memory.buffer, init.control + MESSAGE * 4, 512).set(text);
    Atomics.store(ctl, MESSAGE_LENGTH, text.length);
  }
  let runJob;
  try {
    const instance = new WebAssembly.Instance(init.module, {
      env: {
        memory: init.memory,
        abort() { throw new Error('kivi-wasm: the wasm module aborted in a worker'); },
      },
    });
    runJob = instance.exports.run_job;
  } catch (error) {
    report(SETUP_ERROR, error);
    Atomics.add(ctl, READY, 1);
    Atomics.notify(ctl, READY);
    return;
  }
  Atomics.add(ctl, READY, 1);
  Atomics.notify(ctl, READY);
  let seen = 0;
  for (;;) {
    for (let spin = 0; Atomics.load(ctl, GENERATION) === seen; spin++) {
      if (spin >= init.spins) Atomics.wait(ctl, GENERATION, seen);
    }
    seen = Atomics.load(ctl, GENERATION);
    if (Atomics.load(ctl, STOP) !== 0) return;
    if (Atomics.load(ctl, KILL) === init.index) {
      exit();
      return;
    }
    try {
      runJob(Atomics.load(ctl, JOB), init.index);
    } catch (error) {
      report(ERROR, error);
    }
    if (Atomics.add(ctl, ARRIVED, 1) + 1 === init.workers) Atomics.notify(ctl, ARRIVED);
  }
}`;

/** The worker's source for `new Worker` in each runtime. */
export function workerSource(kind: 'node' | 'web'): string {
  if (kind === 'node') {
    // A worker_threads worker with eval: true runs as a CommonJS script; process.exit ends the thread.
    return `const { workerData } = require('node:worker_threads');\n(${WORKER_MAIN})(workerData, () => process.exit(1));\n`;
  }
  return `self.onmessage = (event) => {\n  self.onmessage = null;\n  (${WORKER_MAIN})(event.data, () => self.close());\n};\n`;
}

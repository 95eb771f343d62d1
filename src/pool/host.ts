// What the runtime offers for threads: whether workers and shared memory exist here, how many cores
// there are, whether this thread may block on Atomics.wait, and how to start a worker.
//
//   Node, Deno, Bun        worker_threads (process.getBuiltinModule), eval'd source, unref'd so that
//                          a worker never keeps the process alive
//   browsers               Web Workers from a blob: URL, on a cross-origin-isolated page or in a Worker
//   Cloudflare Workers     none: one thread

import { workerSource, type WorkerInit } from './worker';

/** A started worker, whichever API started it. */
export interface HostWorker {
  terminate(): void;
  /** Called once the worker runs (a web worker's blob: URL can then go). */
  started(): void;
}

interface NodeWorkerThreads {
  Worker: new (source: string, options: { eval: true; workerData: unknown; name?: string }) => {
    unref(): void;
    terminate(): Promise<number>;
    on(event: 'error', listener: (error: unknown) => void): void;
  };
}

function nodeWorkerThreads(): NodeWorkerThreads | undefined {
  const process = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  try {
    return process?.getBuiltinModule?.('node:worker_threads') as NodeWorkerThreads | undefined;
  } catch {
    return undefined;
  }
}

/** Why threads cannot run here, or null if they can. */
export function threadsUnavailable(): string | null {
  // Before the checks below: workerd offers SharedArrayBuffer and a Node-compatible process, but
  // neither workers nor threads.
  if ((globalThis as { navigator?: { userAgent?: string } }).navigator?.userAgent === 'Cloudflare-Workers') return 'Cloudflare Workers have no threads';
  if (typeof SharedArrayBuffer === 'undefined') {
    return (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === false
      ? 'the page is not cross-origin isolated (serve it with Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp)'
      : 'this runtime has no SharedArrayBuffer';
  }
  if ((globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === false) {
    return 'the page is not cross-origin isolated (serve it with Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp)';
  }
  if (nodeWorkerThreads() === undefined && typeof (globalThis as { Worker?: unknown }).Worker !== 'function') return 'this runtime has no workers';
  return null;
}

/** The runtime's hardware concurrency (logical cores), at least 1. */
export function hardwareConcurrency(): number {
  const process = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  try {
    const os = process?.getBuiltinModule?.('node:os') as { availableParallelism?: () => number; cpus?: () => unknown[] } | undefined;
    const n = os?.availableParallelism?.() ?? os?.cpus?.().length;
    if (typeof n === 'number' && n >= 1) return n;
  } catch {
    // not a Node-compatible runtime
  }
  const n = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency;
  return typeof n === 'number' && n >= 1 ? Math.floor(n) : 1;
}

let blocking: boolean | undefined;
/** Whether this thread may block in Atomics.wait (a browser page's main thread may not). */
export function canBlock(): boolean {
  if (blocking === undefined) {
    try {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0);
      blocking = true;
    } catch {
      blocking = false;
    }
  }
  return blocking;
}

/** Starts a worker running workerMain(init); `failed` hears of a worker that could not start or died
 *  of an uncaught error (while the caller's event loop runs, i.e. not during a call). */
export function startWorker(init: WorkerInit, failed: (message: string) => void): HostWorker {
  const threads = nodeWorkerThreads();
  if (threads !== undefined) {
    const worker = new threads.Worker(workerSource('node'), { eval: true, workerData: init, name: `kivi-wasm ${init.index}` });
    worker.unref(); // the pool must never keep the process alive
    worker.on('error', (error) => failed(String(error)));
    return { terminate: () => void worker.terminate(), started: () => {} };
  }
  const url = URL.createObjectURL(new Blob([workerSource('web')], { type: 'text/javascript' }));
  const WorkerConstructor = (globalThis as unknown as { Worker: new (url: string, options?: { name?: string }) => Worker }).Worker;
  let worker: Worker;
  try {
    worker = new WorkerConstructor(url, { name: `kivi-wasm ${init.index}` });
  } catch (error) {
    URL.revokeObjectURL(url);
    throw error;
  }
  worker.onerror = (event) => failed(event.message || 'the worker could not be loaded');
  worker.postMessage(init);
  return { terminate: () => worker.terminate(), started: () => URL.revokeObjectURL(url) };
}

// benchmark.js, wrapped: one function (synchronous, or returning a promise: a deferred test) timed until
// maxTime seconds have passed and at least minSamples samples exist. Reports the median of the samples.

import Benchmark from 'benchmark';

export interface Timing {
  /** median of benchmark.js's samples (each sample = mean time of one call over a cycle), ms */
  medianMs: number;
  meanMs: number;
  /** relative margin of error of the mean, % */
  rme: number;
  samples: number;
  /** calls per cycle (benchmark.js count) */
  callsPerSample: number;
}

export interface TimingOptions {
  maxTime: number;
  minSamples: number;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function result(bench: Benchmark): Timing {
  const sample = bench.stats.sample;
  if (sample.length === 0) throw new Error('benchmark.js collected no samples');
  return {
    medianMs: median(sample) * 1e3,
    meanMs: bench.stats.mean * 1e3,
    rme: bench.stats.rme,
    samples: sample.length,
    callsPerSample: bench.count,
  };
}

function errorOf(bench: Benchmark): Error | undefined {
  const e = (bench as unknown as { error?: unknown }).error;
  return e === undefined ? undefined : e instanceof Error ? e : new Error(String(e));
}

/** Times a synchronous function. */
export function timeSync(name: string, fn: () => unknown, o: TimingOptions): Timing {
  const bench = new Benchmark(name, fn, { maxTime: o.maxTime, minSamples: o.minSamples });
  bench.run({ async: false });
  const error = errorOf(bench);
  if (error) throw error;
  return result(bench);
}

/** Times an asynchronous function with a benchmark.js deferred test: each call's promise resolves the deferred. */
export function timeDeferred(name: string, fn: () => Promise<unknown>, o: TimingOptions): Promise<Timing> {
  return new Promise((resolve, reject) => {
    let failure: unknown;
    const bench = new Benchmark(name, {
      defer: true,
      maxTime: o.maxTime,
      minSamples: o.minSamples,
      fn(deferred: Benchmark.Deferred) {
        fn().then(
          () => deferred.resolve(),
          (error: unknown) => {
            failure ??= error; // reported when benchmark.js completes
            deferred.resolve();
          },
        );
      },
      onComplete() {
        const error = failure ?? errorOf(bench);
        if (error !== undefined) reject(error instanceof Error ? error : new Error(String(error)));
        else {
          try {
            resolve(result(bench));
          } catch (e) {
            reject(e);
          }
        }
      },
    });
    bench.run({ async: true });
  });
}

/** Median of `runs` timed calls after `warmup` untimed ones (for stateful operations benchmark.js cannot repeat: appends). */
export function medianOfRuns(runs: number, warmup: number, once: () => number): { medianMs: number; allMs: number[] } {
  for (let i = 0; i < warmup; i++) once();
  const allMs: number[] = [];
  for (let i = 0; i < runs; i++) allMs.push(once());
  return { medianMs: median(allMs), allMs };
}

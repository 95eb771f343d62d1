// Kivi: loads one build of the kernels (the best the runtime runs correctly), starts its worker pool
// where threads can run, and creates caches in its memory.

import { KiviCache } from './cache';
import { describe } from './options';
import type { CacheOptions } from './options';
import { builtinBuild } from './builtin';
import { restoreFramed, restoreFromSource, type CacheSource, type RestoreStreamOptions } from './stream';
import { isStreamFormat } from './stream-format';
import { BUILDS, buildOf, VARIANTS, type Build, type BuildName, type VariantName } from './variants';
import { instantiateChecked, WASM32_MAX_BYTES, WasmRuntime } from './wasm';
import { hardwareConcurrency, threadsUnavailable } from './pool/host';
import { DEFAULT_POOL_SETTINGS, type PoolSettings } from './pool/pool';

export interface LoadOptions {
  /** Which build to run: 'auto' (default) picks the first of relaxed-simd, simd, scalar that the
   *  runtime validates and that passes the known-answer check; a name insists on that build. */
  variant?: 'auto' | VariantName;
  /** Threads that run attention and appends: a number, or 'auto' (default) for the runtime's hardware
   *  concurrency. Where threads cannot run (no SharedArrayBuffer, a page that is not cross-origin
   *  isolated, Cloudflare Workers) the instance runs on one; `kivi.threads` and `kivi.threadsReason`
   *  say so. The results are the same bits for any number of threads. */
  threads?: number | 'auto';
  /** A precompiled module or the bytes of a build (for runtimes that refuse to compile embedded
   *  bytes, such as Cloudflare Workers). Its build is read from the module itself. */
  module?: WebAssembly.Module | BufferSource;
  /** Precompiled modules or bytes of several builds, keyed by build name (for example `.wasm`
   *  files imported as modules): they are tried best first, or only those of the `variant` named,
   *  through the same validation and known-answer check as the embedded builds. Not with `module`. */
  modules?: Partial<Record<BuildName, WebAssembly.Module | BufferSource>>;
  /** Bytes the caches of this instance may use: an allocation that would reach past this offset of
   *  the wasm memory throws a RangeError (and changes nothing). Default: the wasm32 ceiling, 4 GiB. */
  maxMemoryBytes?: number;
}

type BuildSource = WebAssembly.Module | BufferSource;

const VARIANT_CHOICES = ['auto', ...VARIANTS.map((v) => v.name)] as const;

/** The most threads an instance starts (workers are OS threads; beyond this they only cost memory). */
export const MAX_THREADS = 256;

/** @internal Test hooks: pool timing. */
export const poolSettingsForTests: { current: PoolSettings } = { current: DEFAULT_POOL_SETTINGS };

export class Kivi {
  private readonly runtime: WasmRuntime;
  private readonly reason: string | null;

  private constructor(runtime: WasmRuntime, reason: string | null) {
    this.runtime = runtime;
    this.reason = reason;
  }

  /** Compiles and instantiates the kernels (asynchronously; nothing is compiled at import time) and
   *  starts the worker pool. */
  static async load(options: LoadOptions = {}): Promise<Kivi> {
    if (typeof options !== 'object' || options === null) throw new TypeError(`Kivi.load: options must be an object, got ${describe(options)}`);
    const requested = options.variant ?? 'auto';
    if (!VARIANT_CHOICES.includes(requested)) {
      throw new RangeError(`Kivi.load: variant must be one of ${VARIANT_CHOICES.map((v) => JSON.stringify(v)).join(', ')}, got ${describe(requested)}`);
    }
    if (options.module !== undefined && options.modules !== undefined) throw new TypeError('Kivi.load: give either module or modules, not both');
    const limit = options.maxMemoryBytes;
    if (limit !== undefined) {
      if (typeof limit !== 'number') throw new TypeError(`Kivi.load: maxMemoryBytes must be a number, got ${describe(limit)}`);
      if (!Number.isInteger(limit) || limit < 65536 || limit > WASM32_MAX_BYTES) {
        throw new RangeError(`Kivi.load: maxMemoryBytes must be an integer from 65536 to ${WASM32_MAX_BYTES} (4 GiB), got ${describe(limit)}`);
      }
    }
    const asked = options.threads ?? 'auto';
    if (asked !== 'auto') {
      if (typeof asked !== 'number') throw new TypeError(`Kivi.load: threads must be a number or 'auto', got ${describe(asked)}`);
      if (!Number.isInteger(asked) || asked < 1 || asked > MAX_THREADS) {
        throw new RangeError(`Kivi.load: threads must be 'auto' or an integer from 1 to ${MAX_THREADS}, got ${describe(asked)}`);
      }
    }
    let threads = asked === 'auto' ? Math.min(hardwareConcurrency(), MAX_THREADS) : asked;
    let reason: string | null = null;
    if (threads > 1) {
      const unavailable = threadsUnavailable();
      if (unavailable !== null) {
        reason = unavailable;
        threads = 1;
      }
    }

    const reasons: string[] = [];
    let runtime: WasmRuntime | undefined;
    if (options.module !== undefined) {
      runtime = await loadGiven(options.module, requested, limit);
    } else {
      const source = options.modules === undefined ? builtinBuild : givenBuilds(options.modules);
      const variants = requested === 'auto' ? VARIANTS : VARIANTS.filter((v) => v.name === requested);
      search: for (const variant of variants) {
        for (const threaded of threads > 1 ? [true, false] : [false]) {
          const build = buildOf(variant.name, threaded);
          if (build === undefined) continue;
          const loaded = await tryBuild(build, source(build.name), limit);
          if (loaded instanceof WasmRuntime) {
            runtime = loaded;
            break search;
          }
          reasons.push(`${build.name}: ${loaded}`);
        }
      }
    }
    if (runtime === undefined) {
      const hint = reasons.some((r) => /disallowed|code generation/i.test(r))
        ? '. This runtime does not compile WebAssembly from bytes (Cloudflare Workers do not): import kivi-wasm through its "workerd" export condition (wrangler does), or pass precompiled modules with Kivi.load({ modules })'
        : '';
      throw new Error(`Kivi.load: no build of the kernels runs correctly here (${reasons.join('; ')})${hint}`);
    }
    if (threads > 1) {
      if (!runtime.build.threaded) {
        const why = reasons.find((r) => r.startsWith(`${runtime.build.name}-threads:`));
        reason = why ? `the threaded build could not run (${why})` : runtime.build.variant.name === 'scalar' ? 'the scalar build has no threaded form' : `the ${runtime.build.name} build given is single-threaded`;
      } else {
        try {
          await runtime.startThreads(threads, poolSettingsForTests.current);
        } catch (error) {
          reason = `workers could not be started: ${error instanceof Error ? error.message : String(error)}`;
        }
      }
    }
    return new Kivi(runtime, reason);
  }

  /** The build that runs: 'relaxed-simd', 'simd' or 'scalar'. */
  get variant(): VariantName {
    return this.runtime.variant.name;
  }

  /** Threads that run attention and appends (1 when only one can; see threadsReason). */
  get threads(): number {
    return this.runtime.threads;
  }

  /** Why fewer threads run than were asked for (for example, a page that is not cross-origin
   *  isolated), or null. */
  get threadsReason(): string | null {
    if (this.runtime.isClosed) return 'the instance was closed';
    return this.reason ?? this.runtime.poolTrouble;
  }

  /** Bytes of the WebAssembly memory all caches of this instance share. */
  get memoryBytes(): number {
    return this.runtime.memoryBytes;
  }

  /** Creates a cache; throws TypeError/RangeError on bad options (see CacheOptions). */
  createCache(options: CacheOptions): KiviCache {
    this.checkOpen('createCache');
    return new KiviCache(this.runtime, options);
  }

  /** Restores a cache from `cache.serialize()` bytes (docs/FORMAT.md), written by any build;
   *  throws TypeError/RangeError on anything malformed, without touching other caches. */
  restoreCache(bytes: Uint8Array | ArrayBuffer): KiviCache {
    this.checkOpen('restoreCache');
    const whole = bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : bytes;
    if (whole instanceof Uint8Array && isStreamFormat(whole)) return restoreFramed(this.runtime, whole, (o) => new KiviCache(this.runtime, o, false));
    return KiviCache.restore(this.runtime, bytes);
  }

  /** Restores a cache from a stream (docs/FORMAT.md: version 2 as `cache.serializeStream()` writes
   *  it, frame by frame, or a version 1 file): a ReadableStream, an async iterable or an array of
   *  Uint8Array chunks, split anywhere. Every frame is checked before its bytes reach the cache; on
   *  anything malformed it rejects with a TypeError/RangeError and frees what it allocated. */
  restoreCacheStream(source: CacheSource, options?: RestoreStreamOptions): Promise<KiviCache> {
    try {
      this.checkOpen('restoreCacheStream');
    } catch (error) {
      return Promise.reject(error);
    }
    return restoreFromSource(this.runtime, source, options, (o) => new KiviCache(this.runtime, o, false), (bytes) => KiviCache.restore(this.runtime, bytes));
  }

  /** Terminates the worker threads. The instance and its caches are unusable afterwards (their
   *  calls throw); a second close() does nothing. A process does not wait for the workers either way. */
  close(): void {
    this.runtime.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  private checkOpen(where: string): void {
    if (this.runtime.isClosed) throw new TypeError(`Kivi.${where}: the instance was closed`);
  }
}

/** Compiles and checks one build; the runtime, or why it cannot be used. */
async function tryBuild(build: Build, given: BuildSource | undefined, limit: number | undefined): Promise<WasmRuntime | string> {
  if (given === undefined) return 'not given';
  if (!(given instanceof WebAssembly.Module) && !WebAssembly.validate(given)) return 'this runtime does not validate it';
  let module: WebAssembly.Module;
  try {
    module = given instanceof WebAssembly.Module ? given : await WebAssembly.compile(given);
  } catch (error) {
    return String(error);
  }
  const runtime = await instantiateChecked(module, limit);
  if (!(runtime instanceof WasmRuntime)) return runtime.failed;
  if (runtime.build.name !== build.name) return `the module given for it is the ${JSON.stringify(runtime.build.name)} build`;
  return runtime;
}

/** Checks the `modules` option and returns its lookup. */
function givenBuilds(modules: unknown): (name: BuildName) => BuildSource | undefined {
  const names = BUILDS.map((b) => JSON.stringify(b.name)).join(', ');
  if (typeof modules !== 'object' || modules === null || Array.isArray(modules) || ArrayBuffer.isView(modules) || modules instanceof ArrayBuffer || modules instanceof WebAssembly.Module) {
    throw new TypeError(`Kivi.load: modules must be an object keyed by build (${names}), got ${describe(modules)}`);
  }
  const given = modules as Record<string, unknown>;
  for (const key of Object.keys(given)) {
    if (!BUILDS.some((b) => b.name === key)) throw new RangeError(`Kivi.load: modules has an unknown build ${JSON.stringify(key)}; the builds are ${names}`);
    const build = given[key];
    if (build !== undefined && !(build instanceof WebAssembly.Module || build instanceof ArrayBuffer || ArrayBuffer.isView(build))) {
      throw new TypeError(`Kivi.load: modules[${JSON.stringify(key)}] must be a WebAssembly.Module or the bytes of one, got ${describe(build)}`);
    }
  }
  return (name) => given[name] as BuildSource | undefined;
}

async function loadGiven(given: WebAssembly.Module | BufferSource, requested: 'auto' | VariantName, limit: number | undefined): Promise<WasmRuntime> {
  let module: WebAssembly.Module;
  if (given instanceof WebAssembly.Module) {
    module = given;
  } else if (given instanceof ArrayBuffer || ArrayBuffer.isView(given)) {
    if (!WebAssembly.validate(given)) throw new TypeError('Kivi.load: module bytes are not a valid WebAssembly module for this runtime');
    module = await WebAssembly.compile(given);
  } else {
    throw new TypeError(`Kivi.load: module must be a WebAssembly.Module or the bytes of one, got ${describe(given)}`);
  }
  const runtime = await instantiateChecked(module, limit);
  if (!(runtime instanceof WasmRuntime)) throw new Error(`Kivi.load: the given module cannot be used: ${runtime.failed}`);
  if (requested !== 'auto' && runtime.variant.name !== requested) {
    throw new RangeError(`Kivi.load: variant ${JSON.stringify(requested)} was asked for, but the given module is the ${JSON.stringify(runtime.variant.name)} build`);
  }
  return runtime;
}

// Kivi: loads one build of the kernels (the best the runtime runs correctly) and creates caches in
// its memory.

import { KiviCache } from './cache';
import { describe } from './options';
import type { CacheOptions } from './options';
import { builtinBuild } from './builtin';
import { VARIANTS, type VariantName } from './variants';
import { instantiateChecked, WASM32_MAX_BYTES, WasmRuntime } from './wasm';

export interface LoadOptions {
  /** Which build to run: 'auto' (default) picks the first of relaxed-simd, simd, scalar that the
   *  runtime validates and that passes the known-answer check; a name insists on that build. */
  variant?: 'auto' | VariantName;
  /** A precompiled module or the bytes of a build (for runtimes that refuse to compile embedded
   *  bytes, such as Cloudflare Workers). Its build is read from the module itself. */
  module?: WebAssembly.Module | BufferSource;
  /** Precompiled modules or bytes of several builds, keyed by build name (for example `.wasm`
   *  files imported as modules): they are tried best first, or only the one `variant` names, through
   *  the same validation and known-answer check as the embedded builds. Not with `module`. */
  modules?: Partial<Record<VariantName, WebAssembly.Module | BufferSource>>;
  /** Bytes the caches of this instance may use: an allocation that would reach past this offset of
   *  the wasm memory throws a RangeError (and changes nothing). Default: the wasm32 ceiling, 4 GiB. */
  maxMemoryBytes?: number;
}

type Build = WebAssembly.Module | BufferSource;

const VARIANT_CHOICES = ['auto', ...VARIANTS.map((v) => v.name)] as const;

export class Kivi {
  private readonly runtime: WasmRuntime;

  private constructor(runtime: WasmRuntime) {
    this.runtime = runtime;
  }

  /** Compiles and instantiates the kernels (asynchronously; nothing is compiled at import time). */
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
    if (options.module !== undefined) return new Kivi(await loadGiven(options.module, requested, limit));
    const source = options.modules === undefined ? builtinBuild : givenBuilds(options.modules);
    const candidates = requested === 'auto' ? VARIANTS : VARIANTS.filter((v) => v.name === requested);
    const reasons: string[] = [];
    for (const variant of candidates) {
      const build = source(variant.name);
      if (build === undefined) {
        reasons.push(`${variant.name}: not given`);
        continue;
      }
      if (!(build instanceof WebAssembly.Module) && !WebAssembly.validate(build)) {
        reasons.push(`${variant.name}: this runtime does not validate it`);
        continue;
      }
      let module: WebAssembly.Module;
      try {
        module = build instanceof WebAssembly.Module ? build : await WebAssembly.compile(build);
      } catch (error) {
        reasons.push(`${variant.name}: ${String(error)}`);
        continue;
      }
      const runtime = await instantiateChecked(module, limit);
      if (!(runtime instanceof WasmRuntime)) {
        reasons.push(`${variant.name}: ${runtime.failed}`);
      } else if (runtime.variant.name !== variant.name) {
        reasons.push(`${variant.name}: the module given for it is the ${JSON.stringify(runtime.variant.name)} build`);
      } else {
        return new Kivi(runtime);
      }
    }
    const hint = reasons.some((r) => /disallowed|code generation/i.test(r))
      ? '. This runtime does not compile WebAssembly from bytes (Cloudflare Workers do not): import kivi-wasm through its "workerd" export condition (wrangler does), or pass precompiled modules with Kivi.load({ modules })'
      : '';
    throw new Error(`Kivi.load: no build of the kernels runs correctly here (${reasons.join('; ')})${hint}`);
  }

  /** The build that runs: 'relaxed-simd', 'simd' or 'scalar'. */
  get variant(): VariantName {
    return this.runtime.variant.name;
  }

  /** Bytes of the WebAssembly memory all caches of this instance share. */
  get memoryBytes(): number {
    return this.runtime.memoryBytes;
  }

  /** Creates a cache; throws TypeError/RangeError on bad options (see CacheOptions). */
  createCache(options: CacheOptions): KiviCache {
    return new KiviCache(this.runtime, options);
  }

  /** Restores a cache from `cache.serialize()` bytes (docs/FORMAT.md), written by any build;
   *  throws TypeError/RangeError on anything malformed, without touching other caches. */
  restoreCache(bytes: Uint8Array | ArrayBuffer): KiviCache {
    return KiviCache.restore(this.runtime, bytes);
  }
}

/** Checks the `modules` option and returns its lookup. */
function givenBuilds(modules: unknown): (name: VariantName) => Build | undefined {
  if (typeof modules !== 'object' || modules === null || Array.isArray(modules) || ArrayBuffer.isView(modules) || modules instanceof ArrayBuffer || modules instanceof WebAssembly.Module) {
    throw new TypeError(`Kivi.load: modules must be an object keyed by build (${VARIANTS.map((v) => JSON.stringify(v.name)).join(', ')}), got ${describe(modules)}`);
  }
  const given = modules as Record<string, unknown>;
  for (const key of Object.keys(given)) {
    if (!VARIANTS.some((v) => v.name === key)) {
      throw new RangeError(`Kivi.load: modules has an unknown build ${JSON.stringify(key)}; the builds are ${VARIANTS.map((v) => JSON.stringify(v.name)).join(', ')}`);
    }
    const build = given[key];
    if (build !== undefined && !(build instanceof WebAssembly.Module || build instanceof ArrayBuffer || ArrayBuffer.isView(build))) {
      throw new TypeError(`Kivi.load: modules[${JSON.stringify(key)}] must be a WebAssembly.Module or the bytes of one, got ${describe(build)}`);
    }
  }
  return (name) => given[name] as Build | undefined;
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

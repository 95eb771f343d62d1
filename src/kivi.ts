// Kivi: loads one build of the kernels (the best the runtime runs correctly) and creates caches in
// its memory.

import { KiviCache } from './cache';
import { describe } from './options';
import type { CacheOptions } from './options';
import { VARIANTS, type VariantName } from './variants';
import { instantiateChecked, variantBytes, WasmRuntime } from './wasm';

export interface LoadOptions {
  /** Which build to run: 'auto' (default) picks the first of relaxed-simd, simd, scalar that the
   *  runtime validates and that passes the known-answer check; a name insists on that build. */
  variant?: 'auto' | VariantName;
  /** A precompiled module or the bytes of a build (for runtimes that refuse to compile embedded
   *  bytes, such as Cloudflare Workers). Its build is read from the module itself. */
  module?: WebAssembly.Module | BufferSource;
}

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
    if (options.module !== undefined) return new Kivi(await loadGiven(options.module, requested));
    const candidates = requested === 'auto' ? VARIANTS : VARIANTS.filter((v) => v.name === requested);
    const reasons: string[] = [];
    for (const variant of candidates) {
      const bytes = variantBytes(variant.name);
      if (!WebAssembly.validate(bytes)) {
        reasons.push(`${variant.name}: this runtime does not validate it`);
        continue;
      }
      const runtime = await instantiateChecked(await WebAssembly.compile(bytes));
      if (runtime instanceof WasmRuntime) return new Kivi(runtime);
      reasons.push(`${variant.name}: ${runtime.failed}`);
    }
    throw new Error(`Kivi.load: no build of the kernels runs correctly here (${reasons.join('; ')})`);
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
}

async function loadGiven(given: WebAssembly.Module | BufferSource, requested: 'auto' | VariantName): Promise<WasmRuntime> {
  let module: WebAssembly.Module;
  if (given instanceof WebAssembly.Module) {
    module = given;
  } else if (given instanceof ArrayBuffer || ArrayBuffer.isView(given)) {
    if (!WebAssembly.validate(given)) throw new TypeError('Kivi.load: module bytes are not a valid WebAssembly module for this runtime');
    module = await WebAssembly.compile(given);
  } else {
    throw new TypeError(`Kivi.load: module must be a WebAssembly.Module or the bytes of one, got ${describe(given)}`);
  }
  const runtime = await instantiateChecked(module);
  if (!(runtime instanceof WasmRuntime)) throw new Error(`Kivi.load: the given module cannot be used: ${runtime.failed}`);
  if (requested !== 'auto' && runtime.variant.name !== requested) {
    throw new RangeError(`Kivi.load: variant ${JSON.stringify(requested)} was asked for, but the given module is the ${JSON.stringify(runtime.variant.name)} build`);
  }
  return runtime;
}

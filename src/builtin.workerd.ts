// The builds of the `workerd` entry (src/workerd.ts): Cloudflare Workers refuse to compile
// WebAssembly from bytes at run time, but compile `.wasm` files imported as modules when the worker
// is uploaded (wrangler, and workerd's `wasm = embed "…"` modules); such an import yields a
// WebAssembly.Module. tsup.config.ts puts this file in place of src/builtin.ts for that entry and
// copies build/kivi.*.wasm beside it into dist/.

import relaxedSimd from './kivi.relaxed-simd.wasm';
import scalar from './kivi.scalar.wasm';
import simd from './kivi.simd.wasm';
import type { BuildName, VariantName } from './variants';

const MODULES: Readonly<Record<VariantName, WebAssembly.Module>> = { 'relaxed-simd': relaxedSimd, simd, scalar };

/** One build this entry ships, compiled by the runtime when the worker was loaded. Workers have no
 *  threads, so the threaded builds are not shipped here. */
export function builtinBuild(name: BuildName): WebAssembly.Module | Uint8Array<ArrayBuffer> | undefined {
  return MODULES[name as VariantName];
}

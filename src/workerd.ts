// kivi-wasm for Cloudflare Workers (the `workerd` export condition, which wrangler resolves): the
// same API as src/index.ts, but `Kivi.load()` takes its builds from the three `.wasm` files shipped
// beside this entry (dist/kivi.{relaxed-simd,simd,scalar}.wasm), imported as modules, instead of
// compiling embedded bytes, which Workers refuse. It tries them best first through the same
// known-answer check as the default entry. Built by tsup.config.ts with src/builtin.workerd.ts in
// place of src/builtin.ts.
export * from './index';

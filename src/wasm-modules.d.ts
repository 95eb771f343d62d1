// `.wasm` files imported as modules (src/builtin.workerd.ts): in workerd and wrangler such an import
// yields the compiled WebAssembly.Module.
declare module '*.wasm' {
  const module: WebAssembly.Module;
  export default module;
}

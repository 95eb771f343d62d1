// The matrix check as a Cloudflare Worker: bundled by run.mjs like wrangler does (esbuild with the
// workerd, worker and browser conditions, `.wasm` imports kept as modules) and served by
// `workerd serve`. `kivi-wasm` resolves to its workerd entry, which imports its three builds as
// WebAssembly.Module; kivi-wasm/kivi.scalar.wasm is one of them, for Kivi.load({ module }).
import { Kivi } from 'kivi-wasm';
import scalar from 'kivi-wasm/kivi.scalar.wasm';
import { runCheck } from './check.mjs';

export default {
  async fetch() {
    return new Response(JSON.stringify({ entry: 'workerd', ...(await runCheck(Kivi, scalar)) }), {
      headers: { 'content-type': 'application/json' },
    });
  },
};

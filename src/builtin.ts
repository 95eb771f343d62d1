// The builds `Kivi.load()` uses when it is given no module: every build embedded as base64, so that
// every runtime that may compile bytes (Node, Deno, Bun, browsers, bundlers) loads them without file
// or network access. The `workerd` entry (src/workerd.ts) is built with src/builtin.workerd.ts in
// place of this file (see tsup.config.ts), so it holds no base64.

import { WASM_BASE64 } from './generated/wasm';
import type { BuildName } from './variants';

function decodeBase64(text: string): Uint8Array<ArrayBuffer> {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** One build this entry ships: its bytes (here) or its compiled module (workerd), if it ships it. */
export function builtinBuild(name: BuildName): WebAssembly.Module | Uint8Array<ArrayBuffer> | undefined {
  return decodeBase64(WASM_BASE64[name]);
}

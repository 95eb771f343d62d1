// The matrix check as an ES module for Node, Deno and Bun (test/runtimes/run.mjs runs it in a
// scratch project where `kivi-wasm` is the packed tarball): prints runCheck()'s JSON on stdout.
import { readFile } from 'node:fs/promises';
import { Kivi } from 'kivi-wasm';
import { runCheck } from './check.mjs';

const scalar = await readFile(new URL(import.meta.resolve('kivi-wasm/kivi.scalar.wasm')));
console.log(JSON.stringify({ entry: 'esm', ...(await runCheck(Kivi, scalar)) }));

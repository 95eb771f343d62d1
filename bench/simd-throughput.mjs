// Measures how many SIMD dot products and adds one core completes per ns in this runtime (the
// probes are assembly/probe/simd-throughput.ts): the compute roofline that the README's
// performance section compares the kernels with.
//   npm run bench:simd-throughput
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const out = join(mkdtempSync(join(tmpdir(), 'kivi-probe-')), 'probe.wasm');
execFileSync(join(here, '..', 'node_modules', '.bin', 'asc'),
  [join(here, '..', 'assembly', 'probe', 'simd-throughput.ts'), '-O3', '--runtime', 'stub', '--enable', 'simd', '--enable', 'relaxed-simd', '-o', out], { stdio: 'inherit' });
const memory = new WebAssembly.Memory({ initial: 2 });
const { instance } = await WebAssembly.instantiate(readFileSync(out), { env: { abort() {}, memory } });
const probes = [
  ['i32x4.add', 'addOnly'],
  ['i32x4.dot_i16x8_s', 'dotWide'],
  ['i16x8.relaxed_dot_i8x16_i7x16_s', 'dotRelaxed'],
];
const n = 20_000_000;
console.log(`Node ${process.version}; ${n} iterations × 8 independent chains, best of 3`);
for (const [label, name] of probes) {
  const f = instance.exports[name];
  f(1000, 3); // compile and warm up
  let best = Infinity;
  for (let run = 0; run < 3; run++) {
    const t0 = performance.now();
    f(n, 3);
    best = Math.min(best, performance.now() - t0);
  }
  console.log(`${label.padEnd(34)} ${((8 * n) / (best * 1e6)).toFixed(2)} per ns`);
}

// The integer Q8_0 kernel (assembly/matvec.ts, relaxed-simd build) against the f32-madd probe
// (assembly/probe/matvec-madd.ts) on the same weights, in one process; and their errors against
// float64 over the same weights. Run: node --experimental-wasm-relaxed-simd --no-liftoff bench/matvec-madd.mjs
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const probe = join(mkdtempSync(join(tmpdir(), 'kivi-probe-')), 'madd.wasm');
execFileSync(join(here, '..', 'node_modules', '.bin', 'asc'),
  [join(here, '..', 'assembly', 'probe', 'matvec-madd.ts'), '-O3', '--runtime', 'stub', '--enable', 'simd', '--enable', 'relaxed-simd', '--importMemory', '-o', probe], { stdio: 'inherit' });
const memory = new WebAssembly.Memory({ initial: 4096, maximum: 65536, shared: false });
const env = { env: { abort() {}, memory } };
const madd = (await WebAssembly.instantiate(readFileSync(probe), env)).instance.exports;
const kernels = (await WebAssembly.instantiate(readFileSync(join(here, '..', 'build', 'kivi.relaxed-simd.wasm')), env)).instance.exports;
// Both modules share one memory: place the data far above what either uses for itself.
const base = 64 << 20;
for (const [rows, cols] of [[4096, 4096], [11008, 4096], [4096, 11008]]) {
  const blocks = cols / 32;
  const codes = base, scales = codes + rows * cols, x = scales + rows * blocks * 4, out = x + cols * 4, out2 = out + rows * 4, scratch = out2 + rows * 4;
  const needed = scratch + kernels.matvec_scratch_bytes(cols) + 64;
  if (memory.buffer.byteLength < needed) memory.grow(Math.ceil((needed - memory.buffer.byteLength) / 65536));
  const i8 = new Int8Array(memory.buffer), f32 = new Float32Array(memory.buffer);
  let seed = 1;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  for (let i = 0; i < rows * cols; i++) i8[codes + i] = Math.round((rand() * 2 - 1) * 127);
  for (let i = 0; i < rows * blocks; i++) f32[scales / 4 + i] = 0.001 + rand() * 0.001;
  for (let j = 0; j < cols; j++) f32[x / 4 + j] = (rand() * 2 - 1) * (j % 29 === 0 ? 8 : 1);
  const time = (f) => { f(); let best = Infinity; for (let r = 0; r < 5; r++) { const t = performance.now(); for (let i = 0; i < 5; i++) f(); best = Math.min(best, (performance.now() - t) / 5); } return best; };
  const tInt = time(() => kernels.q8_0_f32_matvec(rows, cols, x, codes, scales, out, scratch));
  const tMadd = time(() => madd.q8_0_f32_matvec_madd(rows, cols, x, codes, scales, out2));
  // float64 over the same weights, for the rows of group 0..7
  let eInt = 0, eMadd = 0, norm = 0;
  for (let r = 0; r < 32; r++) {
    let y = 0;
    for (let j = 0; j < cols; j++) y += i8[codes + r * cols + j] * f32[scales / 4 + (r >> 2) * blocks * 4 + Math.floor(j / 32) * 4 + (r & 3)] * f32[x / 4 + j];
    eInt += (f32[out / 4 + r] - y) ** 2; eMadd += (f32[out2 / 4 + r] - y) ** 2; norm += y * y;
  }
  console.log(`${rows}×${cols}: integer ${tInt.toFixed(2)} ms, f32 madd ${tMadd.toFixed(2)} ms (${(tMadd / tInt).toFixed(2)}×); relative L2 error vs float64: integer ${Math.sqrt(eInt / norm).toExponential(2)}, madd ${Math.sqrt(eMadd / norm).toExponential(2)}`);
}

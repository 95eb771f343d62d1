// Development aid: a fast side-by-side timing of one decode step (attend) for a few shapes and builds,
// interleaved round-robin so that machine noise hits every configuration alike. Not the benchmark of
// record (that is `npm run bench`); use it to compare kernel changes in a minute.
//   [BUILDS=simd,relaxed-simd] [SHAPES=llama2-7b,llama3-8b] [ROUNDS=15] [FILES=a.wasm,b.wasm] [THREADS=1,2] \
//   node --experimental-wasm-relaxed-simd --no-liftoff --import tsx scripts/quick-attend.ts [N] [bits,...]
import { readFileSync } from 'node:fs';
import { Kivi, type Bits, type VariantName } from '../src/index';
import { generate } from '../bench/data';
import { GROUP_SIZE, RESIDUAL, SHAPES } from '../bench/options';

const N = Number(process.argv[2] ?? 32768);
const bitsList = (process.argv[3] ?? '2,32').split(',').map(Number) as Bits[];
const builds = (process.env.BUILDS ?? 'simd,relaxed-simd').split(',') as VariantName[];
const shapes = SHAPES.filter((s) => (process.env.SHAPES ?? 'llama2-7b,llama3-8b').split(',').includes(s.name));
const SOURCE_TOKENS = 2048;
const threadCounts = (process.env.THREADS ?? '1').split(',').map(Number);

interface Config { label: string; run: () => void; samples: number[]; kvHeads: number }
const configs: Config[] = [];
for (const shape of shapes) {
  const data = generate(shape, SOURCE_TOKENS);
  const width = shape.kvHeads * shape.headDim;
  const out = new Float32Array(shape.queryHeads * shape.headDim);
  // FILES: compare wasm files (e.g. two versions of one build) in one process instead of the builds.
  const sources = process.env.FILES
    ? process.env.FILES.split(',').map((file) => ({ label: file, load: () => Kivi.load({ module: readFileSync(file) }) }))
    : builds.flatMap((variant) => threadCounts.map((threads) => ({ label: `${variant} ×${threads}`, load: () => Kivi.load({ variant, threads }) })));
  for (const { label: variant, load } of sources) {
    const kivi = await load();
    for (const bits of bitsList) {
      const cache = kivi.createCache({ layers: 1, queryHeads: shape.queryHeads, kvHeads: shape.kvHeads, headDim: shape.headDim, bits, groupSize: GROUP_SIZE, residual: RESIDUAL, maxTokens: N });
      for (let from = 0; from < N - 1; from += 512) {
        const n = Math.min(512, N - 1 - from);
        const at = from % SOURCE_TOKENS;
        const take = Math.min(n, SOURCE_TOKENS - at);
        cache.append(0, data.keys.subarray(at * width, (at + take) * width), data.values.subarray(at * width, (at + take) * width));
        if (take < n) cache.append(0, data.keys.subarray(0, (n - take) * width), data.values.subarray(0, (n - take) * width));
      }
      cache.append(0, data.keys.subarray(0, width), data.values.subarray(0, width));
      configs.push({ label: `${shape.name} ${variant} ${bits === 32 ? 'f32' : `KIVI-${bits}`}`, run: () => cache.attend(0, data.query, out), samples: [], kvHeads: shape.kvHeads });
    }
  }
}
for (const c of configs) for (let i = 0; i < 3; i++) c.run();
const ROUNDS = Number(process.env.ROUNDS ?? 15);
for (let r = 0; r < ROUNDS; r++) {
  for (const c of configs) {
    const t0 = performance.now();
    c.run();
    c.samples.push(performance.now() - t0);
  }
}
const median = (a: number[]): number => { const s = [...a].sort((x, y) => x - y); return s[s.length >> 1]!; };
for (const c of configs) {
  const ms = median(c.samples);
  console.log(`${c.label.padEnd(32)} ${ms.toFixed(2).padStart(7)} ms  ${((ms * 1e6) / (N * c.kvHeads)).toFixed(1).padStart(6)} ns/token/kv head`);
}

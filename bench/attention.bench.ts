// One decode step of attention (one query token, every head of one layer) for every build the
// runtime runs and every bit width, side by side in one process. Run: npm run bench [-- --contexts 1024,4096]
import Benchmark from 'benchmark';
import { Kivi, VARIANTS, type Bits, type KiviCache } from '../src/index';
import { Rng, syntheticKv } from '../src/reference';

const SHAPES = {
  'llama2-7b': { queryHeads: 32, kvHeads: 32, headDim: 128 },
  'llama3-8b': { queryHeads: 32, kvHeads: 8, headDim: 128 },
  'llama3.2-1b': { queryHeads: 32, kvHeads: 8, headDim: 64 },
} as const;
const BITS: Bits[] = [2, 4, 8, 32];

function argument(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

const contexts = argument('contexts', '1024,4096').split(',').map(Number);
const shapeNames = argument('shapes', Object.keys(SHAPES).join(',')).split(',') as (keyof typeof SHAPES)[];

async function runnableVariants(): Promise<Kivi[]> {
  const loaded: Kivi[] = [];
  for (const v of VARIANTS) {
    try {
      loaded.push(await Kivi.load({ variant: v.name }));
    } catch (error) {
      console.error(`# ${v.name}: not run here (${(error as Error).message})`);
    }
  }
  return loaded;
}

function fill(cache: KiviCache, tokens: number, kvHeads: number, headDim: number, rng: Rng): void {
  for (let done = 0; done < tokens; done += 512) {
    const n = Math.min(512, tokens - done);
    cache.append(0, syntheticKv(rng, n, kvHeads, headDim, 'keys'), syntheticKv(rng, n, kvHeads, headDim, 'values'));
  }
}

const kivis = await runnableVariants();
console.log(`node ${process.version}, builds: ${kivis.map((k) => k.variant).join(', ')}`);
console.log('| shape | context | build | bits | ms/step (median) | ns/token/kv head |');
console.log('|---|---:|---|---:|---:|---:|');
for (const shapeName of shapeNames) {
  const shape = SHAPES[shapeName];
  for (const context of contexts) {
    for (const kivi of kivis) {
      for (const bits of BITS) {
        const cache = kivi.createCache({ layers: 1, ...shape, bits, maxTokens: context });
        const rng = new Rng(7);
        fill(cache, context, shape.kvHeads, shape.headDim, rng);
        const query = syntheticKv(rng, 1, shape.queryHeads, shape.headDim, 'queries');
        const out = new Float32Array(query.length);
        const bench = new Benchmark(`${shapeName} ${context} ${kivi.variant} ${bits}`, () => cache.attend(0, query, out), { minSamples: 10, maxTime: 1 });
        bench.run();
        const median = [...bench.stats.sample].sort((a, b) => a - b)[Math.floor(bench.stats.sample.length / 2)]! * 1e3;
        const perToken = (median * 1e6) / (context * shape.kvHeads);
        console.log(`| ${shapeName} | ${context} | ${kivi.variant} | ${bits} | ${median.toFixed(3)} | ${perToken.toFixed(2)} |`);
        cache.dispose();
      }
    }
  }
}

// Checks the benchmark peers against float64 attention and prints rough timings.
// Run: npx tsx bench/peers/check.ts [--contexts 1024,4096] [--runs 10]
import { attentionF64, relativeL2, Rng, syntheticKv } from '../../src/reference';
import { createOnnxPeers, onnxRuntimeInfo, type AttentionShape } from './onnx';
import { plainAttention } from './plain-js';

function argument(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

const SHAPES: Record<string, AttentionShape> = {
  'Hq32 Hkv32 D128': { queryHeads: 32, kvHeads: 32, headDim: 128 },
  'Hq32 Hkv8 D128': { queryHeads: 32, kvHeads: 8, headDim: 128 },
  'Hq32 Hkv8 D64': { queryHeads: 32, kvHeads: 8, headDim: 64 },
};
const contexts = argument('contexts', '1024,4096').split(',').map(Number);
const runs = Number(argument('runs', '10'));
const TOLERANCE = 1e-4;

async function medianMs(step: () => unknown | Promise<unknown>): Promise<number> {
  for (let i = 0; i < 2; i++) await step(); // warm-up
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await step();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

let failures = 0;
console.log(`node ${process.version}, onnxruntime-web ${JSON.stringify(onnxRuntimeInfo())}`);
console.log('| shape | context | peer | rel. L2 vs f64 | ms/step (median) |');
console.log('|---|---:|---|---:|---:|');
for (const [shapeName, shape] of Object.entries(SHAPES)) {
  for (const context of contexts) {
    const rng = new Rng(11);
    const keys = syntheticKv(rng, context, shape.kvHeads, shape.headDim, 'keys');
    const values = syntheticKv(rng, context, shape.kvHeads, shape.headDim, 'values');
    const query = syntheticKv(rng, 1, shape.queryHeads, shape.headDim, 'queries');
    const expected = attentionF64(query, keys, values, context, 1, shape.queryHeads, shape.kvHeads, shape.headDim);
    const report = (peer: string, got: Float32Array, ms: number): void => {
      const err = relativeL2(got, expected);
      const ok = err < TOLERANCE;
      if (!ok) failures++;
      console.log(`| ${shapeName} | ${context} | ${peer} | ${err.toExponential(2)}${ok ? '' : ' FAIL'} | ${ms.toFixed(3)} |`);
    };

    const out = new Float32Array(query.length);
    plainAttention(shape, context, keys, values, query, out);
    report('plain JS f32', out, await medianMs(() => plainAttention(shape, context, keys, values, query, out)));

    const peers = await createOnnxPeers(shape, context, keys, values, { gqaForMha: true });
    for (const peer of peers) {
      const got = await peer.run(query);
      report(peer.name, got, await medianMs(() => peer.run(query)));
      await peer.dispose();
    }
  }
}
const info = onnxRuntimeInfo();
for (const n of info.notes) console.log(`note: ${n}`);
if (failures > 0) {
  console.error(`${failures} result(s) outside relative L2 ${TOLERANCE}`);
  process.exitCode = 1;
}

// A child process of the thread-scaling benchmark (bench/threads.ts), one per measurement that must
// have a process of its own. Reads its job as JSON from argv[2], prints one JSON line.
//
//   ceiling  one single-thread decode step, run in a loop from `startAt` (epoch ms) for `seconds`:
//            several of these at once measure what independent processes get from the machine
//   ort      onnxruntime-web's decode step with numThreads = `threads` (fixed per process), each graph
//            timed with benchmark.js; the fastest is the peer
import { readFileSync } from 'node:fs';
import { Kivi, type Bits, type VariantName } from '../src/index';
import { timeDeferred } from './measure';
import { GROUP_SIZE, RESIDUAL, SHAPES } from './options';
import { createOnnxPeers, setOnnxThreads } from './peers/onnx';

export interface CeilingJob {
  mode: 'ceiling';
  dataFile: string;
  shape: string;
  context: number;
  bits: Bits;
  variant: VariantName;
  startAt: number;
  seconds: number;
}

export interface OrtJob {
  mode: 'ort';
  dataFile: string;
  shape: string;
  context: number;
  threads: number;
  maxTime: number;
}

/** The keys, values and query a benchmark shape's data file holds (written by bench/threads.ts). */
export function readData(file: string, tokens: number, width: number, queryLength: number): { keys: Float32Array; values: Float32Array; query: Float32Array } {
  const bytes = readFileSync(file);
  const all = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  const total = (all.length - queryLength) / (2 * width);
  if (!Number.isInteger(total) || total < tokens) throw new Error(`${file}: holds ${total} tokens, ${tokens} asked for`);
  return {
    keys: all.subarray(0, tokens * width),
    values: all.subarray(total * width, (total + tokens) * width),
    query: all.subarray(2 * total * width),
  };
}

async function ceiling(job: CeilingJob): Promise<unknown> {
  const shape = SHAPES.find((s) => s.name === job.shape)!;
  const width = shape.kvHeads * shape.headDim;
  const data = readData(job.dataFile, job.context, width, shape.queryHeads * shape.headDim);
  const kivi = await Kivi.load({ variant: job.variant, threads: 1 });
  const cache = kivi.createCache({ layers: 1, kvHeads: shape.kvHeads, queryHeads: shape.queryHeads, headDim: shape.headDim, bits: job.bits, groupSize: GROUP_SIZE, residual: RESIDUAL, maxTokens: job.context });
  for (let from = 0; from < job.context - 1; from += 512) {
    const n = Math.min(512, job.context - 1 - from);
    cache.append(0, data.keys.subarray(from * width, (from + n) * width), data.values.subarray(from * width, (from + n) * width));
  }
  cache.append(0, data.keys.subarray((job.context - 1) * width), data.values.subarray((job.context - 1) * width));
  const out = new Float32Array(shape.queryHeads * shape.headDim);
  for (let i = 0; i < 3; i++) cache.attend(0, data.query, out);
  if (Date.now() > job.startAt) throw new Error(`not ready at the start time (late by ${Date.now() - job.startAt} ms)`);
  while (Date.now() < job.startAt) { /* everyone starts together */ }
  const end = job.startAt + job.seconds * 1000;
  let steps = 0;
  const t0 = performance.now();
  while (Date.now() < end) {
    cache.attend(0, data.query, out);
    steps++;
  }
  return { steps, seconds: (performance.now() - t0) / 1000 };
}

async function ortPeer(job: OrtJob): Promise<unknown> {
  const shape = SHAPES.find((s) => s.name === job.shape)!;
  const data = readData(job.dataFile, job.context, shape.kvHeads * shape.headDim, shape.queryHeads * shape.headDim);
  setOnnxThreads(job.threads);
  const peers = await createOnnxPeers(shape, job.context, data.keys, data.values, { gqaForMha: true });
  const graphs: { name: string; medianMs: number }[] = [];
  for (const peer of peers) {
    const timing = await timeDeferred(peer.name, () => peer.run(data.query), { maxTime: job.maxTime, minSamples: 5 });
    graphs.push({ name: peer.name, medianMs: timing.medianMs });
    await peer.dispose();
  }
  graphs.sort((a, b) => a.medianMs - b.medianMs);
  return { best: graphs[0], graphs };
}

const job = JSON.parse(process.argv[2]!) as CeilingJob | OrtJob;
(job.mode === 'ceiling' ? ceiling(job) : ortPeer(job)).then(
  (result) => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(0);
  },
  (error: unknown) => {
    process.stdout.write(`${JSON.stringify({ error: error instanceof Error ? error.message : String(error) })}\n`);
    process.exit(1);
  },
);

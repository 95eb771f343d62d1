// Run by test/threads.test.ts: loads the built package with two threads, attends on the pool, and
// returns from the top level with (argv "close") or without closing the instance. The process
// must then exit on its own: no worker may keep it alive.
import { Kivi } from '../dist/index.js';

const kivi = await Kivi.load({ threads: 2 });
const cache = kivi.createCache({ layers: 1, kvHeads: 8, queryHeads: 32, headDim: 128, bits: 2 });
const n = 2048;
const data = new Float32Array(n * 8 * 128).map((_, i) => Math.sin(i));
cache.append(0, data, data);
cache.append(0, data.subarray(0, 8 * 128), data.subarray(0, 8 * 128));
const out = cache.attend(0, new Float32Array(32 * 128).fill(0.5));
if (!out.every(Number.isFinite)) throw new Error('attention is not finite');
console.log(`threads ${kivi.threads}`);
if (process.argv[2] === 'close') kivi.close();

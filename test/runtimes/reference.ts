// The float64 reference for the matrix (test/runtimes/run.mjs): the same seeded workload as
// check.mjs on src/reference.ts's ReferenceCache. Prints { output } (Float64Array, base64) on stdout.
// Run with: node --import tsx test/runtimes/reference.ts
import { ReferenceCache } from '../../src/reference';
// @ts-expect-error -- plain JavaScript shared with every runtime, without declarations
import { runWorkload, SHAPE, toBase64 } from './check.mjs';

const cache = new ReferenceCache({ ...SHAPE, sinkTokens: 0, keyWindow: 'chunked', keyGrouping: 'channel', valueGrouping: 'token' });
console.log(JSON.stringify({ output: toBase64(runWorkload(cache)) }));

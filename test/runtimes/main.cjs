// The matrix check through CommonJS require() (Node 20): the package's require condition.
const { readFileSync } = require('node:fs');
const { Kivi } = require('kivi-wasm');

const scalar = readFileSync(require.resolve('kivi-wasm/kivi.scalar.wasm'));
import('./check.mjs').then(async ({ runCheck }) => {
  console.log(JSON.stringify({ entry: 'cjs', ...(await runCheck(Kivi, scalar)) }));
});

// A user's app: imports the package by name (run.mjs builds this with Vite against the package
// root or the packed tarball, installed as node_modules/kivi-wasm of a temporary copy).
import { Kivi } from 'kivi-wasm';
import { runCheck } from '../check.js';

runCheck(Kivi).then((r) => {
  window.__result = r;
  document.getElementById('out').textContent = r.ok ? `ok: ${r.variant}` : `error: ${r.error}`;
});

import { defineConfig } from 'tsup';

export default defineConfig([
  {
    // The library: runs anywhere (no Node APIs), ESM and CommonJS with declarations.
    entry: { index: 'src/index.ts', llama2c: 'src/llama2c/index.ts' },
    format: ['esm', 'cjs'],
    dts: true,
    sourcemap: true,
    clean: true,
    target: 'es2022',
    platform: 'neutral',
    splitting: false,
    treeshake: true,
  },
  {
    // The command line (`npx kivi-wasm …`): Node only.
    entry: { cli: 'src/cli/index.ts' },
    format: ['esm'],
    sourcemap: true,
    target: 'node20',
    platform: 'node',
    banner: { js: '#!/usr/bin/env node' },
    external: ['cli-progress'],
  },
]);

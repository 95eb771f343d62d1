import { copyFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig, type Options } from 'tsup';

const root = dirname(fileURLToPath(import.meta.url));
const BUILDS = ['relaxed-simd', 'simd', 'scalar', 'relaxed-simd-threads', 'simd-threads'];

/** For the `workerd` entry: src/builtin.workerd.ts (the .wasm files imported as modules) in place of
 *  src/builtin.ts (the base64-embedded builds), and the `.wasm` imports left for the runtime (wrangler
 *  or workerd) to load; they resolve to dist/kivi.*.wasm. */
const workerdBuiltins: NonNullable<Options['esbuildPlugins']>[number] = {
  name: 'kivi-workerd-builtins',
  setup(build) {
    build.onResolve({ filter: /^\.\/builtin$/ }, (args) => ({ path: join(args.resolveDir, 'builtin.workerd.ts') }));
    build.onResolve({ filter: /\.wasm$/ }, (args) => ({ path: args.path, external: true }));
  },
};

export default defineConfig((cli): Options[] => {
  // The configs below build concurrently, so none of them cleans dist/: it is emptied here, once,
  // and the three builds that the workerd entry imports (and `kivi-wasm/kivi.*.wasm` exports) are
  // copied in.
  if (!cli.watch) {
    rmSync(join(root, 'dist'), { recursive: true, force: true });
    mkdirSync(join(root, 'dist'));
    for (const name of BUILDS) {
      const wasm = join(root, 'build', `kivi.${name}.wasm`);
      if (!existsSync(wasm)) throw new Error(`tsup.config.ts: ${wasm} is missing; run npm run build:wasm (npm run build does both)`);
      copyFileSync(wasm, join(root, 'dist', `kivi.${name}.wasm`));
    }
    // The types of `kivi-wasm/kivi.*.wasm` (package.json exports), ESM and CommonJS: what workerd and
    // wrangler make of such an import; for `Kivi.load({ module })` or `Kivi.load({ modules })`.
    const declaration = [
      '/** One build of the kernels, compiled by runtimes that import `.wasm` files as modules (workerd, wrangler):',
      ' *  pass it to `Kivi.load({ module })` or `Kivi.load({ modules })`. */',
      'declare const build: WebAssembly.Module;',
      'export default build;',
      '',
    ].join('\n');
    writeFileSync(join(root, 'dist', 'kivi.wasm.d.ts'), declaration);
    writeFileSync(join(root, 'dist', 'kivi.wasm.d.cts'), declaration);
  }
  // No source maps: the output is unminified ES2022 that reads like the sources, and maps (with the
  // sources inlined, base64 builds included) would double the published package.
  return [
    {
      // The library: runs anywhere (no Node APIs), ESM and CommonJS with declarations.
      entry: { index: 'src/index.ts', llama2c: 'src/llama2c/index.ts' },
      format: ['esm', 'cjs'],
      dts: true,
      target: 'es2022',
      platform: 'neutral',
      splitting: false,
      treeshake: true,
    },
    {
      // Cloudflare Workers (the `workerd` export condition): the same API, no embedded bytes; its
      // declarations are dist/index.d.ts.
      entry: { workerd: 'src/workerd.ts' },
      format: ['esm'],
      target: 'es2022',
      platform: 'neutral',
      splitting: false,
      treeshake: true,
      esbuildPlugins: [workerdBuiltins],
    },
    {
      // The command line (`npx kivi-wasm …`): Node only.
      entry: { cli: 'src/cli/index.ts' },
      format: ['esm'],
      target: 'node20',
      platform: 'node',
      banner: { js: '#!/usr/bin/env node' },
      external: ['cli-progress'],
    },
  ];
});

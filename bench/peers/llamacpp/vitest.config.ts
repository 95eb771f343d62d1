// The peer checks (npm run test:peers): llama.cpp native and wllama on GGUF files the package writes.
// Apart from the main suite, because they need the peers installed here (npm ci --omit=optional).
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    fileParallelism: false, // one heavy peer at a time on a 2-core machine
    execArgv: ['--experimental-wasm-relaxed-simd', '--no-liftoff'],
    testTimeout: 600_000,
    hookTimeout: 120_000,
  },
});

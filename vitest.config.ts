import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    // Node 20 runs the relaxed-SIMD build only behind this flag, and its baseline compiler (Liftoff)
    // computes i32x4.relaxed_dot_i8x16_i7x16_add_s wrongly; with Liftoff off the optimizing
    // compiler runs it correctly, so the relaxed build can be tested here like the others.
    // test/loading.test.ts checks, in child processes, that plain Node 20 and Node 20 with the flag
    // alone both fall back to the simd build.
    execArgv: ['--experimental-wasm-relaxed-simd', '--no-liftoff'],
    testTimeout: 60_000,
  },
});

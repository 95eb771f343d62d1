// The Worker example's test (npm run test:worker): wrangler dev from this folder's own install
// (npm ci here), apart from the main suite.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 600_000,
    hookTimeout: 180_000,
  },
});

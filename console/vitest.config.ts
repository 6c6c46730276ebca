import { defineConfig } from 'vitest/config';

// Unit tests only: tests/*.mjs are the browser end-to-end tests and the frame-rate
// benchmark, run by node itself against a real node.
export default defineConfig({
  test: {
    include: ['tests/unit/**/*.test.ts'],
    environment: 'node',
    setupFiles: ['tests/unit/setup.ts'],
  },
});

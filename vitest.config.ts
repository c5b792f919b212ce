import { defineConfig } from 'vitest/config'
import { SummaryReporter } from './test/summary-reporter.js'

export default defineConfig({
  test: {
    include: ['**/*.test.ts'],
    exclude: ['**/node_modules/**', 'sdk/node_modules/**'],
    // chDB is one engine per process and data path: every test file runs in its own process.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default', new SummaryReporter()],
  },
})

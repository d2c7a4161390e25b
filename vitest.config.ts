import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Tests start real servers and worker threads, and spend much of their time waiting on them
    // (timers, sockets, child processes): three files at a time keeps a 2-core machine busy
    // (two left ~20 % of it idle, and CI's 20 minutes close).
    pool: 'forks',
    maxWorkers: 3,
    reporters: ['default'],
  },
})

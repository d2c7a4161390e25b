import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { defineConfig } from 'vitest/config'

// Node's on-disk compile cache (V8 code and stripped TypeScript) for every process the suite
// starts — test forks, `igw` children and the proxies' worker threads, which inherit it: a worker
// thread booted in ~0.45 s of CPU instead of ~0.85 s, and the suite starts hundreds of them.
process.env.NODE_COMPILE_CACHE ??= join(tmpdir(), 'igw-test-compile-cache')

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
    // Each fork runs file after file with the modules it already loaded (no fresh process and
    // module graph per file): the suite went from ~1,200 s to ~770 s of a 2-core machine, most of
    // it the per-file start-up. Tests own what they start (servers, env, fake timers) and undo it
    // in after-hooks; a fork grows to ~1.5 GB by the end.
    isolate: false,
    // One more try for a failed test: a few assert timings (a Redis call bounded by a 5 ms budget,
    // a breaker's 200 ms) that three busy files at a time can push past once. A defect fails twice;
    // the reporter still shows the retry.
    retry: 1,
    reporters: ['default'],
  },
})

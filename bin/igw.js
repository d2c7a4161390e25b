#!/usr/bin/env node
// igw runs its TypeScript sources directly (Node 24 strips types), so there is no build step.
const [major] = process.versions.node.split('.').map(Number)
if (major < 24) {
  console.error(`igw needs Node.js 24 or newer (this is ${process.version}). See README: "Requirements".`)
  process.exit(1)
}
// SIGHUP's default action ends the process, and loading the sources takes a while: a reload
// signal sent right after the start (a config reloader reacting to the change that started us)
// is noted here and replayed by the CLI once the proxy runs (proxy/cli.ts catchEarlySignals).
const early = { hup: false, onHup: () => { early.hup = true }, onStop: undefined }
globalThis[Symbol.for('igw.earlySignals')] = early
process.on('SIGHUP', early.onHup)
// SIGTERM/SIGINT while a server command loads: nothing is in flight yet, so exit 0 at once (the
// default action would end it by the signal, which orchestrators read as a crash). Other
// commands (config validate, …) keep the default: a killed check must not look like a pass.
if (['proxy', 'demo', 'control-plane'].includes(process.argv[2])) {
  early.onStop = (signal) => {
    console.error(JSON.stringify({ level: 'info', time: new Date().toISOString(), pid: process.pid, signal, msg: 'shutting down during startup' }))
    process.exit(0)
  }
  process.on('SIGTERM', early.onStop)
  process.on('SIGINT', early.onStop)
}
// Node's on-disk compile cache (the stripped TypeScript and V8's code for every module): a start
// with a warm cache takes about half the CPU. NODE_COMPILE_CACHE names the directory (the image
// sets one), else os.tmpdir()/node-compile-cache; NODE_DISABLE_COMPILE_CACHE=1 turns it off. It
// never throws: an unwritable directory only means a slower start. Worker threads enable it
// themselves (proxy/worker.ts).
const { enableCompileCache } = await import('node:module')
enableCompileCache()
const { main } = await import('../proxy/cli.ts')
await main(process.argv.slice(2))

#!/usr/bin/env node
// igw runs its TypeScript sources directly (Node 24 strips types), so there is no build step.
const [major] = process.versions.node.split('.').map(Number)
if (major < 24) {
  console.error(`igw needs Node.js 24 or newer (this is ${process.version}). See README: "Requirements".`)
  process.exit(1)
}
const { main } = await import('../proxy/cli.ts')
await main(process.argv.slice(2))

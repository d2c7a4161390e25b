// Load generator for the subscriptions scenario, in its own process (the gateway and the
// backend have the other core): CONNECTIONS graphql-transport-ws connections (raw `ws`, the wire
// protocol only), SUBS subscriptions each over CHANNELS channels, tenants by tier 20/30/50
// (gold-t/silver-t/bronze-t). Measures backend emit → client receive latency for every event
// in the measurement window, and counts gap notices (drops) per tier.
// Prints "ready <subscriptions>" once everything is subscribed and warmed up, then one JSON line,
// and stays connected until its stdin closes (so the gateway's metrics can be read under load).
// env: URL, CONNECTIONS, SUBS, CHANNELS, WARMUP_SEC, DURATION_SEC
import WebSocket from 'ws'

const URL_ = process.env.URL!
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 1000)
const SUBS = Number(process.env.SUBS ?? 5)
const CHANNELS = Number(process.env.CHANNELS ?? 10)
const WARMUP = Number(process.env.WARMUP_SEC ?? 3)
const DURATION = Number(process.env.DURATION_SEC ?? 60)
const TIERS = ['gold', 'silver', 'bronze'] as const
type Tier = (typeof TIERS)[number]

/** 20/30/50: of every 10 connections, 2 gold, 3 silver, 5 bronze. */
function tierOf(i: number): Tier {
  const k = i % 10
  return k < 2 ? 'gold' : k < 5 ? 'silver' : 'bronze'
}

// Latency histogram: 10 µs buckets up to 10 s.
const BUCKET_MS = 0.01
const hist = new Uint32Array(1_000_001)
let measuring = false
const received: Record<Tier, number> = { gold: 0, silver: 0, bronze: 0 }
const gaps: Record<Tier, number> = { gold: 0, silver: 0, bronze: 0 }
const missed: Record<Tier, number> = { gold: 0, silver: 0, bronze: 0 }
const closes: Record<string, number> = {}
let errors = 0
let acked = 0

const now = () => performance.timeOrigin + performance.now()

interface Msg {
  type: string
  payload?: { data?: { ticks?: { at: number } }; extensions?: { gap?: { missed?: number } } }
}

function open(i: number): Promise<void> {
  const tier = tierOf(i)
  return new Promise((resolve) => {
    const ws = new WebSocket(URL_, ['graphql-transport-ws'], { perMessageDeflate: false })
    ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: { 'x-tenant-id': `${tier}-t` } })))
    ws.on('message', (data: Buffer) => {
      // The hot path reads only what it measures (the generator must not be the bottleneck):
      // event messages start with {"id":"…","type":"next" and carry "at":<ms>.
      const text = data.toString()
      if (text.includes('"type":"next"')) {
        if (text.includes('"gap":{')) {
          const m = JSON.parse(text) as Msg
          gaps[tier]++
          missed[tier] += m.payload?.extensions?.gap?.missed ?? 0
          return
        }
        const i = text.indexOf('"at":')
        if (i !== -1 && measuring) {
          const at = Number.parseFloat(text.slice(i + 5, i + 40))
          received[tier]++
          const b = Math.min(hist.length - 1, Math.max(0, Math.round((now() - at) / BUCKET_MS)))
          hist[b]!++
        }
        return
      }
      const m = JSON.parse(text) as Msg
      if (m.type === 'connection_ack') {
        for (let j = 0; j < SUBS; j++) {
          const channel = (i * SUBS + j) % CHANNELS
          ws.send(JSON.stringify({ id: String(j), type: 'subscribe', payload: { query: 'subscription T($c: Int!) { ticks(channel: $c) { channel seq at pad } }', variables: { c: channel } } }))
        }
        acked++
        resolve()
      } else if (m.type === 'error') errors++
    })
    ws.on('close', (code) => {
      closes[code] = (closes[code] ?? 0) + 1
      resolve()
    })
    ws.on('error', () => {
      errors++
      resolve()
    })
  })
}

function pct(p: number): number {
  let total = 0
  for (const n of hist) total += n
  const want = Math.ceil(total * p)
  let seen = 0
  for (let b = 0; b < hist.length; b++) {
    seen += hist[b]!
    if (seen >= want) return Math.round(b * BUCKET_MS * 100) / 100
  }
  return Number.NaN
}

for (let i = 0; i < CONNECTIONS; i += 50) {
  await Promise.all(Array.from({ length: Math.min(50, CONNECTIONS - i) }, (_, k) => open(i + k)))
}
await new Promise((r) => setTimeout(r, WARMUP * 1000))
console.log(`ready ${acked * SUBS}`)
measuring = true
const t0 = performance.now()
let lagMax = 0
const lag = setInterval(() => {
  const expected = performance.now()
  setImmediate(() => (lagMax = Math.max(lagMax, performance.now() - expected)))
}, 100)
await new Promise((r) => setTimeout(r, DURATION * 1000))
measuring = false
clearInterval(lag)
const secs = (performance.now() - t0) / 1000
const total = received.gold + received.silver + received.bronze
console.log(
  JSON.stringify({
    connections: acked,
    subscriptions: acked * SUBS,
    seconds: Math.round(secs * 10) / 10,
    deliveries: total,
    deliveriesPerSec: Math.round(total / secs),
    p50: pct(0.5),
    p95: pct(0.95),
    p99: pct(0.99),
    max: pct(1),
    received,
    gaps,
    missed,
    closes,
    errors,
    generatorMaxLoopLagMs: Math.round(lagMax * 10) / 10,
  }),
)
// Stay connected until the scenario has read the gateway's metrics (it closes our stdin).
process.stdin.resume()
process.stdin.on('end', () => process.exit(0))
process.stdin.on('close', () => process.exit(0))

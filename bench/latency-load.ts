/**
 * The steady background load for bench/latency.ts, run as its own process: RATE events/s as
 * /v1/batch requests of BATCH messages, sent on a fixed schedule (not as fast as possible), at most
 * IN_FLIGHT requests at a time, until SIGTERM or MAX_SECONDS. Prints one JSON line: events sent
 * and acknowledged, the rate achieved, request latencies.
 */
import { batchJson } from './ingest-data.js'
import { percentile } from './report.js'

const URL_ = process.env.URL as string
const KEY = process.env.WRITE_KEY as string
const RATE = Number(process.env.RATE ?? 2000)
const BATCH = Number(process.env.BATCH ?? 100)
const IN_FLIGHT = Number(process.env.IN_FLIGHT ?? 8)
const MAX_SECONDS = Number(process.env.MAX_SECONDS ?? 900)
const RUN = `lat${Date.now().toString(36)}`

const headers = { authorization: `Basic ${Buffer.from(`${KEY}:`).toString('base64')}`, 'content-type': 'application/json' }
const intervalMs = (1000 * BATCH) / RATE
const latencies: number[] = []
const failures: Record<string, number> = {}
let sent = 0
let acked = 0
let skipped = 0
let inFlight = 0
let next = 0
const started = performance.now()

async function send() {
  const first = next
  next += BATCH
  inFlight++
  sent += BATCH
  const t0 = performance.now()
  try {
    const res = await fetch(`${URL_}/v1/batch`, { method: 'POST', headers, body: batchJson(RUN, first, BATCH, Date.now()) })
    const answer = (await res.json()) as { accepted?: number }
    latencies.push(performance.now() - t0)
    if (res.status === 200 && answer.accepted === BATCH) acked += BATCH
    else failures[res.status] = (failures[res.status] ?? 0) + 1
  } catch (err) {
    const key = err instanceof Error ? err.message : String(err)
    failures[key] = (failures[key] ?? 0) + 1
  } finally {
    inFlight--
  }
}

// A fixed schedule: batch k is due at started + k·interval; a batch is skipped (and counted) when
// IN_FLIGHT requests are still waiting, so a slow server shows as a lower achieved rate.
let k = 0
function tick() {
  const now = performance.now()
  while (started + k * intervalMs <= now) {
    k++
    if (inFlight < IN_FLIGHT) void send()
    else skipped++
  }
  if (now - started > MAX_SECONDS * 1000) return finish()
  timer = setTimeout(tick, Math.max(0, started + k * intervalMs - performance.now()))
}
let timer = setTimeout(tick, 0)

let done = false
async function finish() {
  if (done) return
  done = true
  clearTimeout(timer)
  while (inFlight > 0) await new Promise((r) => setTimeout(r, 10))
  const seconds = (performance.now() - started) / 1000
  process.stdout.write(
    `${JSON.stringify({
      sent,
      acked,
      skipped: skipped * BATCH,
      seconds,
      eventsPerSecond: acked / seconds,
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      failures,
    })}\n`,
  )
  process.exit(0)
}
process.on('SIGTERM', () => void finish())

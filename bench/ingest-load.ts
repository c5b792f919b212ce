/**
 * The load generator for bench/ingest.ts, run as its own process: CONNECTIONS concurrent loops,
 * each POSTing /v1/batch with BATCH unique messages until EVENTS messages are acknowledged (or
 * MAX_SECONDS pass). Prints one JSON line: acknowledged events, wall time, request latencies.
 */
import { batchJson } from './ingest-data.js'
import { percentile } from './report.js'

const URL_ = process.env.URL as string
const KEY = process.env.WRITE_KEY as string
const EVENTS = Number(process.env.EVENTS ?? 300_000)
const BATCH = Number(process.env.BATCH ?? 500)
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 12)
const MAX_SECONDS = Number(process.env.MAX_SECONDS ?? 180)
const RUN = process.env.RUN ?? `b${Date.now().toString(36)}`

const headers = { authorization: `Basic ${Buffer.from(`${KEY}:`).toString('base64')}`, 'content-type': 'application/json' }
const latencies: number[] = []
const failures: Record<string, number> = {}
let next = 0
let acked = 0
const started = performance.now()
const deadline = started + MAX_SECONDS * 1000

async function loop() {
  while (next < EVENTS && performance.now() < deadline) {
    const first = next
    const size = Math.min(BATCH, EVENTS - first)
    next += size
    const body = batchJson(RUN, first, size, Date.now())
    const t0 = performance.now()
    try {
      const res = await fetch(`${URL_}/v1/batch`, { method: 'POST', headers, body })
      const answer = (await res.json()) as { accepted?: number }
      latencies.push(performance.now() - t0)
      if (res.status === 200 && answer.accepted === size) acked += size
      else failures[res.status] = (failures[res.status] ?? 0) + 1
    } catch (err) {
      const key = err instanceof Error ? err.message : String(err)
      failures[key] = (failures[key] ?? 0) + 1
    }
  }
}

await Promise.all(Array.from({ length: CONNECTIONS }, loop))
const seconds = (performance.now() - started) / 1000
process.stdout.write(
  `${JSON.stringify({
    acked,
    seconds,
    eventsPerSecond: acked / seconds,
    requests: latencies.length,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    max: Math.max(...latencies),
    cpuSeconds: (process.cpuUsage().user + process.cpuUsage().system) / 1e6,
    failures,
  })}\n`,
)

/**
 * `npm run bench:soak`: the service under a steady load for BENCH_SOAK_MINUTES (default 20), with
 * the evaluator and webhook deliveries on.
 *
 * The server runs as `npm start` does (a separate process, embedded chDB in a fresh DATA_DIR). This
 * process sends BENCH_RATE events/s (default 2,000) as batches of BENCH_BATCH (50) `Soak Event`
 * track calls, each account's users in turn; a new account joins every BENCH_ACCOUNT_MS (250 ms),
 * and a rule fires when an account has 3 events in a day, so signals fire (and are delivered to a
 * local receiver) all through the run, as well as the default rule pack's own evaluation.
 *
 * Reported: the server's RSS at the start, middle and end (growth after BENCH_WARMUP_MINUTES, the
 * baseline, at most 10%), p99 acknowledgement latency per minute (against the first minute after
 * warm-up), errors (non-2xx answers, failed requests), signals fired and webhooks delivered, and
 * whether any webhook-id was delivered twice.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort } from '../test/child-server.js'
import { percentile, writeSection } from './report.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const MINUTES = Number(process.env.BENCH_SOAK_MINUTES ?? 20)
const WARMUP_MINUTES = Number(process.env.BENCH_WARMUP_MINUTES ?? 2)
const RATE = Number(process.env.BENCH_RATE ?? 2000)
const BATCH = Number(process.env.BENCH_BATCH ?? 50)
const ACCOUNT_MS = Number(process.env.BENCH_ACCOUNT_MS ?? 250)
const USERS_PER_ACCOUNT = 4
const WRITE_KEY = 'soak_write_key_0123456789'
const ADMIN = 'soak_admin_token_0123456789'
const log = (s: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${s}\n`)

const rssOf = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024
const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MB`

async function main() {
  const dataDir = mkdtempSync(join(tmpdir(), 'signalbox-soak-'))
  const port = await freePort()
  // The webhook receiver: counts deliveries per webhook-id.
  const deliveries = new Map<string, number>()
  const receiver: Server = createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      const id = String(req.headers['webhook-id'])
      deliveries.set(id, (deliveries.get(id) ?? 0) + 1)
      res.writeHead(200).end('ok')
    })
  })
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r))
  const hook = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`

  const server: ChildProcess = spawn(process.execPath, ['--import', 'tsx', '--max-semi-space-size=32', 'src/node.ts'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', PORT: String(port), HOST: '127.0.0.1', DATA_DIR: dataDir, ADMIN_TOKEN: ADMIN, WRITE_KEYS: WRITE_KEY, LOG_LEVEL: 'warn', RATE_LIMIT_PER_SECOND: '0' },
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  const url = `http://127.0.0.1:${port}`
  const auth = { authorization: `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`, 'content-type': 'application/json' }
  const admin = { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${url}/health`)).ok) break
    } catch {
      // not listening yet
    }
    if (i > 1200) throw new Error('the server did not start')
    await new Promise((r) => setTimeout(r, 50))
  }
  const rule = { id: 'soak-active', kind: 'pql', subject: 'account', when: { all: [{ metric: 'count', event: 'Soak Event', window: '1d', op: 'gte', value: 3 }] } }
  if (!(await fetch(`${url}/v1/rules/soak-active`, { method: 'PUT', headers: admin, body: JSON.stringify(rule) })).ok) throw new Error('rule not stored')
  if (!(await fetch(`${url}/v1/webhooks`, { method: 'POST', headers: admin, body: JSON.stringify({ url: hook }) })).ok) throw new Error('webhook not stored')

  const started = performance.now()
  const endAt = started + MINUTES * 60_000
  const perMinute: { latencies: number[]; errors: number; events: number }[] = []
  const rss: { minute: number; bytes: number }[] = []
  let seq = 0
  let inFlight = 0
  let maxInFlight = 0
  const minute = () => Math.floor((performance.now() - started) / 60_000)
  const bucket = (m: number) => (perMinute[m] ??= { latencies: [], errors: 0, events: 0 })

  const send = async () => {
    const m = minute()
    const accounts = Math.max(1, Math.floor((performance.now() - started) / ACCOUNT_MS))
    const batch = Array.from({ length: BATCH }, () => {
      const n = seq++
      // Each event goes to the newest accounts first, so a new account reaches 3 events at once.
      const account = accounts - 1 - (n % Math.min(accounts, 50))
      return { type: 'track', messageId: `soak-${n}`, userId: `soak-u-${account}-${n % USERS_PER_ACCOUNT}`, event: 'Soak Event', context: { groupId: `soak-a-${account}` } }
    })
    const t0 = performance.now()
    inFlight++
    maxInFlight = Math.max(maxInFlight, inFlight)
    try {
      const res = await fetch(`${url}/v1/batch`, { method: 'POST', headers: auth, body: JSON.stringify({ batch }) })
      await res.arrayBuffer()
      bucket(m).latencies.push(performance.now() - t0)
      if (res.status === 200) bucket(m).events += BATCH
      else bucket(m).errors++
    } catch {
      bucket(m).errors++
    } finally {
      inFlight--
    }
  }

  const intervalMs = (1000 * BATCH) / RATE
  let next = performance.now()
  const sampler = setInterval(() => rss.push({ minute: (performance.now() - started) / 60_000, bytes: rssOf(server.pid as number) }), 10_000)
  let lastMinute = -1
  const pending = new Set<Promise<void>>()
  while (performance.now() < endAt) {
    const p = send()
    pending.add(p)
    void p.finally(() => pending.delete(p))
    next += intervalMs
    const wait = next - performance.now()
    if (wait > 0) await new Promise((r) => setTimeout(r, wait))
    const m = minute()
    if (m !== lastMinute && m > 0) {
      const b = perMinute[m - 1]
      log(`minute ${m}: ${b?.events ?? 0} events, p99 ${percentile(b?.latencies ?? [], 99).toFixed(0)} ms, errors ${b?.errors ?? 0}, RSS ${mb(rssOf(server.pid as number))}, load ${loadavg()[0]?.toFixed(1)}`)
      lastMinute = m
    }
  }
  await Promise.all(pending)
  clearInterval(sampler)
  rss.push({ minute: MINUTES, bytes: rssOf(server.pid as number) })

  // Let the last signals be evaluated and delivered, then count.
  let signals = 0
  for (let i = 0; i < 120; i++) {
    const stats = (await (await fetch(`${url}/v1/stats`, { headers: admin })).json()) as { signals: number; events: number }
    signals = stats.signals
    if (signals > 0 && deliveries.size >= signals) break
    await new Promise((r) => setTimeout(r, 1000))
  }
  const stats = (await (await fetch(`${url}/v1/stats`, { headers: admin })).json()) as { events: number; accounts: number; signals: number }
  const twice = [...deliveries.values()].filter((n) => n > 1).length
  server.kill('SIGTERM')
  await new Promise((r) => server.once('exit', r))
  receiver.close()
  rmSync(dataDir, { recursive: true, force: true })

  const after = rss.filter((r) => r.minute >= WARMUP_MINUTES)
  const base = after[0]?.bytes ?? Number.NaN
  const middle = after[Math.floor(after.length / 2)]?.bytes ?? Number.NaN
  const end = after.at(-1)?.bytes ?? Number.NaN
  const peak = Math.max(...after.map((r) => r.bytes))
  const growth = end / base - 1
  const minutes = perMinute.map((b, i) => ({ i, p99: percentile(b.latencies, 99), p50: percentile(b.latencies, 50), errors: b.errors, events: b.events }))
  const baseP99 = minutes[WARMUP_MINUTES]?.p99 ?? Number.NaN
  const errors = minutes.reduce((a, b) => a + b.errors, 0)
  const acked = minutes.reduce((a, b) => a + b.events, 0)
  const rows = minutes
    .map((m) => `| ${m.i + 1} | ${m.events.toLocaleString('en-US')} | ${m.p50.toFixed(0)} | ${m.p99.toFixed(0)} | ${(m.p99 / baseP99).toFixed(2)}× | ${m.errors} |`)
    .join('\n')
  writeSection(
    'soak',
    'bench:soak — steady load with the evaluator and deliveries on',
    `
${MINUTES} minutes at ${RATE.toLocaleString('en-US')} events/s (batches of ${BATCH}; a new account every ${ACCOUNT_MS} ms, a rule firing at its 3rd event, the default pack on, one webhook endpoint on a local receiver). Server: \`npm start\` as a separate process on the embedded store. Load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(', ')}.

| | value |
| --- | --- |
| events acknowledged / stored (stats) | ${acked.toLocaleString('en-US')} / ${stats.events.toLocaleString('en-US')} |
| errors (non-2xx, failed requests) | ${errors} |
| RSS after ${WARMUP_MINUTES} min warm-up (baseline) / middle / end / peak | ${mb(base)} / ${mb(middle)} / ${mb(end)} / ${mb(peak)} |
| RSS growth after warm-up (end / baseline) | ${(growth * 100).toFixed(1)}% (limit 10%) ${growth <= 0.1 ? '✓' : '✗'} |
| signals (stats) / webhook deliveries received (distinct webhook-ids, fired and resolved events) / delivered twice | ${stats.signals.toLocaleString('en-US')} / ${deliveries.size.toLocaleString('en-US')} / ${twice} |
| requests in flight at most | ${maxInFlight} |

Acknowledgement latency per minute (ms; the ratio is the minute's p99 against minute ${WARMUP_MINUTES + 1}'s, the first after warm-up):

| minute | events | p50 | p99 | p99 ratio | errors |
| ---: | ---: | ---: | ---: | ---: | ---: |
${rows}
`,
  )
}

await main()

/**
 * `npm run bench:latency`: event → delivered webhook latency, and webhook deliveries/s.
 *
 * The server runs as `npm start` does (a separate process, embedded chDB in a fresh DATA_DIR,
 * default evaluation and webhook settings). A second process (bench/latency-load.ts) sends a
 * steady background load of BENCH_RATE events/s. A rule fires when an account has 3 `Bench
 * Threshold` events; every trial account already has 2. A trial sends the third (POST /v1/track)
 * and times until a local receiver has the signed delivery and has verified it with
 * standardwebhooks. Trials start every BENCH_SPACING_MS, independently of each other.
 *
 * - latency: BENCH_TRIALS trials; p50 / p95 / p99 (target p95 ≤ 2 s);
 * - isolation: the same trials with two broken endpoints on the same rule (one refuses
 *   connections, one accepts and never answers, so every attempt waits for the 10 s timeout);
 *   ratio of the p95s with / without;
 * - with the default pack: the same trials once the 5 default rules are switched on as well;
 * - the store holds BENCH_PRELOAD events of history first (1M; the per-day state rebuilt with the
 *   default pack's measures), so evaluations read a store in service, not an empty one;
 * - deliveries/s: BENCH_BURST signals fired at once (one event each, one batch) to a fast receiver,
 *   first to last delivery, against a plain loop of signed POSTs (standardwebhooks, the server's
 *   default concurrency of 8) from this process to the same receiver.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Webhook } from 'standardwebhooks'
import { decodeTime } from 'ulid'
import { stateMeasures } from '../rules/compile/state.js'
import { rebuildState } from '../rules/state/rebuild.js'
import { defaultsDir, readRuleDir } from '../rules/store.js'
import { loadConfig } from '../src/config.js'
import { migrate } from '../src/store/migrate.js'
import { openStore } from '../src/store/node.js'
import { generate, generateDirectory } from './rules-data.js'
import { percentile, writeSection } from './report.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const TRIALS = Number(process.env.BENCH_TRIALS ?? 200)
const RATE = Number(process.env.BENCH_RATE ?? 2000)
const SPACING_MS = Number(process.env.BENCH_SPACING_MS ?? 200)
const BURST = Number(process.env.BENCH_BURST ?? 2000)
const PRELOAD = Number(process.env.BENCH_PRELOAD ?? 1_000_000)
const TRIAL_TIMEOUT_MS = 30_000
const TARGET_P95_MS = 2000
/** Issue 12's target with the default pack on. */
const TARGET_PACK_P95_MS = 1000
const CONCURRENCY = 8
const WRITE_KEY = 'bench_write_key_0123456789'
const ADMIN_TOKEN = 'bench_admin_token_0123456789'

const fmt = (n: number) => Math.round(n).toLocaleString('en-US')
const ms = (n: number) => `${Math.round(n).toLocaleString('en-US')} ms`

// ---------------------------------------------------------------------------------------------
// Local receivers

type Receiver = { server: Server; url: string; close(): Promise<void> }

async function listen(handler: (req: IncomingMessage, res: ServerResponse, body: string) => void): Promise<Receiver> {
  const sockets = new Set<Socket>()
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => handler(req, res, Buffer.concat(chunks).toString('utf8')))
  })
  server.keepAliveTimeout = 60_000
  server.on('connection', (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    server,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    async close() {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

const headerRecord = (req: IncomingMessage) => Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, String(v)]))

/** Trial deliveries: verified, then matched to the waiting trial by account id. */
const trialSecret = { value: '' }
const waiting = new Map<string, (at: number) => void>()
/** Per trial account: signal event written to the log → delivery arrived (wall clock, ms). */
const outboxPart = new Map<string, number>()
let unverified = 0
const trialRx = await listen((req, res, body) => {
  const at = performance.now()
  try {
    const event = new Webhook(trialSecret.value).verify(body, headerRecord(req)) as { timestamp: string; data: { subject: { id: string } } }
    // The delivery id carries the time its signal event was written to the log (a ULID).
    const recorded = decodeTime(String(req.headers['webhook-id']).slice(4))
    if (!outboxPart.has(event.data.subject.id)) outboxPart.set(event.data.subject.id, Date.now() - recorded)
    waiting.get(event.data.subject.id)?.(at)
  } catch {
    unverified++
  }
  res.writeHead(204).end()
})

/** The fast receiver: verifies and counts (outbox deliveries on /hook, the plain loop on /plain). */
const fastSecret = { value: '' }
const fast = { outbox: [] as number[], plain: 0, unverified: 0 }
const fastRx = await listen((req, res, body) => {
  try {
    new Webhook(fastSecret.value).verify(body, headerRecord(req))
    if (req.url === '/plain') fast.plain++
    else fast.outbox.push(performance.now())
  } catch {
    fast.unverified++
  }
  res.writeHead(204).end()
})

/** An endpoint that accepts connections and never answers. */
const hangRx = await listen(() => {})

async function freePort(): Promise<number> {
  const r = await listen(() => {})
  const port = (r.server.address() as AddressInfo).port
  await r.close()
  return port
}

// ---------------------------------------------------------------------------------------------
// The server and the load process

function run(script: string, env: Record<string, string>, nodeArgs: string[] = []) {
  return spawn(process.execPath, [...nodeArgs, '--import', 'tsx', script], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] })
}

function startFlags(): string[] {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
  return (pkg.scripts.start ?? '').split(/\s+/).filter((a) => /^--[\w-]+(=\S+)?$/.test(a))
}

async function waitReady(url: string, child: ChildProcess) {
  const deadline = Date.now() + 60_000
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the server exited ${child.exitCode} before it was ready`)
    try {
      if ((await fetch(`${url}/health`)).ok) return
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error('the server was not ready within 60 s')
}

async function until(check: () => boolean, timeoutMs: number, what: string) {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

const dataDir = mkdtempSync(join(tmpdir(), 'signalbox-bench-latency-'))

/**
 * The store starts with PRELOAD events of history (90 days, 2,000 accounts, 20,000 users), as a
 * store in service has: generated straight into events_v1 in this process, the per-day state
 * built with the default pack's measures (what a first upgrade's `signalbox state rebuild` does),
 * then closed for the server to open.
 */
async function preload(): Promise<{ events: number; ms: number }> {
  const started = performance.now()
  const store = await openStore(loadConfig({ DATA_DIR: dataDir, LOG_LEVEL: 'silent' }))
  try {
    await migrate(store)
    const shape = { events: PRELOAD, accounts: 2_000, users: 20_000, days: 90, now: Date.now() }
    await generate(store, shape)
    await generateDirectory(store, shape)
    const pack = (await readRuleDir(await defaultsDir())).map((d) => d.rule)
    await rebuildState(store, { now: shape.now, measures: stateMeasures(pack) })
    await store.command('OPTIMIZE TABLE state_daily_v1 FINAL')
    await store.command('OPTIMIZE TABLE activity_daily_v1 FINAL')
  } finally {
    await store.close()
  }
  return { events: PRELOAD, ms: performance.now() - started }
}
const preloaded = PRELOAD > 0 ? await preload() : { events: 0, ms: 0 }

const port = await freePort()
const url = `http://127.0.0.1:${port}`
const load1 = loadavg()[0] as number
const server = run(
  'src/node.ts',
  {
    DATA_DIR: dataDir,
    PORT: String(port),
    HOST: '127.0.0.1',
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
    RATE_LIMIT_PER_SECOND: '0',
    RULES_DEFAULT_PACK: 'false',
    ADMIN_TOKEN,
    WRITE_KEYS: WRITE_KEY,
  },
  startFlags(),
)
// BENCH_SERVER_LOG=file keeps the server's log (e.g. with LOG_LEVEL=debug for evaluation timings).
if (process.env.BENCH_SERVER_LOG) server.stdout?.pipe(createWriteStream(process.env.BENCH_SERVER_LOG))
else server.stdout?.resume()

const admin = async (path: string, method: string, body?: unknown) => {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`)
  return res.status === 204 ? undefined : ((await res.json()) as Record<string, unknown>)
}
const basic = { authorization: `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`, 'content-type': 'application/json' }
const batch = async (messages: object[]) => {
  for (let i = 0; i < messages.length; i += 2000) {
    const res = await fetch(`${url}/v1/batch`, { method: 'POST', headers: basic, body: JSON.stringify({ batch: messages.slice(i, i + 2000) }) })
    if (res.status !== 200) throw new Error(`batch: ${res.status} ${await res.text()}`)
  }
}
const thresholdEvent = (account: string) => ({ type: 'track', event: 'Bench Threshold', userId: `${account}_u`, context: { groupId: account } })

/** One trial per account, started every SPACING_MS; each resolves with its latency (ms) or undefined. */
async function trials(prefix: string): Promise<{ latencies: number[]; missing: number; outbox: number[] }> {
  const runs: Promise<number | undefined>[] = []
  const started = performance.now()
  for (let i = 0; i < TRIALS; i++) {
    const due = started + i * SPACING_MS
    await new Promise((r) => setTimeout(r, Math.max(0, due - performance.now())))
    const account = `${prefix}_${i}`
    runs.push(
      new Promise<number | undefined>((resolve) => {
        const t0 = performance.now()
        const timer = setTimeout(() => {
          waiting.delete(account)
          resolve(undefined)
        }, TRIAL_TIMEOUT_MS)
        waiting.set(account, (at) => {
          clearTimeout(timer)
          waiting.delete(account)
          resolve(at - t0)
        })
        void fetch(`${url}/v1/track`, { method: 'POST', headers: basic, body: JSON.stringify(thresholdEvent(account)) }).then(
          async (res) => {
            if (res.status !== 200) process.stderr.write(`trial ${account}: track answered ${res.status} ${await res.text()}\n`)
          },
          (err) => process.stderr.write(`trial ${account}: ${err}\n`),
        )
      }),
    )
  }
  const results = await Promise.all(runs)
  const latencies = results.filter((r): r is number => r !== undefined)
  const outbox = [...outboxPart.entries()].filter(([k]) => k.startsWith(`${prefix}_`)).map(([, v]) => v)
  return { latencies, missing: results.length - latencies.length, outbox }
}

async function plainLoop(n: number): Promise<number> {
  const wh = new Webhook(fastSecret.value)
  let next = 0
  const started = performance.now()
  const worker = async () => {
    while (next < n) {
      const i = next++
      const body = JSON.stringify({ type: 'signal.fired', timestamp: new Date().toISOString(), data: { id: `plain_${i}` } })
      const at = new Date()
      const id = `msg_${i}`
      const res = await fetch(fastRx.url.replace('/hook', '/plain'), {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'webhook-id': id, 'webhook-timestamp': String(Math.floor(at.getTime() / 1000)), 'webhook-signature': wh.sign(id, at, body) },
        body,
      })
      await res.arrayBuffer()
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  return n / ((performance.now() - started) / 1000)
}

type LoadResult = { sent: number; acked: number; skipped: number; seconds: number; eventsPerSecond: number; p50: number; p99: number; failures: Record<string, number> }

let loadProc: ChildProcess | undefined
try {
  await waitReady(url, server)
  const rule = (id: string, event: string, value: number) => ({
    id,
    kind: 'pql',
    subject: 'account',
    when: { all: [{ metric: 'count', event, window: '30d', op: 'gte', value }] },
  })
  await admin('/v1/rules/bench-threshold', 'PUT', rule('bench-threshold', 'Bench Threshold', 3))
  await admin('/v1/rules/bench-burst', 'PUT', rule('bench-burst', 'Bench Burst', 1))
  trialSecret.value = String((await admin('/v1/webhooks', 'POST', { url: trialRx.url, rule_ids: ['bench-threshold'] }))?.secret)
  fastSecret.value = String((await admin('/v1/webhooks', 'POST', { url: fastRx.url, rule_ids: ['bench-burst'] }))?.secret)

  // Every trial account starts one event short of the threshold.
  const seed: object[] = []
  for (const prefix of ['a', 'b', 'c']) for (let i = 0; i < TRIALS; i++) seed.push(thresholdEvent(`${prefix}_${i}`), thresholdEvent(`${prefix}_${i}`))
  await batch(seed)

  loadProc = run('bench/latency-load.ts', { URL: url, WRITE_KEY, RATE: String(RATE) })
  let loadOut = ''
  loadProc.stdout?.setEncoding('utf8').on('data', (d: string) => (loadOut += d))
  const loadExit = new Promise<void>((resolve) => loadProc?.once('exit', () => resolve()))
  // Let the background load settle into its pace (and the seeds' evaluations finish).
  await new Promise((r) => setTimeout(r, 3000))

  const healthy = await trials('a')
  const dead = await admin('/v1/webhooks', 'POST', { url: `http://127.0.0.1:${await freePort()}/hook`, rule_ids: ['bench-threshold'] })
  const hang = await admin('/v1/webhooks', 'POST', { url: hangRx.url, rule_ids: ['bench-threshold'] })
  const broken = await trials('b')
  await admin(`/v1/webhooks/${dead?.id}`, 'DELETE')
  await admin(`/v1/webhooks/${hang?.id}`, 'DELETE')

  // The same trials with the default rule pack (5 rules over every activity) switched on as well:
  // each ingestion-triggered evaluation then runs 7 rules for the touched subjects instead of 1–2.
  const pack = await readRuleDir(await defaultsDir())
  for (const { rule } of pack) await admin(`/v1/rules/${rule.id}`, 'PUT', rule)
  await new Promise((r) => setTimeout(r, 2000))
  const withPack = await trials('c')

  loadProc.kill('SIGTERM')
  await loadExit
  const load = JSON.parse(loadOut.trim().split('\n').pop() as string) as LoadResult

  // Deliveries/s: BURST signals at once, to the fast receiver, without the background load.
  const burst: object[] = []
  for (let i = 0; i < BURST; i++) burst.push({ type: 'track', event: 'Bench Burst', userId: `burst_${i}_u`, context: { groupId: `burst_${i}` } })
  const burstStarted = performance.now()
  await batch(burst)
  await until(() => fast.outbox.length >= BURST, 180_000, `${BURST} burst deliveries`)
  const first = fast.outbox[0] as number
  const last = fast.outbox[BURST - 1] as number
  const outboxRate = BURST / ((last - first) / 1000)
  const burstTotal = last - burstStarted
  const plainRate = await plainLoop(BURST)

  // The server's peak resident memory (Linux: VmHWM), before it stops.
  const peakRss = (() => {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${server.pid}/status`, 'utf8'))
      return m ? `${(Number(m[1]) / 1024).toFixed(0)} MiB` : 'unknown'
    } catch {
      return 'unknown'
    }
  })()
  server.kill('SIGTERM')
  await new Promise<void>((resolve) => (server.exitCode !== null ? resolve() : server.once('exit', () => resolve())))

  const p = (xs: number[], q: number) => percentile(xs, q)
  const ratio = p(broken.latencies, 95) / p(healthy.latencies, 95)
  const pass = p(healthy.latencies, 95) <= TARGET_P95_MS
  writeSection(
    'latency',
    'Delivery: event → signed webhook latency, deliveries/s',
    `
The server runs as \`npm start\` does (separate process, flags \`${startFlags().join(' ')}\`, embedded chDB, default evaluation and webhook settings: ingestion-triggered evaluation, EVAL_DEBOUNCE_MS = 250 ms). A second process sends a steady background load of ${fmt(RATE)} events/s (${fmt(load.eventsPerSecond)} events/s acknowledged, over ${load.seconds.toFixed(0)} s, request p50 ${ms(load.p50)}, p99 ${ms(load.p99)}${load.skipped ? `, ${fmt(load.skipped)} events skipped because 8 requests were still waiting` : ''}). A rule fires when an account has 3 \`Bench Threshold\` events; each trial account already has 2. A trial sends the third (\`POST /v1/track\`) and stops the clock when a local receiver has the delivery and has verified its signature with \`standardwebhooks\`. One trial starts every ${SPACING_MS} ms.

| measure | value |
| --- | --- |
| trials (delivered / sent) | ${healthy.latencies.length} / ${TRIALS} |
| **latency p50 / p95 / p99** | **${ms(p(healthy.latencies, 50))} / ${ms(p(healthy.latencies, 95))} / ${ms(p(healthy.latencies, 99))}** (max ${ms(Math.max(...healthy.latencies))}) |
| target p95 ≤ ${fmt(TARGET_P95_MS)} ms | ${pass ? '✓' : '✗'} |
| of which signal recorded → delivered (the outbox; the rest is ingest, debounce and evaluation): p50 / p95 | ${ms(p(healthy.outbox, 50))} / ${ms(p(healthy.outbox, 95))} |
| with a dead endpoint (connection refused) and a hanging one (10 s timeouts) on the same rule: p50 / p95 / p99 | ${ms(p(broken.latencies, 50))} / ${ms(p(broken.latencies, 95))} / ${ms(p(broken.latencies, 99))} (${broken.latencies.length} / ${TRIALS} delivered) |
| of which signal recorded → delivered, with the broken endpoints: p50 / p95 | ${ms(p(broken.outbox, 50))} / ${ms(p(broken.outbox, 95))} |
| with the default pack's ${pack.length} rules switched on too (every incremental run evaluates them for the touched subjects): p50 / p95 / p99 | ${ms(p(withPack.latencies, 50))} / ${ms(p(withPack.latencies, 95))} / ${ms(p(withPack.latencies, 99))} (${withPack.latencies.length} / ${TRIALS} delivered) ${p(withPack.latencies, 95) <= TARGET_PACK_P95_MS ? '✓' : '✗'} (target p95 ≤ ${fmt(TARGET_PACK_P95_MS)} ms) |
| **p95 ratio with / without the broken endpoints**: end to end / the outbox part | **${ratio.toFixed(2)}** / **${(p(broken.outbox, 95) / p(healthy.outbox, 95)).toFixed(2)}** (the end-to-end figure also moves with evaluation time, which grows as the store fills) |
| **deliveries/s to a fast receiver** (${fmt(BURST)} signals fired by one batch; first to last delivery) | **${fmt(outboxRate)}** |
| baseline: plain signed POST loop from the bench process, ${CONCURRENCY} concurrent, same receiver | ${fmt(plainRate)} |
| **ratio outbox / plain loop** | **${(outboxRate / plainRate).toFixed(2)}** |
| burst: batch sent → last of ${fmt(BURST)} deliveries (ingest + evaluation + outbox) | ${ms(burstTotal)} |
| deliveries failing verification | ${unverified + fast.unverified} |
| store preloaded with (90 days of history, the per-day state rebuilt) | ${fmt(preloaded.events)} events, in ${ms(preloaded.ms)} |
| server peak RSS | ${peakRss} |
| 1-minute load average at start | ${load1.toFixed(2)} |

Each outbox delivery is recorded in ClickHouse before it is attempted and its outcome after (group-committed); the plain loop stores nothing.
`,
  )
} finally {
  if (loadProc && loadProc.exitCode === null) loadProc.kill('SIGKILL')
  if (server.exitCode === null) server.kill('SIGKILL')
  await Promise.all([trialRx.close(), fastRx.close(), hangRx.close()])
  rmSync(dataDir, { recursive: true, force: true })
}

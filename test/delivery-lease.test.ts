import { join } from 'node:path'
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Dispatcher } from '../src/delivery/dispatcher.js'
import { type LocalClickHouse, serveClickHouseHttp } from '../src/edge/local-clickhouse.js'
import { SignalBus } from '../src/signals.js'
import { type Child, freePort, spawnServer, waitReady } from './child-server.js'
import { fire, makeSignal, type Receiver, startReceiver } from './delivery-helpers.js'
import { until } from './poll.js'
import { ADMIN_TOKEN, tempDir, WRITE_KEY } from './harness.js'

// One sender per delivery attempt across every sender on one store (delivery_leases_v1): two
// dispatchers in this process share the embedded engine, and a child process (the real
// `npm start` entry) reaches the same engine over ClickHouse's HTTP interface. A receiver counts
// the requests per webhook-id.

let local: LocalClickHouse
const bus = new SignalBus()
const receivers: Receiver[] = []
const children: Child[] = []
beforeAll(async () => {
  local = await serveClickHouseHttp({ path: join(tempDir('signalbox-lease-'), 'clickhouse'), user: 'default', password: 'lease-test', database: 'default' })
})
afterAll(async () => {
  for (const c of children) c.proc.kill('SIGKILL')
  await Promise.all(receivers.map((r) => r.close()))
  await local?.close()
})

function dispatcher() {
  return new Dispatcher({
    store: local.store,
    bus,
    logger: pino({ level: 'silent' }),
    policy: { maxAttempts: 5, baseMs: 50, maxMs: 100 },
    timeoutMs: 1000,
    concurrency: 4,
    pollMs: 100,
    leaseMarginMs: 500,
    // The receivers listen on 127.0.0.1.
    allowPrivate: true,
  })
}

/** Requests per webhook-id. */
const perId = (rx: Receiver) => {
  const counts = new Map<string, number>()
  for (const r of rx.requests) counts.set(String(r.headers['webhook-id']), (counts.get(String(r.headers['webhook-id'])) ?? 0) + 1)
  return counts
}

describe('delivery leases', () => {
  it('two dispatchers on one store: each attempt is sent once (a 500 then a 200: two requests per webhook-id)', async () => {
    const firstSeen = new Set<string>()
    const rx = await startReceiver((_n, req) => {
      const id = String(req.headers['webhook-id'])
      if (firstSeen.has(id)) return { status: 200 }
      firstSeen.add(id)
      return { status: 500 }
    })
    receivers.push(rx)
    const [a, b] = [dispatcher(), dispatcher()]
    await Promise.all([a.start(), b.start()])
    try {
      const w = await a.webhooks.create({ url: rx.url, description: '', kinds: [], rule_ids: ['r-two'], format: 'json', enabled: true })
      a.webhookChanged(w)
      b.webhookChanged(w)
      const signals = Array.from({ length: 20 }, () => makeSignal({ rule_id: 'r-two' }))
      await fire(local.store, bus, ...signals)
      await until(async () => (await a.outbox.list(w.id, { limit: 100, status: 'delivered' })).data.length === 20, { what: '20 delivered', timeoutMs: 30_000 })
      const counts = perId(rx)
      expect(counts.size).toBe(20)
      expect([...counts.values()]).toEqual(Array(20).fill(2))
      const { data } = await a.outbox.list(w.id, { limit: 100 })
      for (const d of data) expect(d.attempts.map((x) => x.status_code)).toEqual([500, 200])
    } finally {
      await Promise.all([a.stop(), b.stop()])
    }
  })

  it('a sender killed mid-attempt: its lease expires and exactly one of the two others makes the attempt again', async () => {
    let hold = true
    const rx = await startReceiver(() => (hold ? { status: 200, after: new Promise(() => {}) } : { status: 200 }))
    receivers.push(rx)
    const port = await freePort()
    const child = spawnServer({
      PORT: String(port),
      HOST: '127.0.0.1',
      DATA_DIR: tempDir('signalbox-lease-child-'),
      CLICKHOUSE_URL: local.url,
      CLICKHOUSE_PASSWORD: 'lease-test',
      CLICKHOUSE_DATABASE: 'default',
      ADMIN_TOKEN,
      WRITE_KEYS: WRITE_KEY,
      LOG_LEVEL: 'silent',
      EVAL_INTERVAL_MS: '0',
      RULES_DEFAULT_PACK: 'false',
      WEBHOOK_POLL_MS: '100',
      WEBHOOK_TIMEOUT_MS: '1000',
      // CLICKHOUSE_URL turns private targets off by default; the receiver is on 127.0.0.1.
      WEBHOOK_ALLOW_PRIVATE: 'true',
    })
    children.push(child)
    await waitReady(child)
    const created = await fetch(`${child.url}/v1/webhooks`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ url: rx.url, rule_ids: ['r-kill'] }),
    })
    expect(created.status).toBe(201)
    const [signal] = [makeSignal({ rule_id: 'r-kill' })]
    await fire(local.store, bus, signal)
    // The child holds the attempt (the receiver never answers it); then it is killed.
    await until(() => rx.requests.length === 1, { what: "the child's attempt", timeoutMs: 20_000 })
    child.proc.kill('SIGKILL')
    await child.exited
    hold = false
    const [a, b] = [dispatcher(), dispatcher()]
    await Promise.all([a.start(), b.start()])
    try {
      const id = String(rx.requests[0]?.headers['webhook-id'])
      // The child's lease (its 1 s timeout + 5 s margin) ends; one of a and b takes the attempt.
      await until(async () => (await a.outbox.find(id))?.status === 'delivered', { what: 'the delivery taken over', timeoutMs: 30_000 })
      expect(perId(rx).get(id)).toBe(2)
      // The first stored row of each generation holds it (batch mode: losers' rows stay beside it).
      const leases = await local.store.query<{ attempt: number; generation: number; owner: string }>(
        `SELECT attempt, generation, argMin(owner, (toUInt64(splitByChar('_', _part)[2]), _part_offset)) AS owner
         FROM delivery_leases_v1 WHERE delivery_id = {id:String} GROUP BY attempt, generation ORDER BY generation`,
        { id },
      )
      expect(leases.map((l) => [Number(l.attempt), Number(l.generation)])).toEqual([
        [1, 0],
        [1, 1],
      ])
      expect([a.leases.owner, b.leases.owner]).toContain(leases[1]?.owner)
      expect([a.leases.owner, b.leases.owner]).not.toContain(leases[0]?.owner)
    } finally {
      await Promise.all([a.stop(), b.stop()])
    }
    expect(perId(rx).get(String(rx.requests[0]?.headers['webhook-id']))).toBe(2)
  })
})

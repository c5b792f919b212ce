import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadConfig } from '../src/config.js'
import { Dispatcher } from '../src/delivery/dispatcher.js'
import { SignalBus } from '../src/signals.js'
import { migrate } from '../src/store/migrate.js'
import { openStore } from '../src/store/node.js'
import type { Store } from '../src/store/store.js'
import { fire, makeSignal, type Receiver, startReceiver, verify } from './delivery-helpers.js'
import { until } from './poll.js'
import { tempDir } from './harness.js'

// The dispatcher on its own (a real embedded store, no HTTP server): what is hard to reach
// through the API, like an endpoint whose backlog is larger than what it holds in memory.

let store: Store
const bus = new SignalBus()
const receivers: Receiver[] = []
beforeAll(async () => {
  store = await openStore(loadConfig({ DATA_DIR: tempDir('signalbox-dispatcher-') }))
  await migrate(store)
})
afterAll(async () => {
  await Promise.all(receivers.map((r) => r.close()))
  await store?.close()
})

function dispatcher(opts: { maxQueued?: number } = {}) {
  return new Dispatcher({
    store,
    bus,
    logger: pino({ level: 'silent' }),
    policy: { maxAttempts: 50, baseMs: 10, maxMs: 50 },
    timeoutMs: 1000,
    concurrency: 2,
    pollMs: 100,
    maxQueued: opts.maxQueued,
    // The receivers listen on 127.0.0.1.
    allowPrivate: true,
  })
}

describe('Dispatcher', () => {
  it('delivers a backlog larger than an endpoint holds in memory, each once', async () => {
    let up = false
    const delivered: { id: string; signal: string }[] = []
    let secret = ''
    const rx = await startReceiver((_n, req) => {
      if (!up) return { status: 503 }
      delivered.push({ id: String(req.headers['webhook-id']), signal: (verify(req, secret) as { data: { id: string } }).data.id })
      return { status: 200 }
    })
    receivers.push(rx)
    const d = dispatcher({ maxQueued: 3 })
    await d.start()
    try {
      const w = await d.webhooks.create({ url: rx.url, description: '', kinds: [], rule_ids: ['r-backlog'], format: 'json', enabled: true })
      secret = w.secret
      d.webhookChanged(w)
      const signals = Array.from({ length: 12 }, () => makeSignal({ rule_id: 'r-backlog' }))
      await fire(store, bus, ...signals)
      await until(async () => (await d.outbox.list(w.id, { limit: 100 })).data.length === 12, { what: '12 recorded deliveries' })
      up = true
      await until(async () => (await d.outbox.list(w.id, { limit: 100, status: 'delivered' })).data.length === 12, { what: 'all 12 delivered' })
      expect(delivered.map((x) => x.signal).sort()).toEqual(signals.map((s) => s.id).sort())
      expect(new Set(delivered.map((x) => x.id)).size).toBe(12)
    } finally {
      await d.stop()
    }
  })

  it('a shutdown that begins during a scan, with an attempt in flight, ends: the attempt is recorded once, as interrupted', async () => {
    // The receiver never answers: the attempt is in flight when the shutdown aborts it.
    const rx = await startReceiver(() => ({ status: 200, after: new Promise(() => {}) }))
    receivers.push(rx)
    const d = dispatcher()
    await d.start()
    const w = await d.webhooks.create({ url: rx.url, description: '', kinds: [], rule_ids: ['r-stop'], format: 'json', enabled: true })
    d.webhookChanged(w)
    await fire(store, bus, makeSignal({ rule_id: 'r-stop' }))
    await until(() => rx.requests.length === 1, { what: 'the attempt in flight' })
    // A scan is reading the store when stop() aborts the attempt. The interrupted attempt is due
    // again at once; restarting it (the bug this guards) looped in microtasks and starved the scan.
    d.wake()
    await d.stop()
    const [delivery] = (await d.outbox.list(w.id, { limit: 10 })).data
    expect(delivery).toMatchObject({ status: 'retrying', last_error: 'interrupted by a shutdown' })
    expect(delivery?.attempts).toMatchObject([{ attempt: 1, error: 'interrupted by a shutdown' }])
    expect(rx.requests).toHaveLength(1)
  })
})

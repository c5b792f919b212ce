import type { LookupAddress } from 'node:dns'
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Dispatcher } from '../src/delivery/dispatcher.js'
import { guardedFetch } from '../src/delivery/guarded-fetch.js'
import { addressRefusal, urlRefusal } from '../src/delivery/targets.js'
import { fire, makeSignal, startReceiver } from './delivery-helpers.js'
import { until } from './poll.js'
import { startTestServer, type TestServer } from './harness.js'

// Webhook targets: link-local and cloud-metadata addresses never; private and loopback ranges only
// with WEBHOOK_ALLOW_PRIVATE (on by default with the embedded store); checked when an endpoint is
// made (a 400 on `url`) and again where each attempt connects, on what the name resolves to then.

describe('which addresses are refused', () => {
  it('link-local and metadata always; private and loopback unless allowed; public never', () => {
    for (const a of ['169.254.169.254', '169.254.0.1', 'fe80::1', '::ffff:169.254.169.254', 'fd00:ec2::254', '100.100.100.200', '224.0.0.1']) {
      expect(addressRefusal(a, true), a).toBeDefined()
    }
    for (const a of ['127.0.0.1', '10.1.2.3', '172.16.0.9', '192.168.1.1', '100.64.0.1', '::1', 'fc00::1', '0.0.0.0', '::ffff:10.0.0.1']) {
      expect(addressRefusal(a, false), a).toMatch(/WEBHOOK_ALLOW_PRIVATE is off/)
      expect(addressRefusal(a, true), a).toBeUndefined()
    }
    for (const a of ['8.8.8.8', '2606:4700:4700::1111', '93.184.216.34']) expect(addressRefusal(a, false), a).toBeUndefined()
  })

  it('URLs: metadata names, IP literals (IPv6 in brackets) and localhost, before any DNS', () => {
    expect(urlRefusal('http://metadata.google.internal/computeMetadata/v1/', true)).toMatch(/metadata/)
    expect(urlRefusal('http://METADATA.google.internal./x', true)).toMatch(/metadata/)
    expect(urlRefusal('http://169.254.169.254/latest/meta-data/', true)).toMatch(/link-local/)
    expect(urlRefusal('http://[fe80::1]:8080/hook', true)).toMatch(/link-local/)
    expect(urlRefusal('http://localhost:3000/hook', false)).toMatch(/loopback/)
    expect(urlRefusal('https://hooks.example.com/signalbox', false)).toBeUndefined()
  })
})

describe('the API refuses them when an endpoint is made, and each attempt where it connects', () => {
  let open: TestServer
  beforeAll(async () => {
    // The server's own dispatcher never reloads endpoints, so the one the send-time test makes
    // straight in the store is left to that test's dispatcher.
    open = await startTestServer({ WEBHOOK_POLL_MS: '600000', RULES_DEFAULT_PACK: 'false', EVAL_INTERVAL_MS: '0' })
  })
  afterAll(async () => {
    await open?.stop()
  })
  const create = (sb: TestServer, url: string) => sb.admin('/v1/webhooks', { method: 'POST', body: JSON.stringify({ url }) })

  it('embedded store (private allowed by default): metadata is a 400 on url, a loopback receiver is fine', async () => {
    const refused = await create(open, 'http://169.254.169.254/latest/meta-data/iam/')
    expect(refused.status).toBe(400)
    const { error } = (await refused.json()) as { error: { details: { path: string; message: string }[] } }
    expect(error.details).toEqual([{ path: 'url', message: expect.stringMatching(/link-local/) }])
    expect((await create(open, 'http://metadata.google.internal/')).status).toBe(400)
    expect((await create(open, 'http://127.0.0.1:9/hook')).status).toBe(201)
    const w = (await (await create(open, 'https://hooks.example.com/x')).json()) as { id: string }
    const patched = await open.admin(`/v1/webhooks/${w.id}`, { method: 'PATCH', body: JSON.stringify({ url: 'http://[fe80::1]/x' }) })
    expect(patched.status).toBe(400)
  })

  it('WEBHOOK_ALLOW_PRIVATE=false: loopback and private targets are a 400 too', async () => {
    // chDB is one engine per process: the same server, restarted with the setting.
    await open.restart({ WEBHOOK_ALLOW_PRIVATE: 'false' })
    try {
      for (const url of ['http://127.0.0.1:9/hook', 'http://10.0.0.5/hook', 'http://localhost/hook', 'http://[::1]/hook']) {
        const res = await create(open, url)
        expect(res.status, url).toBe(400)
      }
      expect((await create(open, 'https://hooks.example.com/x')).status).toBe(201)
    } finally {
      await open.restart()
    }
  })

  it('at send time, on what the name resolves to then: a name that resolved to the receiver, then to the metadata address, is refused at the next attempt (dead, not retried)', async () => {
    // Each answer closes its connection, so each attempt connects (and resolves) anew.
    const rx = await startReceiver(() => ({ status: 500, headers: { connection: 'close' } }))
    // DNS, as an attacker who controls the name would answer it: first the receiver, then metadata.
    let answers = 0
    const resolve = ((_host: string, _opts: unknown, cb: (err: null, a: LookupAddress[]) => void) => {
      cb(null, [{ address: answers++ === 0 ? '127.0.0.1' : '169.254.169.254', family: 4 }])
    }) as unknown as typeof import('node:dns').lookup
    const d = new Dispatcher({
      store: open.server.store,
      bus: open.server.bus,
      logger: pino({ level: 'silent' }),
      policy: { maxAttempts: 5, baseMs: 10, maxMs: 20 },
      timeoutMs: 2000,
      concurrency: 1,
      pollMs: 100,
      allowPrivate: true,
      fetch: guardedFetch(true, resolve),
    })
    try {
      await d.start()
      const w = await d.webhooks.create({ url: `http://rebind.example.test:${rx.port}/hook`, description: '', kinds: [], rule_ids: ['r-rebind'], format: 'json', enabled: true })
      d.webhookChanged(w)
      await fire(open.server.store, open.server.bus, makeSignal({ rule_id: 'r-rebind' }))
      const dead = await until(async () => (await d.outbox.list(w.id, { limit: 10, status: 'dead' })).data[0], { what: 'the delivery dead-lettered', timeoutMs: 20_000 })
      expect(dead.attempts.map((a) => a.status_code)).toEqual([500, null])
      expect(dead.last_error).toMatch(/refused: rebind\.example\.test resolves to 169\.254\.169\.254 is a link-local/)
      expect(rx.requests).toHaveLength(1)
    } finally {
      await d.stop()
      await rx.close()
    }
  })
})

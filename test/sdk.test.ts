import { Webhook } from 'standardwebhooks'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type SignalEvent, Signalbox, SubscriptionRefusedError, verifyWebhook, verifyWebhookRequest, WebhookVerificationError } from '../sdk/src/index.js'
import { signatureHeaders } from '../src/delivery/signing.js'
import { fire, freePort, makeSignal } from './delivery-helpers.js'
import { until } from './poll.js'
import { startTestServer, type TestServer, WRITE_KEY } from './harness.js'

const READ_TOKEN = 'read_token_for_the_sdk_000001'

let sb: TestServer
const clients: Signalbox[] = []
beforeAll(async () => {
  sb = await startTestServer({
    // A fixed port: the SDK keeps its host across the server's restart.
    PORT: String(await freePort()),
    RULES_DEFAULT_PACK: 'false',
    EVAL_INTERVAL_MS: '0',
    EVAL_ON_INGEST: 'false',
    READ_TOKENS: READ_TOKEN,
  })
})
afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()))
  await sb?.stop()
})

function client(opts: Partial<ConstructorParameters<typeof Signalbox>[0]> = {}) {
  const c = new Signalbox({ host: sb.url, writeKey: WRITE_KEY, readToken: READ_TOKEN, analytics: { flushAt: 100, flushInterval: 60_000 }, ...opts })
  clients.push(c)
  return c
}

describe('verifyWebhook', () => {
  const secret = 'whsec_' + Buffer.from('a secret of thirty-two bytes....').toString('base64')
  const event = { type: 'signal.fired', timestamp: '2026-07-01T12:00:00.000Z', data: makeSignal() }
  const body = JSON.stringify(event)
  const headers = signatureHeaders({ id: 'dlv_01J2ZK3QX0A1B2C3D4E5F6G7H8', at: Date.now(), body, secrets: [secret] })

  it('returns the typed signal event for a good signature (string or Buffer body, plain or Headers headers)', async () => {
    const got = verifyWebhook(body, headers, secret)
    expect(got).toEqual(event)
    expect(got.data.reasons[0]?.measured).toBe(2412)
    expect(verifyWebhook(Buffer.from(body), new Headers(headers), secret)).toEqual(event)
    const upper = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toUpperCase(), [v]]))
    expect(verifyWebhook(body, upper, secret)).toEqual(event)
    const req = new Request('http://x/hook', { method: 'POST', body, headers })
    expect(await verifyWebhookRequest(req, secret)).toEqual(event)
  })

  it('throws on a tampered body, another secret, a stale timestamp, or a signed payload that is not a signal event', () => {
    expect(() => verifyWebhook(body.replace('acme', 'acmf'), headers, secret)).toThrow(WebhookVerificationError)
    expect(() => verifyWebhook(body, headers, 'whsec_' + Buffer.from('another secret, also 32 bytes..').toString('base64'))).toThrow(WebhookVerificationError)
    const stale = signatureHeaders({ id: 'dlv_x', at: Date.now() - 3_600_000, body, secrets: [secret] })
    expect(() => verifyWebhook(body, stale, secret)).toThrow(/too old/)
    expect(() => verifyWebhook(body, {}, secret)).toThrow(WebhookVerificationError)
    const slack = JSON.stringify({ text: 'PQL fired', blocks: [] })
    const slackHeaders = signatureHeaders({ id: 'dlv_y', at: Date.now(), body: slack, secrets: [secret] })
    expect(new Webhook(secret).verify(slack, slackHeaders)).toEqual({ text: 'PQL fired', blocks: [] })
    expect(() => verifyWebhook(slack, slackHeaders, secret)).toThrow('the payload is not a signal event')
  })
})

describe('Signalbox', () => {
  it('sends track, identify, group, page and alias through the Segment client, flushed on close', async () => {
    const before = (await sb.stats()).events
    const c = new Signalbox({ host: sb.url, writeKey: WRITE_KEY, analytics: { flushAt: 100, flushInterval: 60_000 } })
    c.identify({ userId: 'sdk_u1', traits: { email: 'ada@acme.io' } })
    c.group({ userId: 'sdk_u1', groupId: 'sdk_acme', traits: { plan: 'free' } })
    c.track({ userId: 'sdk_u1', event: 'Message Sent', context: { groupId: 'sdk_acme' } })
    c.page({ userId: 'sdk_u1', name: 'Pricing', properties: { path: '/pricing' } })
    c.alias({ previousId: 'anon_1', userId: 'sdk_u1' })
    // Nothing is sent before the flush (flushAt 100, a minute's interval)…
    expect((await sb.stats()).events).toBe(before)
    await c.close()
    // …and everything once closed.
    const stats = await sb.stats()
    expect(stats.events - before).toBe(5)
    const rows = await sb.server.store.query<{ type: string; event: string }>("SELECT type, event FROM events_v1 WHERE user_id = 'sdk_u1' ORDER BY type")
    expect(rows.map((r) => r.type)).toEqual(['alias', 'group', 'identify', 'page', 'track'])
  })

  it('subscribe: receives live signals of the kinds asked for, and ends on unsubscribe', async () => {
    const c = client()
    const got: SignalEvent[] = []
    const unsubscribe = c.subscribe({ kinds: ['mql'] }, (e) => {
      got.push(e)
    })
    // The subscription is live once a signal fired after it arrives; earlier ones are not replayed.
    const probe = makeSignal({ kind: 'mql' })
    const probed = () => got.some((e) => e.data.id === probe.id)
    // Fired again only if a probe has not arrived within 2 s (the subscription was not live yet), so
    // no late second probe lands among the signals counted below.
    await until(async () => {
      if (probed()) return true
      await fire(sb.server.store, sb.server.bus, probe)
      return until(probed, { timeoutMs: 2000 }).catch(() => false)
    })
    got.length = 0
    const events = await fire(sb.server.store, sb.server.bus, makeSignal({ kind: 'pql' }), makeSignal({ kind: 'mql' }))
    await until(() => got.length >= 1)
    expect(got).toEqual([events[1]])
    unsubscribe()
    await fire(sb.server.store, sb.server.bus, makeSignal({ kind: 'mql' }))
    const marker = client()
    const seen: SignalEvent[] = []
    const stop = marker.subscribe({ kinds: ['mql'], lastEventId: events[1]?.id }, (e) => {
      seen.push(e)
    })
    await until(() => seen.length >= 1)
    stop()
    expect(got).toEqual([events[1]])
  })

  it('subscribe: reconnects after the server restarts and resumes without losing or repeating a signal', async () => {
    const c = client({ readToken: READ_TOKEN })
    const got: string[] = []
    const errors: Error[] = []
    c.subscribe({ kinds: ['expansion'], minRetryMs: 50, onError: (e) => errors.push(e) }, (e) => {
      got.push(e.id)
    })
    const first: string[] = []
    await until(async () => {
      const [e] = await fire(sb.server.store, sb.server.bus, makeSignal({ kind: 'expansion' }))
      first.push(e?.id as string)
      return got.length > 0
    })
    await until(() => got.length === first.length)
    await sb.restart()
    // Fired right after the restart, before the client is back: replayed on resume.
    const after = await fire(sb.server.store, sb.server.bus, makeSignal({ kind: 'expansion' }), makeSignal({ kind: 'expansion' }))
    await until(() => got.length === first.length + 2, { what: 'the two signals fired while disconnected' })
    const live = await fire(sb.server.store, sb.server.bus, makeSignal({ kind: 'expansion' }))
    await until(() => got.length === first.length + 3)
    expect(got.slice(-3)).toEqual([...after, ...live].map((e) => e.id))
    expect(new Set(got).size).toBe(got.length)
    // The client saw the disconnect (the server ended the stream when shutting down).
    expect(errors.length).toBeGreaterThan(0)
  })

  it('subscribe: a write key is refused, and the client stops instead of retrying', async () => {
    const c = new Signalbox({ host: sb.url, readToken: WRITE_KEY })
    const errors: Error[] = []
    c.subscribe({ onError: (e) => errors.push(e) }, () => {})
    await until(() => errors.length > 0)
    expect(errors[0]).toBeInstanceOf(SubscriptionRefusedError)
    expect((errors[0] as SubscriptionRefusedError).status).toBe(403)
    expect(() => new Signalbox({ host: sb.url }).subscribe({}, () => {})).toThrow(/readToken/)
    expect(() => new Signalbox({ host: sb.url }).track({ userId: 'u', event: 'e' })).toThrow(/writeKey/)
    await c.close()
    expect(errors).toHaveLength(1)
  })
})

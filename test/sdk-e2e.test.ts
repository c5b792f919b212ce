import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type SignalEvent, Signalbox, verifyWebhook } from '../sdk/src/index.js'
import { type Receiver, startReceiver } from './delivery-helpers.js'
import { until } from './poll.js'
import { startTestServer, type TestServer, WRITE_KEY } from './harness.js'

// The whole path, as a customer runs it: events sent with the SDK are stored, the evaluator (run
// by ingestion) fires a rule, the signal reaches the SDK's subscription and a signed webhook that
// the SDK's verifyWebhook accepts.

const READ_TOKEN = 'read_token_for_the_e2e_test_01'

let sb: TestServer
let rx: Receiver
beforeAll(async () => {
  sb = await startTestServer({
    RULES_DEFAULT_PACK: 'false',
    EVAL_INTERVAL_MS: '0',
    EVAL_ON_INGEST: 'true',
    EVAL_DEBOUNCE_MS: '50',
    READ_TOKENS: READ_TOKEN,
  })
  rx = await startReceiver()
})
afterAll(async () => {
  await rx?.close()
  await sb?.stop()
})

describe('SDK end to end', () => {
  it('events sent through the SDK fire a rule: its subscribe handler gets the signal, and a webhook its verifyWebhook accepts', async () => {
    const rule = {
      id: 'e2e-active-team',
      kind: 'pql',
      subject: 'account',
      description: 'Free workspace sending messages',
      where: [{ trait: 'plan', op: 'eq', value: 'free' }],
      when: { all: [{ metric: 'count', event: 'Message Sent', window: '30d', op: 'gte', value: 3 }] },
    }
    expect((await sb.admin(`/v1/rules/${rule.id}`, { method: 'PUT', body: JSON.stringify(rule) })).status).toBeLessThan(300)
    const hook = await sb.admin('/v1/webhooks', { method: 'POST', body: JSON.stringify({ url: rx.url, kinds: ['pql'] }) })
    const { secret } = (await hook.json()) as { secret: string }

    const sdk = new Signalbox({ host: sb.url, writeKey: WRITE_KEY, readToken: READ_TOKEN, analytics: { flushAt: 1 } })
    const received: SignalEvent[] = []
    let open = false
    const unsubscribe = sdk.subscribe({ kinds: ['pql'], onOpen: () => (open = true) }, (e) => {
      received.push(e)
    })
    try {
      sdk.group({ userId: 'e2e_u1', groupId: 'e2e_acme', traits: { plan: 'free', name: 'Acme' } })
      for (let i = 0; i < 2; i++) sdk.track({ userId: 'e2e_u1', event: 'Message Sent', context: { groupId: 'e2e_acme' } })
      await sdk.flush()
      await until(() => open, { what: 'the subscription to connect' })
      // Below the threshold nothing fires.
      await until(async () => (await sb.stats()).events >= 3)
      expect(received).toHaveLength(0)

      sdk.track({ userId: 'e2e_u1', event: 'Message Sent', context: { groupId: 'e2e_acme' } })
      await sdk.flush()
      await until(() => received.length >= 1 && rx.requests.length >= 1, { what: 'the signal on the stream and by webhook', timeoutMs: 20_000 })

      const streamed = received[0] as SignalEvent
      expect(streamed.type).toBe('signal.fired')
      expect(streamed.data).toMatchObject({ rule_id: 'e2e-active-team', kind: 'pql', subject: { type: 'account', id: 'e2e_acme' }, status: 'open' })
      expect(streamed.data.reasons.some((r) => r.passed && r.measured === 3)).toBe(true)

      const delivery = rx.requests[0]
      if (!delivery) throw new Error('unreachable')
      const verified = verifyWebhook(delivery.body, delivery.headers, secret)
      expect(verified).toEqual({ type: streamed.type, timestamp: streamed.timestamp, data: streamed.data })
      expect(() => verifyWebhook(delivery.body.replace('e2e_acme', 'e2e_acmf'), delivery.headers, secret)).toThrow()
    } finally {
      unsubscribe()
      await sdk.close()
    }
  })
})

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Delivery } from '../src/delivery/outbox.js'
import type { DeliveryList } from '../src/routes/webhooks.js'
import { fire, freePort, makeSignal, type Receiver, startReceiver, verify } from './delivery-helpers.js'
import { until } from './poll.js'
import { startTestServer, type TestServer } from './harness.js'

let sb: TestServer
const receivers: Receiver[] = []
beforeAll(async () => {
  sb = await startTestServer({
    RULES_DEFAULT_PACK: 'false',
    EVAL_INTERVAL_MS: '0',
    EVAL_ON_INGEST: 'false',
    // Enough attempts, a few hundred ms apart, to outlast a restart.
    WEBHOOK_BACKOFF_BASE_MS: '100',
    WEBHOOK_BACKOFF_MAX_MS: '400',
    WEBHOOK_MAX_ATTEMPTS: '100',
  })
})
afterAll(async () => {
  await Promise.all(receivers.map((r) => r.close()))
  await sb?.stop()
})

async function webhook(url: string, ruleId: string) {
  const res = await sb.admin('/v1/webhooks', { method: 'POST', body: JSON.stringify({ url, rule_ids: [ruleId] }) })
  expect(res.status).toBe(201)
  return (await res.json()) as { id: string; secret: string }
}

async function deliveries(webhookId: string): Promise<Delivery[]> {
  return ((await (await sb.admin(`/v1/webhooks/${webhookId}/deliveries`)).json()) as DeliveryList).data
}

describe('the outbox across restarts', () => {
  it('a receiver that is down while the service restarts gets the delivery after the restart', async () => {
    const port = await freePort()
    const w = await webhook(`http://127.0.0.1:${port}/hook`, 'r-restart')
    const signal = makeSignal({ rule_id: 'r-restart' })
    await fire(sb.server.store, sb.server.bus, signal)
    const failing = await until(async () => (await deliveries(w.id)).find((d) => d.attempt_count >= 2), { what: 'two failed attempts' })
    expect(failing.status).toBe('retrying')
    expect(failing.attempts[0]?.error).toMatch(/ECONNREFUSED/)
    expect(failing.attempts[0]?.status_code).toBeNull()

    // Stopped and started again while the receiver is still down: the row says what is left to do.
    await sb.restart()
    const rx = await startReceiver(undefined, port)
    receivers.push(rx)
    const [r] = await until(() => (rx.requests.length ? rx.requests : undefined), { what: 'the delivery after the restart' })
    if (!r) throw new Error('unreachable')
    expect(r.headers['webhook-id']).toBe(failing.id)
    expect(verify(r, w.secret)).toMatchObject({ type: 'signal.fired', data: { id: signal.id } })
    const done = await until(async () => (await deliveries(w.id)).find((d) => d.status === 'delivered'))
    expect(done.attempt_count).toBeGreaterThan(failing.attempt_count)
    expect(done.attempts.at(-1)?.status_code).toBe(200)
    expect(done.attempts.slice(0, -1).every((a) => a.status_code === null)).toBe(true)
    expect(rx.requests).toHaveLength(1)
  })

  it('re-reading the log after a crash (cursor lost) re-creates no delivery and sends nothing twice', async () => {
    const rx = await startReceiver()
    receivers.push(rx)
    const w = await webhook(rx.url, 'r-crash')
    const first = makeSignal({ rule_id: 'r-crash' })
    await fire(sb.server.store, sb.server.bus, first)
    await until(async () => (await deliveries(w.id)).find((d) => d.status === 'delivered'))
    // As if the process had died after recording deliveries but before saving its cursor: the
    // cursor is reset (a higher version), and the next start re-reads the log from the beginning.
    await sb.server.store.insert('webhook_outbox_cursor_v1', [{ name: 'webhooks', event_id: '', version: Date.now() * 1000 + 999_999 }])
    await sb.restart()
    const second = makeSignal({ rule_id: 'r-crash' })
    await fire(sb.server.store, sb.server.bus, second)
    await until(() => rx.requests.length >= 2, { what: 'the second delivery' })
    // Give a third (duplicate) delivery every chance to show up: wait for the outbox to have scanned past it.
    await until(async () => (await deliveries(w.id)).filter((d) => d.status === 'delivered').length === 2)
    const ids = rx.requests.map((r) => (JSON.parse(r.body) as { data: { id: string } }).data.id)
    expect(ids).toEqual([first.id, second.id])
    expect(await deliveries(w.id)).toHaveLength(2)
  })
})

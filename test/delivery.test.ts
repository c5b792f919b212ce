import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Delivery } from '../src/delivery/outbox.js'
import type { DeliveryList } from '../src/routes/webhooks.js'
import { fire, freePort, makeSignal, type Receiver, type Reply, startReceiver, verify } from './delivery-helpers.js'
import { until } from './poll.js'
import { startTestServer, type TestServer } from './harness.js'

const TIMEOUT_MS = 300
const MAX_ATTEMPTS = 5

let sb: TestServer
const receivers: Receiver[] = []
beforeAll(async () => {
  sb = await startTestServer({
    RULES_DEFAULT_PACK: 'false',
    EVAL_INTERVAL_MS: '0',
    EVAL_ON_INGEST: 'false',
    // Tiny backoffs keep the retry tests fast; the schedule itself is unit-tested with the defaults.
    WEBHOOK_BACKOFF_BASE_MS: '20',
    WEBHOOK_BACKOFF_MAX_MS: '100',
    WEBHOOK_MAX_ATTEMPTS: String(MAX_ATTEMPTS),
    WEBHOOK_TIMEOUT_MS: String(TIMEOUT_MS),
    WEBHOOK_CONCURRENCY: '4',
  })
})
afterAll(async () => {
  await Promise.all(receivers.map((r) => r.close()))
  await sb?.stop()
})

async function receiver(reply?: (n: number) => Reply) {
  const r = await startReceiver(reply)
  receivers.push(r)
  return r
}

async function webhook(url: string, ruleId: string) {
  const res = await sb.admin('/v1/webhooks', { method: 'POST', body: JSON.stringify({ url, rule_ids: [ruleId] }) })
  expect(res.status).toBe(201)
  return (await res.json()) as { id: string; secret: string }
}

async function deliveries(webhookId: string, query = ''): Promise<Delivery[]> {
  const res = await sb.admin(`/v1/webhooks/${webhookId}/deliveries${query}`)
  expect(res.status).toBe(200)
  return ((await res.json()) as DeliveryList).data
}

/** Wait until the endpoint's only delivery reaches a status. */
async function settled(webhookId: string, status: Delivery['status'], timeoutMs = 15_000): Promise<Delivery> {
  return until(async () => (await deliveries(webhookId)).find((d) => d.status === status), { timeoutMs, what: `a ${status} delivery` })
}

describe('retries', () => {
  it('a receiver that answers 500 three times, then 200: delivered once, every attempt with the same webhook-id', async () => {
    const rx = await receiver((n) => (n <= 3 ? { status: 500, body: 'boom' } : { status: 200 }))
    const w = await webhook(rx.url, 'r-500')
    await fire(sb.server.store, sb.server.bus, makeSignal({ rule_id: 'r-500' }))
    const d = await settled(w.id, 'delivered')
    expect(rx.requests).toHaveLength(4)
    expect(new Set(rx.requests.map((r) => r.headers['webhook-id']))).toEqual(new Set([d.id]))
    for (const r of rx.requests) expect(verify(r, w.secret)).toMatchObject({ type: 'signal.fired' })
    expect(d.attempt_count).toBe(4)
    expect(d.attempts.map((a) => [a.attempt, a.status_code])).toEqual([
      [1, 500],
      [2, 500],
      [3, 500],
      [4, 200],
    ])
    expect(d.attempts[0]).toMatchObject({ error: 'the endpoint answered 500', response: 'boom' })
    // Each retry waited at least the backoff (base 20 ms, -20 % jitter).
    for (let i = 1; i < rx.requests.length; i++) {
      expect((rx.requests[i]?.at ?? 0) - (rx.requests[i - 1]?.at ?? 0)).toBeGreaterThanOrEqual(15)
    }
  })

  it('honours Retry-After on a 429', async () => {
    const rx = await receiver((n) => (n === 1 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 204 }))
    const w = await webhook(rx.url, 'r-429')
    await fire(sb.server.store, sb.server.bus, makeSignal({ rule_id: 'r-429' }))
    const d = await settled(w.id, 'delivered')
    expect(d.attempts.map((a) => a.status_code)).toEqual([429, 204])
    // The backoff alone would have waited ≤ 24 ms.
    expect((rx.requests[1]?.at ?? 0) - (rx.requests[0]?.at ?? 0)).toBeGreaterThanOrEqual(950)
  })

  it('a receiver that does not answer in time: the attempt times out and is retried', async () => {
    const rx = await receiver((n) => (n === 1 ? { status: 200, delayMs: TIMEOUT_MS * 5 } : { status: 200 }))
    const w = await webhook(rx.url, 'r-timeout')
    await fire(sb.server.store, sb.server.bus, makeSignal({ rule_id: 'r-timeout' }))
    const d = await settled(w.id, 'delivered')
    expect(d.attempts).toHaveLength(2)
    expect(d.attempts[0]).toMatchObject({ status_code: null, error: `no answer within ${TIMEOUT_MS} ms (timeout)` })
    expect(d.attempts[0]?.duration_ms).toBeGreaterThanOrEqual(TIMEOUT_MS - 5)
    expect(d.attempts[0]?.duration_ms).toBeLessThan(TIMEOUT_MS * 5)
    expect(d.attempts[1]?.status_code).toBe(200)
    expect(rx.requests[0]?.headers['webhook-id']).toBe(rx.requests[1]?.headers['webhook-id'])
  })

  it('does not retry a 4xx that will not change (410), and dead-letters it at once', async () => {
    const rx = await receiver(() => ({ status: 410, body: 'gone' }))
    const w = await webhook(rx.url, 'r-410')
    await fire(sb.server.store, sb.server.bus, makeSignal({ rule_id: 'r-410' }))
    const d = await settled(w.id, 'dead')
    expect(rx.requests).toHaveLength(1)
    expect(d).toMatchObject({ attempt_count: 1, last_status_code: 410, last_error: 'the endpoint answered 410; not retried', next_attempt_at: null })
  })

  it('dead-letters after the last attempt; a manual retry then delivers it with the same webhook-id', async () => {
    let up = false
    const rx = await receiver(() => (up ? { status: 200 } : { status: 503 }))
    const w = await webhook(rx.url, 'r-dead')
    await fire(sb.server.store, sb.server.bus, makeSignal({ rule_id: 'r-dead' }))
    const dead = await settled(w.id, 'dead')
    expect(rx.requests).toHaveLength(MAX_ATTEMPTS)
    expect(dead.attempt_count).toBe(MAX_ATTEMPTS)
    expect(dead.last_error).toBe(`the endpoint answered 503; dead-lettered after ${MAX_ATTEMPTS} attempts`)
    expect(await deliveries(w.id, '?status=dead')).toHaveLength(1)
    expect(await deliveries(w.id, '?status=delivered')).toHaveLength(0)

    up = true
    const retry = await sb.admin(`/v1/deliveries/${dead.id}/retry`, { method: 'POST' })
    expect(retry.status).toBe(202)
    expect(((await retry.json()) as Delivery).status).toBe('pending')
    const delivered = await settled(w.id, 'delivered')
    expect(delivered.id).toBe(dead.id)
    expect(delivered.attempt_count).toBe(MAX_ATTEMPTS + 1)
    expect(delivered.attempts.at(-1)).toMatchObject({ attempt: MAX_ATTEMPTS + 1, status_code: 200 })
    expect(rx.requests).toHaveLength(MAX_ATTEMPTS + 1)
    expect(new Set(rx.requests.map((r) => r.headers['webhook-id'])).size).toBe(1)
    expect(verify(rx.requests.at(-1) as (typeof rx.requests)[number], w.secret)).toMatchObject({ type: 'signal.fired' })

    // A delivered one can be replayed too; an unknown one is a 404.
    expect((await sb.admin(`/v1/deliveries/${dead.id}/retry`, { method: 'POST' })).status).toBe(202)
    await until(() => rx.requests.length === MAX_ATTEMPTS + 2)
    expect((await sb.admin('/v1/deliveries/dlv_01J00000000000000000000000/retry', { method: 'POST' })).status).toBe(404)
  })

  it('refuses to replay a delivery that is still being retried', async () => {
    const rx = await receiver(() => ({ status: 200, delayMs: TIMEOUT_MS * 3 }))
    const w = await webhook(rx.url, 'r-busy')
    await fire(sb.server.store, sb.server.bus, makeSignal({ rule_id: 'r-busy' }))
    const d = await until(async () => (await deliveries(w.id)).find((x) => x.status === 'retrying'))
    const res = await sb.admin(`/v1/deliveries/${d.id}/retry`, { method: 'POST' })
    expect(res.status).toBe(409)
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/is already retrying/)
  })
})

describe('the outbox', () => {
  it('records a delivery before attempting it', async () => {
    const seen: { status: string; attempts: number }[][] = []
    let w: { id: string } | undefined
    const rx = await receiver((_n) => {
      // While the request is held, the delivery row must already be in the store.
      const check = sb.server.store
        .query<{ status: string; attempts: number }>('SELECT status, attempts FROM webhook_deliveries_v1 FINAL WHERE webhook_id = {w:String}', { w: w?.id ?? '' })
        .then((rows) => seen.push(rows))
      return { status: 200, after: check }
    })
    w = await webhook(rx.url, 'r-before')
    await fire(sb.server.store, sb.server.bus, makeSignal({ rule_id: 'r-before' }))
    await settled(w.id, 'delivered')
    expect(seen).toEqual([[{ status: 'pending', attempts: 0 }]])
  })

  it('one slow and one dead endpoint do not delay the others', async () => {
    const slow = await receiver(() => ({ status: 200, delayMs: TIMEOUT_MS * 4 }))
    const dead = `http://127.0.0.1:${await freePort()}/hook`
    const fast = await receiver()
    const ws = await webhook(slow.url, 'r-iso')
    await webhook(dead, 'r-iso')
    await webhook(fast.url, 'r-iso')
    const n = 40
    await fire(sb.server.store, sb.server.bus, ...Array.from({ length: n }, () => makeSignal({ rule_id: 'r-iso' })))
    await until(() => fast.requests.length === n, { what: 'the fast endpoint to have every delivery' })
    // The slow endpoint takes 4 attempts at a time, each cut at 300 ms: behind one shared queue the
    // fast endpoint's last delivery would have waited for ~10 of those rounds.
    expect(slow.requests.length).toBeLessThan(n / 2)
    const list = await deliveries(ws.id, '?limit=100')
    expect(list).toHaveLength(n)
    expect(list.filter((d) => d.status === 'delivered')).toHaveLength(0)
  })
})

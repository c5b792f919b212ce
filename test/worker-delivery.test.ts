import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Webhook } from 'standardwebhooks'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type ClickHouseHttp, startClickHouseHttp, startTestWorker, type TestWorker } from './worker-harness.js'
import { until } from './poll.js'

// Webhooks on a Workers-only deployment: the Cron Trigger evaluates the rules and queues one
// message per delivery on the delivery queue; its consumer sends the signed POST. A real local
// receiver verifies every request with `standardwebhooks`.

type Received = { path: string; id: string; body: string; verified: boolean }
const received: Received[] = []
/** Per path: the statuses to answer, in order (then 200). */
const script = new Map<string, number[]>()
const secrets = new Map<string, string>()
let receiver: Server
let receiverUrl = ''

const readBody = (req: IncomingMessage) =>
  new Promise<string>((resolve) => {
    let s = ''
    req.on('data', (c) => (s += c))
    req.on('end', () => resolve(s))
  })

let ch: ClickHouseHttp
let w: TestWorker
beforeAll(async () => {
  receiver = createServer(async (req, res) => {
    const path = req.url ?? ''
    const body = await readBody(req)
    let verified = false
    try {
      new Webhook(secrets.get(path) as string).verify(body, req.headers as Record<string, string>)
      verified = true
    } catch {}
    received.push({ path, id: String(req.headers['webhook-id']), body, verified })
    const status = script.get(path)?.shift() ?? 200
    res.writeHead(status).end(status < 300 ? 'ok' : 'failing')
  })
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r))
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`
  ch = await startClickHouseHttp()
  // Three attempts, backoff of 1 ms (a queue retry without delay): a dead letter in seconds.
  w = await startTestWorker({ clickhouse: ch, vars: { WEBHOOK_MAX_ATTEMPTS: '3', WEBHOOK_BACKOFF_BASE_MS: '1', WEBHOOK_BACKOFF_MAX_MS: '1', WEBHOOK_TIMEOUT_MS: '5000' } })
}, 60_000)
afterAll(async () => {
  await w?.dispose()
  await ch?.close()
  await new Promise((r) => receiver?.close(r))
})

const createWebhook = async (path: string, extra: Record<string, unknown> = {}) => {
  const res = await w.admin('/v1/webhooks', { method: 'POST', body: JSON.stringify({ url: `${receiverUrl}${path}`, rule_ids: ['edge-hook'], ...extra }) })
  expect(res.status).toBe(201)
  const hook = (await res.json()) as { id: string; secret: string }
  secrets.set(path, hook.secret)
  return hook
}
type DeliveryView = { id: string; status: string; attempt_count: number; last_status_code: number | null }
const deliveries = async (webhook: string) => ((await (await w.admin(`/v1/webhooks/${webhook}/deliveries`)).json()) as { data: DeliveryView[] }).data
const settled = (webhook: string, status: string) =>
  until(async () => {
    const [d, ...rest] = await deliveries(webhook)
    return d && rest.length === 0 && d.status === status ? d : undefined
  }, { what: `a ${status} delivery of ${webhook}`, timeoutMs: 30_000 })
const at = (path: string) => received.filter((r) => r.path === path)

describe('webhook delivery on the edge', () => {
  it('a signal fired by the Cron Trigger is delivered signed; retried with the same webhook-id; dead after the last attempt; replayable', async () => {
    const ok = await createWebhook('/ok')
    const flaky = await createWebhook('/flaky')
    const dead = await createWebhook('/dead')
    const slack = await createWebhook('/slack', { format: 'slack' })
    script.set('/flaky', [500, 500])
    script.set('/dead', [500, 503, 500])

    const batch = [0, 1].map((i) => ({ type: 'track', messageId: `hook-${Date.now()}-${i}`, userId: 'u-hook', event: 'Hook Used', context: { groupId: 'acct-hook' } }))
    expect((await w.post('/v1/batch', { batch })).status).toBe(200)
    await until(async () => {
      const [r] = await ch.store.query<{ n: number }>("SELECT count() AS n FROM events_v1 WHERE event = 'Hook Used'")
      return Number(r?.n) === 2
    }, { what: 'the events to be stored', timeoutMs: 20_000 })
    const rule = { id: 'edge-hook', kind: 'pql', subject: 'account', when: { all: [{ metric: 'count', event: 'Hook Used', window: '7d', op: 'gte', value: 2 }] } }
    expect((await w.admin('/v1/rules/edge-hook', { method: 'PUT', body: JSON.stringify(rule) })).status).toBeLessThan(300)

    expect((await fetch(`${w.url}/cdn-cgi/handler/scheduled?cron=*+*+*+*+*`)).status).toBe(200)

    const good = await settled(ok.id, 'delivered')
    expect(good.attempt_count).toBe(1)
    expect(at('/ok')).toHaveLength(1)
    expect(at('/ok')[0]).toMatchObject({ id: good.id, verified: true })
    const payload = JSON.parse(at('/ok')[0]?.body as string)
    expect(payload).toMatchObject({ type: 'signal.fired', data: { rule_id: 'edge-hook', subject: { type: 'account', id: 'acct-hook' } } })

    const slackDone = await settled(slack.id, 'delivered')
    expect(at('/slack')[0]).toMatchObject({ id: slackDone.id, verified: true })
    expect(JSON.parse(at('/slack')[0]?.body as string)).toHaveProperty('blocks')

    const retried = await settled(flaky.id, 'delivered')
    expect(retried.attempt_count).toBe(3)
    expect(at('/flaky').map((r) => r.id)).toEqual([retried.id, retried.id, retried.id])
    expect(at('/flaky').every((r) => r.verified)).toBe(true)

    const gone = await settled(dead.id, 'dead')
    expect(gone).toMatchObject({ attempt_count: 3, last_status_code: 500 })
    expect(at('/dead')).toHaveLength(3)

    // A second run finds nothing new: no delivery is recorded or sent twice.
    expect((await fetch(`${w.url}/cdn-cgi/handler/scheduled?cron=*+*+*+*+*`)).status).toBe(200)
    expect(await deliveries(ok.id)).toHaveLength(1)

    // A replay goes straight back to the delivery queue, with the same webhook-id.
    const replay = await w.admin(`/v1/deliveries/${gone.id}/retry`, { method: 'POST' })
    expect(replay.status).toBe(202)
    const revived = await settled(dead.id, 'delivered')
    expect(revived.attempt_count).toBe(4)
    expect(at('/dead').map((r) => r.id)).toEqual([gone.id, gone.id, gone.id, gone.id])
    expect(at('/ok')).toHaveLength(1)
  }, 90_000)
})

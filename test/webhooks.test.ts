import { WebhookVerificationError } from 'standardwebhooks'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { DeliveryList } from '../src/routes/webhooks.js'
import { fire, makeSignal, type Receiver, startReceiver, verify } from './delivery-helpers.js'
import { until } from './poll.js'
import { ADMIN_TOKEN, startTestServer, type TestServer, WRITE_KEY } from './harness.js'

let sb: TestServer
let rx: Receiver
beforeAll(async () => {
  sb = await startTestServer({
    RULES_DEFAULT_PACK: 'false',
    EVAL_INTERVAL_MS: '0',
    EVAL_ON_INGEST: 'false',
    PUBLIC_URL: 'https://signals.example.com',
    WEBHOOK_BACKOFF_BASE_MS: '20',
    WEBHOOK_BACKOFF_MAX_MS: '200',
  })
  rx = await startReceiver()
})
afterAll(async () => {
  await rx?.close()
  await sb?.stop()
})

type Created = { id: string; secret: string; url: string; kinds: string[]; rule_ids: string[]; format: string; enabled: boolean }

async function createWebhook(body: Record<string, unknown>): Promise<Created> {
  const res = await sb.admin('/v1/webhooks', { method: 'POST', body: JSON.stringify(body) })
  expect(res.status).toBe(201)
  return (await res.json()) as Created
}

/** Requests the shared receiver got for one rule (each test uses its own rule id). */
const got = (ruleId: string) => rx.requests.filter((r) => (JSON.parse(r.body) as { data?: { rule_id?: string } }).data?.rule_id === ruleId)

describe('webhook endpoints API', () => {
  it('creates, lists, reads, changes and deletes an endpoint; the secret is shown on create only', async () => {
    const w = await createWebhook({ url: 'https://hooks.example.com/signals', kinds: ['pql', 'mql'], description: 'sales' })
    expect(w.id).toMatch(/^wh_[0-9A-HJKMNP-TV-Z]{26}$/)
    expect(w.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/)
    expect(w).toMatchObject({ url: 'https://hooks.example.com/signals', kinds: ['pql', 'mql'], rule_ids: [], format: 'json', enabled: true })

    const list = (await (await sb.admin('/v1/webhooks')).json()) as { data: Record<string, unknown>[] }
    const listed = list.data.find((x) => x.id === w.id)
    expect(listed).toMatchObject({ id: w.id, description: 'sales' })
    expect(listed).not.toHaveProperty('secret')

    const one = await sb.admin(`/v1/webhooks/${w.id}`)
    expect(one.status).toBe(200)
    expect(await one.json()).not.toHaveProperty('secret')

    const patched = await sb.admin(`/v1/webhooks/${w.id}`, { method: 'PATCH', body: JSON.stringify({ enabled: false, format: 'slack', rule_ids: ['r1'] }) })
    expect(patched.status).toBe(200)
    expect(await patched.json()).toMatchObject({ id: w.id, enabled: false, format: 'slack', rule_ids: ['r1'], kinds: ['pql', 'mql'] })

    expect((await sb.admin(`/v1/webhooks/${w.id}`, { method: 'DELETE' })).status).toBe(204)
    const gone = await sb.admin(`/v1/webhooks/${w.id}`)
    expect(gone.status).toBe(404)
    expect(((await gone.json()) as { error: { code: string } }).error.code).toBe('NOT_FOUND')
    const after = (await (await sb.admin('/v1/webhooks')).json()) as { data: { id: string }[] }
    expect(after.data.map((x) => x.id)).not.toContain(w.id)
  })

  it('rejects bad endpoints with the field named', async () => {
    const cases: [unknown, string][] = [
      [{ url: 'ftp://example.com/x' }, 'url'],
      [{ url: 'javascript:alert(1)' }, 'url'],
      [{ url: 'not a url' }, 'url'],
      [{}, 'url'],
      [{ url: 'https://example.com', kinds: ['pql', 'vip'] }, 'kinds.1'],
      [{ url: 'https://example.com', format: 'xml' }, 'format'],
      [{ url: 'https://example.com', secret: 'mine' }, '(root)'],
    ]
    for (const [body, path] of cases) {
      const res = await sb.admin('/v1/webhooks', { method: 'POST', body: JSON.stringify(body) })
      expect(res.status, JSON.stringify(body)).toBe(400)
      const err = (await res.json()) as { error: { code: string; details: { path: string }[] } }
      expect(err.error.code).toBe('BAD_REQUEST')
      expect(err.error.details.map((d) => d.path)).toContain(path)
    }
    const notJson = await sb.admin('/v1/webhooks', { method: 'POST', body: '{' })
    expect(notJson.status).toBe(400)
    const badPatch = await sb.admin('/v1/webhooks/wh_01J00000000000000000000000', { method: 'PATCH', body: JSON.stringify({ url: 'ftp://x' }) })
    expect(badPatch.status).toBe(400)
  })

  it('is for the admin only: no token is 401, a write key or another token is refused', async () => {
    expect((await fetch(`${sb.url}/v1/webhooks`)).status).toBe(401)
    const basic = await fetch(`${sb.url}/v1/webhooks`, { headers: { authorization: `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}` } })
    expect(basic.status).toBe(401)
    const bearer = await fetch(`${sb.url}/v1/webhooks`, { method: 'POST', headers: { authorization: `Bearer ${WRITE_KEY}` }, body: '{}' })
    expect(bearer.status).toBe(403)
    expect((await fetch(`${sb.url}/v1/webhooks`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).status).toBe(200)
  })
})

describe('signed deliveries', () => {
  it('delivers a fired signal signed per Standard Webhooks; a tampered body or another secret fails verification', async () => {
    const w = await createWebhook({ url: rx.url, rule_ids: ['r-sign'] })
    const signal = makeSignal({ rule_id: 'r-sign', score: 72.5 })
    const [event] = await fire(sb.server.store, sb.server.bus, signal)
    const [r] = await until(() => (got('r-sign').length === 1 ? got('r-sign') : undefined), { what: 'the delivery' })
    if (!r || !event) throw new Error('unreachable')

    expect(r.headers['webhook-id']).toMatch(/^dlv_[0-9A-HJKMNP-TV-Z]{26}$/)
    expect(Number(r.headers['webhook-timestamp'])).toBeCloseTo(Date.now() / 1000, -2)
    expect(r.headers['content-type']).toBe('application/json')
    const body = verify(r, w.secret)
    expect(body).toEqual({ type: 'signal.fired', timestamp: event.timestamp, data: signal })

    const tampered = { ...r, body: r.body.replace('"score":72.5', '"score":99') }
    expect(tampered.body).not.toBe(r.body)
    expect(() => verify(tampered, w.secret)).toThrow(WebhookVerificationError)
    const other = await createWebhook({ url: 'https://example.com/other', enabled: false })
    expect(() => verify(r, other.secret)).toThrow(WebhookVerificationError)
    expect(() => verify({ ...r, headers: { ...r.headers, 'webhook-id': 'dlv_other' } }, w.secret)).toThrow(WebhookVerificationError)

    // The delivery log shows it, with the endpoint's answer.
    const list = (await (await sb.admin(`/v1/webhooks/${w.id}/deliveries`)).json()) as DeliveryList
    await until(async () => {
      const l = (await (await sb.admin(`/v1/webhooks/${w.id}/deliveries`)).json()) as DeliveryList
      return l.data[0]?.status === 'delivered'
    })
    expect(list.data).toHaveLength(1)
    const d = ((await (await sb.admin(`/v1/deliveries/${r.headers['webhook-id']}`)).json()) as DeliveryList['data'][number])
    expect(d).toMatchObject({ id: r.headers['webhook-id'], webhook_id: w.id, event_id: event.id, signal_id: signal.id, type: 'signal.fired', status: 'delivered', attempt_count: 1 })
    expect(d.attempts).toEqual([expect.objectContaining({ attempt: 1, status_code: 200, error: '', response: 'ok' })])
  })

  it('delivers resolutions too, and only what the filters ask for (kinds, rule ids)', async () => {
    const w = await createWebhook({ url: rx.url, kinds: ['churn_risk'], rule_ids: ['r-filter-a', 'r-filter-b'] })
    const pql = makeSignal({ rule_id: 'r-filter-a', kind: 'pql' })
    const churnA = makeSignal({ rule_id: 'r-filter-a', kind: 'churn_risk' })
    const churnOther = makeSignal({ rule_id: 'r-filter-c', kind: 'churn_risk' })
    await fire(sb.server.store, sb.server.bus, pql, churnA, churnOther)
    const resolved = { ...churnA, status: 'resolved' as const, resolved_at: new Date().toISOString() }
    await fire(sb.server.store, sb.server.bus, { type: 'signal.resolved', signal: resolved })
    const received = await until(() => (got('r-filter-a').length >= 2 ? got('r-filter-a') : undefined))
    const bodies = received.map((r) => JSON.parse(r.body) as { type: string; data: { id: string; status: string } })
    expect(bodies.map((b) => [b.type, b.data.id, b.data.status])).toEqual([
      ['signal.fired', churnA.id, 'open'],
      ['signal.resolved', churnA.id, 'resolved'],
    ])
    // The outbox recorded exactly these two for the endpoint: the pql and the other rule's signal were filtered out.
    const list = (await (await sb.admin(`/v1/webhooks/${w.id}/deliveries`)).json()) as DeliveryList
    expect(list.data.map((d) => [d.type, d.signal_id]).sort()).toEqual([
      ['signal.fired', churnA.id],
      ['signal.resolved', churnA.id],
    ])
    expect(got('r-filter-c')).toHaveLength(0)
  })

  it('sends nothing to a disabled endpoint nor history from before an endpoint existed', async () => {
    const before = makeSignal({ rule_id: 'r-history' })
    await fire(sb.server.store, sb.server.bus, before)
    const disabled = await startReceiver()
    try {
      const off = await createWebhook({ url: disabled.url, rule_ids: ['r-history'], enabled: false })
      await createWebhook({ url: rx.url, rule_ids: ['r-history'] })
      const later = makeSignal({ rule_id: 'r-history' })
      await fire(sb.server.store, sb.server.bus, later)
      const [r] = await until(() => (got('r-history').length ? got('r-history') : undefined))
      expect((JSON.parse(r?.body ?? '{}') as { data: { id: string } }).data.id).toBe(later.id)
      expect(disabled.requests).toHaveLength(0)

      // Enabled again: it gets what fires from then on.
      await sb.admin(`/v1/webhooks/${off.id}`, { method: 'PATCH', body: JSON.stringify({ enabled: true }) })
      const third = makeSignal({ rule_id: 'r-history' })
      await fire(sb.server.store, sb.server.bus, third)
      await until(() => disabled.requests.length >= 1 && got('r-history').length >= 2)
      expect(disabled.requests.map((r) => (JSON.parse(r.body) as { data: { id: string } }).data.id)).toEqual([third.id])
      expect(got('r-history')).toHaveLength(2)
    } finally {
      await disabled.close()
    }
  })

  it('formats Slack endpoints as a readable message: who, which rule, why, a link to the account', async () => {
    const slack = await startReceiver()
    try {
      const w = await createWebhook({ url: slack.url, format: 'slack', rule_ids: ['pql-slack'] })
      const signal = makeSignal({ rule_id: 'pql-slack', subject: { type: 'account', id: 'acme & co' }, score: 88 })
      await fire(sb.server.store, sb.server.bus, signal)
      const [r] = await until(() => (slack.requests.length ? slack.requests : undefined))
      if (!r) throw new Error('unreachable')
      const msg = verify(r, w.secret) as { text: string; blocks: { type: string; text?: { text: string }; elements?: { text: string }[] }[] }
      expect(msg.text).toBe('PQL fired for account acme & co (rule pql-slack)')
      const all = JSON.stringify(msg.blocks)
      expect(msg.blocks[0]?.text?.text).toBe(':rocket: *PQL* fired for account *acme &amp; co*\nRule `pql-slack` (v3) · score *88*')
      expect(msg.blocks[1]?.text?.text).toContain('`count(Message Sent, 30d) &gt;= 2000`: measured *2,412* (gte 2,000)')
      expect(msg.blocks[1]?.text?.text).toContain('`active_users(7d) &gt;= 5`: measured *7* (gte 5)')
      expect(all).toContain('<https://signals.example.com/v1/accounts/acme%20%26%20co|Open account acme &amp; co>')
    } finally {
      await slack.close()
    }
  })

  it('after a secret rotation, deliveries verify with the new secret and, for a grace period, the old one', async () => {
    const w = await createWebhook({ url: rx.url, rule_ids: ['r-rotate'] })
    const res = await sb.admin(`/v1/webhooks/${w.id}/rotate-secret`, { method: 'POST' })
    expect(res.status).toBe(200)
    const rotated = (await res.json()) as { id: string; secret: string; previous_secret_expires_at: string }
    expect(rotated.secret).not.toBe(w.secret)
    expect(Date.parse(rotated.previous_secret_expires_at) - Date.now()).toBeGreaterThan(23 * 3_600_000)
    await fire(sb.server.store, sb.server.bus, makeSignal({ rule_id: 'r-rotate' }))
    const [r] = await until(() => (got('r-rotate').length ? got('r-rotate') : undefined))
    if (!r) throw new Error('unreachable')
    expect(String(r.headers['webhook-signature']).split(' ')).toHaveLength(2)
    expect(verify(r, rotated.secret)).toMatchObject({ type: 'signal.fired' })
    expect(verify(r, w.secret)).toMatchObject({ type: 'signal.fired' })
  })
})

import { Analytics } from '@segment/analytics-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { chTime, msFromCh } from '../src/time.js'
import { startTestServer, type TestServer, WRITE_KEY } from './harness.js'

// The real @segment/analytics-node client, pointed at a real HTTP port: what it sends is read back
// from the store and compared field by field with what went over the wire.

let sb: TestServer
beforeAll(async () => {
  sb = await startTestServer()
})
afterAll(async () => {
  await sb?.stop()
})

type Sent = Record<string, unknown> & { messageId: string; type: string; timestamp: string }
type Wire = { batch: Sent[]; sentAt: string; writeKey: string }

/** A client that records every request body it sends, and every response status. */
function client(opts: { maxRetries?: number } = {}) {
  const analytics = new Analytics({ writeKey: WRITE_KEY, host: sb.url, flushAt: 50, flushInterval: 60_000, maxRetries: opts.maxRetries ?? 3 })
  const requests: Wire[] = []
  const statuses: number[] = []
  const errors: unknown[] = []
  analytics.on('http_request', (r) => requests.push(JSON.parse(r.body as string) as Wire))
  analytics.on('http_response', (r) => statuses.push(r.status))
  analytics.on('error', (e) => errors.push(e))
  return { analytics, requests, statuses, errors }
}

type EventRowOut = {
  message_id: string
  type: string
  event: string
  user_id: string
  anonymous_id: string
  account_id: string
  timestamp: string
  original_timestamp: string
  sent_at: string
  received_at: string
  properties: string
  traits: string
  context: string
  previous_id: string
}

const ms = msFromCh

describe('@segment/analytics-node against signalbox', () => {
  let sent: Sent[]
  let wire: Wire
  let rows: Map<string, EventRowOut>
  const byType = (type: string) => sent.find((m) => m.type === type) as Sent
  const rowOf = (type: string) => rows.get(byType(type).messageId) as EventRowOut

  beforeAll(async () => {
    const { analytics, requests, statuses, errors } = client()
    analytics.identify({ userId: 'user_ada', traits: { email: 'ada@example.com', name: 'Ada', title: 'VP Engineering', plan: 'free' } })
    analytics.group({ userId: 'user_ada', groupId: 'acct_acme', traits: { name: 'Acme', plan: 'pro', seats: 25 } })
    analytics.track({
      userId: 'user_ada',
      event: 'Message Sent',
      properties: { channel: 'general', length: 42, mentions: ['bob'] },
      context: { groupId: 'acct_acme' },
    })
    analytics.page({ anonymousId: 'anon_42', category: 'Docs', name: 'Pricing', properties: { path: '/pricing', url: 'https://example.com/pricing' } })
    analytics.screen({ userId: 'user_ada', category: 'Settings', name: 'Billing', properties: { tab: 'invoices' } })
    analytics.alias({ previousId: 'anon_42', userId: 'user_ada' })
    await analytics.closeAndFlush()
    expect(errors).toEqual([])
    expect(statuses).toEqual([200])
    expect(requests).toHaveLength(1)
    wire = requests[0] as Wire
    sent = wire.batch
    const out = await sb.server.store.query<EventRowOut>(
      `SELECT message_id, type, event, user_id, anonymous_id, account_id, timestamp, original_timestamp, sent_at, received_at,
              properties, traits, context, previous_id
       FROM events_v1 WHERE message_id IN {ids:Array(String)}`,
      { ids: sent.map((m) => m.messageId) },
    )
    rows = new Map(out.map((r) => [r.message_id, r]))
  })

  it('stores every message once, under the messageId the client gave it', () => {
    expect(sent.map((m) => m.type).sort()).toEqual(['alias', 'group', 'identify', 'page', 'screen', 'track'])
    expect([...rows.keys()].sort()).toEqual(sent.map((m) => m.messageId).sort())
    for (const m of sent) expect(rows.get(m.messageId)?.type).toBe(m.type)
  })

  it('keeps the ids: userId, anonymousId, groupId, previousId', () => {
    expect(rowOf('identify')).toMatchObject({ user_id: 'user_ada', anonymous_id: '', account_id: '' })
    expect(rowOf('group')).toMatchObject({ user_id: 'user_ada', account_id: 'acct_acme' })
    expect(rowOf('track')).toMatchObject({ user_id: 'user_ada', account_id: 'acct_acme', event: 'Message Sent' })
    expect(rowOf('page')).toMatchObject({ user_id: '', anonymous_id: 'anon_42' })
    expect(rowOf('alias')).toMatchObject({ user_id: 'user_ada', previous_id: 'anon_42' })
  })

  it('keeps traits, properties and context as sent', () => {
    expect(JSON.parse(rowOf('identify').traits)).toEqual(byType('identify').traits)
    expect(JSON.parse(rowOf('group').traits)).toEqual({ name: 'Acme', plan: 'pro', seats: 25 })
    expect(JSON.parse(rowOf('track').properties)).toEqual({ channel: 'general', length: 42, mentions: ['bob'] })
    expect(JSON.parse(rowOf('track').context)).toEqual(byType('track').context)
    expect(JSON.parse(rowOf('track').context)).toMatchObject({ library: { name: '@segment/analytics-node' }, groupId: 'acct_acme' })
  })

  it('stores page and screen as Page Viewed / Screen Viewed with name and category in the properties', () => {
    expect(rowOf('page').event).toBe('Page Viewed')
    expect(JSON.parse(rowOf('page').properties)).toEqual({ path: '/pricing', url: 'https://example.com/pricing', name: 'Pricing', category: 'Docs' })
    expect(rowOf('screen').event).toBe('Screen Viewed')
    expect(JSON.parse(rowOf('screen').properties)).toEqual({ tab: 'invoices', name: 'Billing', category: 'Settings' })
  })

  it('keeps the timestamps: original, sentAt, receivedAt, and the skew-corrected timestamp', () => {
    const sentAt = Date.parse(wire.sentAt)
    for (const m of sent) {
      const r = rows.get(m.messageId) as EventRowOut
      const original = Date.parse(m.timestamp)
      expect(r.original_timestamp).toBe(chTime(original))
      expect(r.sent_at).toBe(chTime(sentAt))
      const received = ms(r.received_at)
      expect(received).toBeGreaterThanOrEqual(sentAt - 1000)
      expect(r.timestamp).toBe(chTime(received - (sentAt - original)))
      // The client's clock is right, so the corrected time is the original within the network delay.
      expect(Math.abs(ms(r.timestamp) - original)).toBeLessThan(2000)
    }
  })

  it('derives traits, the membership and the identity link', async () => {
    const q = sb.server.store.query.bind(sb.server.store)
    expect(await q("SELECT key, value FROM user_traits_v1 WHERE user_id = 'user_ada' ORDER BY key")).toEqual([
      { key: 'email', value: '"ada@example.com"' },
      { key: 'name', value: '"Ada"' },
      { key: 'plan', value: '"free"' },
      { key: 'title', value: '"VP Engineering"' },
    ])
    expect(await q("SELECT key, value, message_id FROM account_traits_v1 WHERE account_id = 'acct_acme' ORDER BY key")).toEqual([
      { key: 'name', value: '"Acme"', message_id: byType('group').messageId },
      { key: 'plan', value: '"pro"', message_id: byType('group').messageId },
      { key: 'seats', value: '25', message_id: byType('group').messageId },
    ])
    expect(await q("SELECT account_id, user_id FROM memberships_v1 WHERE account_id = 'acct_acme' GROUP BY account_id, user_id")).toEqual([
      { account_id: 'acct_acme', user_id: 'user_ada' },
    ])
    expect(await q("SELECT previous_id, user_id, via FROM identities_v1 WHERE user_id = 'user_ada' GROUP BY previous_id, user_id, via")).toEqual([
      { previous_id: 'anon_42', user_id: 'user_ada', via: 'alias' },
    ])
    const [user] = await q<{ first_seen: string; last_seen: string }>(
      "SELECT min(first_seen) AS first_seen, max(last_seen) AS last_seen FROM users_v1 WHERE user_id = 'user_ada'",
    )
    const userTimes = sent.filter((m) => m.userId === 'user_ada').map((m) => ms(rows.get(m.messageId)?.timestamp as string))
    expect(user).toEqual({ first_seen: chTime(Math.min(...userTimes)), last_seen: chTime(Math.max(...userTimes)) })
  })
})

describe('the client retries a 503 and the message is stored once', () => {
  it('a store failure, then recovery: one row per message', async () => {
    const store = sb.server.store
    await store.command('ALTER TABLE events_v1 ADD CONSTRAINT test_refuse_client CHECK 0')
    const { analytics, statuses } = client()
    let repaired: Promise<void> | undefined
    // Repair the store once the client has seen the failure, so its retry succeeds.
    analytics.on('http_response', (r) => {
      if (r.status === 503) repaired ??= store.command('ALTER TABLE events_v1 DROP CONSTRAINT test_refuse_client')
    })
    try {
      analytics.track({ userId: 'user_retry', event: 'Retried', messageId: 'client-retry-1' })
      analytics.identify({ userId: 'user_retry', traits: { plan: 'team' }, messageId: 'client-retry-2' })
      await analytics.closeAndFlush()
    } finally {
      await (repaired ?? store.command('ALTER TABLE events_v1 DROP CONSTRAINT test_refuse_client'))
    }
    expect(statuses).toEqual([503, 200])
    expect(await store.query("SELECT message_id, count() AS n FROM events_v1 WHERE user_id = 'user_retry' GROUP BY message_id ORDER BY message_id")).toEqual([
      { message_id: 'client-retry-1', n: 1 },
      { message_id: 'client-retry-2', n: 1 },
    ])
  })

  it('a batch with a bad message: the client is answered 200 and the good ones are stored', async () => {
    const { analytics, statuses } = client()
    analytics.track({ userId: 'user_mixed', event: 'Fine', messageId: 'client-mixed-1' })
    // The client does not validate: an empty event name reaches the server, which rejects only it.
    analytics.track({ userId: 'user_mixed', event: '', messageId: 'client-mixed-2' })
    await analytics.closeAndFlush()
    expect(statuses).toEqual([200])
    expect(await sb.server.store.query("SELECT message_id FROM events_v1 WHERE user_id = 'user_mixed'")).toEqual([{ message_id: 'client-mixed-1' }])
    expect(await sb.server.store.query("SELECT path FROM ingest_errors_v1 WHERE message_id = 'client-mixed-2'")).toEqual([{ path: 'event' }])
  })
})

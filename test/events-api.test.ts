import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { IngestError, StoredEvent } from '../src/events/queries.js'
import { startTestServer, type TestServer } from './harness.js'

// GET /v1/events and GET /v1/ingest-errors: what arrived (with its properties) and what was
// refused (with the reason), newest first, paged with a cursor.

let sb: TestServer
beforeAll(async () => {
  sb = await startTestServer({ EVAL_INTERVAL_MS: '0', EVAL_ON_INGEST: 'false', RULES_DEFAULT_PACK: 'false' })
  // Three requests, so arrival order is known.
  for (const [i, userId, account] of [
    [1, 'u1', 'acme'],
    [2, 'u2', 'acme'],
    [3, 'u3', 'globex'],
  ] as const) {
    const res = await sb.post('/v1/track', { userId, event: i === 3 ? 'Report Viewed' : 'Message Sent', messageId: `m${i}`, properties: { n: i }, context: { groupId: account } })
    expect(res.status).toBe(200)
  }
  const batch = await sb.post('/v1/batch', { batch: [{ type: 'track', userId: 'u4', event: 'Message Sent', messageId: 'm4' }, { type: 'track', userId: 'u5' }] })
  expect(((await batch.json()) as { rejected: unknown[] }).rejected).toHaveLength(1)
})
afterAll(async () => {
  await sb.stop()
})

type Page<T> = { data: T[]; next: string | null }
const events = async (q = '') => (await (await sb.admin(`/v1/events${q}`)).json()) as Page<StoredEvent>

describe('GET /v1/events', () => {
  it('lists stored events newest first with their properties', async () => {
    const page = await events()
    expect(page.data.map((e) => e.message_id)).toEqual(['m4', 'm3', 'm2', 'm1'])
    expect(page.data[1]).toMatchObject({ type: 'track', event: 'Report Viewed', user_id: 'u3', account_id: 'globex', properties: { n: 3 }, source: 'web' })
    expect(page.next).toBeNull()
  })

  it('filters by subject and event name, and pages with the cursor', async () => {
    expect((await events('?subject_type=account&subject_id=acme')).data.map((e) => e.message_id)).toEqual(['m2', 'm1'])
    expect((await events('?subject_type=user&subject_id=u3')).data.map((e) => e.message_id)).toEqual(['m3'])
    expect((await events('?event=Message%20Sent')).data.map((e) => e.message_id)).toEqual(['m4', 'm2', 'm1'])
    const first = await events('?limit=3')
    expect(first.data.map((e) => e.message_id)).toEqual(['m4', 'm3', 'm2'])
    const second = await events(`?limit=3&before=${first.next}`)
    expect(second).toMatchObject({ data: [{ message_id: 'm1' }], next: null })
    expect((await events(`?after=${second.data[0]?.cursor}`)).data.map((e) => e.message_id)).toEqual(['m4', 'm3', 'm2'])
  })

  it('names what is wrong with a bad query, and is the admin token only', async () => {
    const bad = await sb.admin('/v1/events?before=nope&limit=0')
    expect(bad.status).toBe(400)
    const body = (await bad.json()) as { error: { details: { path: string }[] } }
    expect(body.error.details.map((d) => d.path).sort()).toEqual(['before', 'limit'])
    const half = await sb.admin('/v1/events?subject_type=account')
    expect(await half.json()).toMatchObject({ error: { details: [{ path: 'subject_id', message: 'is required with subject_type' }] } })
    expect((await fetch(`${sb.url}/v1/events`)).status).toBe(401)
  })
})

describe('GET /v1/ingest-errors', () => {
  it('lists the rejected message with its reason and the message as sent', async () => {
    const res = await sb.admin('/v1/ingest-errors')
    const page = (await res.json()) as Page<IngestError>
    expect(page.data).toEqual([
      expect.objectContaining({
        level: 'error',
        route: '/v1/batch',
        batch_index: 1,
        source: 'web',
        path: 'event',
        message: expect.stringContaining('expected string'),
        payload: { type: 'track', userId: 'u5' },
      }),
    ])
    expect((await sb.admin('/v1/ingest-errors?level=warning').then((r) => r.json())) as Page<IngestError>).toEqual({ data: [], next: null })
  })
})

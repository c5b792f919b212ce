import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { EventRow } from '../ingest/normalize.js'
import { chTime } from '../src/time.js'
import { GroupCommitWriter, storeBlock } from '../ingest/writer.js'
import { StoreUnavailableError } from '../src/errors.js'
import { faultyStore } from './faults.js'
import { startTestServer, type TestServer } from './harness.js'

// Poison isolation as a rule of the write path: a message the store refuses fails only itself,
// whatever the reason (a poison no boundary check knows yet is stood for by a fault-injecting
// wrapper around the real store, or by rows that bypass the boundary and make the real engine
// refuse them); a store that is down is still a 503 for everyone; /ready tells the truth.

let sb: TestServer
let fault: ReturnType<typeof faultyStore>
const store = () => sb.server.store
beforeAll(async () => {
  sb = await startTestServer({ INGEST_FLUSH_MS: '40', READY_INTERVAL_MS: '400' }, { wrapStore: (s) => (fault = faultyStore(s)).store })
})
afterAll(async () => {
  await sb?.stop()
})

let seq = 0
const uid = (prefix: string) => `${prefix}-${++seq}-${Date.now()}`
const storedIds = async (ids: string[]) =>
  (await store().query<{ message_id: string }>('SELECT message_id FROM events_v1 WHERE message_id IN {ids:Array(String)} ORDER BY message_id', { ids })).map(
    (r) => r.message_id,
  )
const track = (messageId: string, properties: Record<string, unknown> = { format: 'csv' }) => ({ type: 'track', messageId, userId: 'iso-user', event: 'Exported', properties })
/** What the wrapper refuses: only the events row carries this text unescaped. */
const POISON = { poison: 'refuse-me' }

describe('a message the store refuses is rejected on its own', () => {
  beforeAll(() => {
    fault.faults.refuseRows = /"poison":"refuse-me"/
  })
  afterAll(() => {
    fault.faults.refuseRows = undefined
  })

  it('in a batch: listed in rejected with its index, kept in ingest_errors_v1; the others are stored', async () => {
    const [a, bad, b] = [uid('iso'), uid('iso-bad'), uid('iso')]
    const res = await sb.post('/v1/batch', { batch: [track(a), track(bad, POISON), track(b)] })
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({
      success: true,
      accepted: 2,
      rejected: [{ index: 1, path: '(message)', message: expect.stringMatching(/^the store refused this message: Code: 117/) }],
    })
    expect(await storedIds([a, bad, b])).toEqual([a, b].sort())
    await expect
      .poll(() => store().query('SELECT level, batch_index, path FROM ingest_errors_v1 WHERE message_id = {id:String}', { id: bad }))
      .toEqual([{ level: 'error', batch_index: 1, path: '(message)' }])
  })

  it('alone: 400 with the reason; the 20 good requests that shared its block are stored and answered 200', async () => {
    const good = Array.from({ length: 20 }, () => uid('iso-good'))
    const bad = uid('iso-alone')
    const responses = await Promise.all([...good.map((id) => sb.post('/v1/track', track(id))), sb.post('/v1/track', track(bad, POISON))])
    expect(responses.map((r) => r.status)).toEqual([...Array(20).fill(200), 400])
    const { error } = (await responses[20]?.json()) as { error: { code: string; details: { path: string; message: string }[] } }
    expect(error.code).toBe('BAD_REQUEST')
    expect(error.details).toEqual([{ path: '(message)', message: expect.stringMatching(/store refused/) }])
    expect(await storedIds([...good, bad])).toEqual([...good].sort())
    await expect.poll(async () => (await store().query('SELECT 1 FROM ingest_errors_v1 WHERE message_id = {id:String}', { id: bad })).length).toBe(1)
  })

  it('a resend of the refused message beside good ones is refused again, and the good ones are stored once', async () => {
    const bad = uid('iso-again')
    const first = await sb.post('/v1/batch', { batch: [track(bad, POISON)] })
    expect(((await first.json()) as { accepted: number }).accepted).toBe(0)
    const good = uid('iso-again-good')
    const again = await sb.post('/v1/batch', { batch: [track(good), track(bad, POISON), track(good)] })
    expect(await again.json()).toMatchObject({ accepted: 1, rejected: [{ index: 1, path: '(message)' }] })
    expect(await storedIds([good, bad])).toEqual([good])
  })
})

describe('a store that is down is a 503 for everyone', () => {
  it('down: every write gets 503; /health answers 200 and /ready 503; back up, both 200', async () => {
    fault.faults.down = true
    try {
      const statuses = [(await sb.post('/v1/track', track(uid('down')))).status, (await sb.post('/v1/batch', { batch: [track(uid('down'))] })).status]
      expect(statuses).toEqual([503, 503])
      expect((await fetch(`${sb.url}/health`)).status).toBe(200)
      const ready = await fetch(`${sb.url}/ready`)
      expect(ready.status).toBe(503)
      expect(await ready.json()).toMatchObject({ status: 'unavailable', checks: { store: { ok: false, error: expect.stringMatching(/ECONNREFUSED/) } } })
    } finally {
      fault.faults.down = false
    }
    const id = uid('up')
    expect((await sb.post('/v1/track', track(id))).status).toBe(200)
    expect((await fetch(`${sb.url}/ready`)).status).toBe(200)
  })

  it('failing in the middle of a block (after its first inserts) is a 503, never a split; the resend stores each message once', async () => {
    const ids = [uid('mid'), uid('mid'), uid('mid')]
    const batch = ids.map((id) => ({ ...track(id), userId: `user-${id}` }))
    // The users rows pass; the events insert fails.
    fault.faults.failInsertsAfter = 1
    let status: number
    try {
      status = (await sb.post('/v1/batch', { batch })).status
    } finally {
      fault.faults.failInsertsAfter = undefined
    }
    expect(status).toBe(503)
    expect(await storedIds(ids)).toEqual([])
    const again = await sb.post('/v1/batch', { batch })
    expect(await again.json()).toEqual({ success: true, accepted: 3, rejected: [] })
    const [row] = await store().query<{ n: number }>('SELECT count() AS n FROM events_v1 WHERE message_id IN {ids:Array(String)}', { ids })
    expect(Number(row?.n)).toBe(3)
  })
})

describe('the daily rollup survives an insert that failed after its events were committed', () => {
  it('the view part of an insert fails (the events part is stored): the resend writes the rollup rows again', async () => {
    const ids = [uid('rollup'), uid('rollup')]
    const account = uid('rollup-acc')
    const batch = ids.map((id) => ({ ...track(id), context: { groupId: account } }))
    const rollup = async () =>
      Number((await store().query<{ n: number }>('SELECT uniqExactMerge(messages) AS n FROM activity_daily_v1 WHERE account_id = {a:String}', { a: account }))[0]?.n)
    // A real ClickHouse refusal in the materialized view's insert only, after events_v1's part is written.
    await store().command('ALTER TABLE activity_daily_v1 ADD CONSTRAINT rollup_refuse CHECK 0')
    let status: number
    try {
      status = (await sb.post('/v1/batch', { batch })).status
    } finally {
      await store().command('ALTER TABLE activity_daily_v1 DROP CONSTRAINT rollup_refuse')
    }
    expect(status).toBe(503)
    expect(await storedIds(ids)).toEqual([...ids].sort())
    expect(await rollup()).toBe(0)
    const again = await sb.post('/v1/batch', { batch })
    expect(await again.json()).toEqual({ success: true, accepted: 2, rejected: [] })
    expect(await rollup()).toBe(2)
    // Resent once more: the rollup rows are idempotent.
    await sb.post('/v1/batch', { batch })
    expect(await rollup()).toBe(2)
  })
})

describe('/ready', () => {
  it('503 while blocks of events fail (a table that refuses every row), 200 again once the interval has passed and a probe is written', async () => {
    await store().command('ALTER TABLE events_v1 ADD CONSTRAINT ready_refuse CHECK 0')
    try {
      expect((await sb.post('/v1/track', track(uid('refused')))).status).toBe(503)
      const ready = await fetch(`${sb.url}/ready`)
      expect(ready.status).toBe(503)
      expect(await ready.json()).toMatchObject({ checks: { store: { ok: true }, writes: { ok: false, error: expect.stringMatching(/storing a block of events failed/) } } })
    } finally {
      await store().command('ALTER TABLE events_v1 DROP CONSTRAINT ready_refuse')
    }
    // No traffic reaches an instance taken out of rotation: once the failure is older than the
    // interval, a probe write decides.
    await expect.poll(async () => (await fetch(`${sb.url}/ready`)).status, { timeout: 5000, interval: 100 }).toBe(200)
  })

  it('idle, it writes a probe: 503 while the store refuses writes (reads still work), 200 once it takes them', async () => {
    await store().command('ALTER TABLE health_probes_v1 ADD CONSTRAINT probe_refuse CHECK 0')
    try {
      await expect.poll(async () => (await fetch(`${sb.url}/ready`)).status, { timeout: 5000, interval: 100 }).toBe(503)
      const body = await (await fetch(`${sb.url}/ready`)).json()
      expect(body).toMatchObject({ checks: { store: { ok: true }, writes: { ok: false, error: expect.stringMatching(/refuses writes/) } } })
    } finally {
      await store().command('ALTER TABLE health_probes_v1 DROP CONSTRAINT probe_refuse')
    }
    expect((await fetch(`${sb.url}/ready`)).status).toBe(200)
  })
})

describe('the writer splits a block the real engine refuses a row of', () => {
  const row = (id: string, extra: Partial<EventRow> = {}): EventRow => ({
    source: 'iso-writer',
    message_id: id,
    type: 'track',
    event: 'Split',
    user_id: 'split-user',
    anonymous_id: '',
    account_id: '',
    timestamp: chTime(Date.now()),
    original_timestamp: null,
    sent_at: null,
    received_at: chTime(Date.now()),
    properties: '{}',
    traits: '{}',
    context: '{}',
    previous_id: '',
    ...extra,
  })
  // Rows that bypass the boundary: an unparsable DateTime64 (refused by the events insert), and a
  // lone surrogate in an id (refused by the derived rows' JSON, and by the dedup lookup's URL encoding).
  const poisons: [string, Partial<EventRow>][] = [
    ['an unparsable timestamp (the events insert)', { timestamp: 'not a time' }],
    ['a lone surrogate in user_id (the derived rows)', { user_id: 'u-\ud800' }],
    ['a lone surrogate in message_id (the dedup lookup)', {}],
  ]
  for (const [what, extra] of poisons) {
    it(`${what}: the poisoned write gets it back as rejected; 20 writes sharing its block are stored`, async () => {
      const writer = new GroupCommitWriter(store(), { flushMs: 30, maxRows: 10_000 })
      const good = Array.from({ length: 20 }, () => uid('split'))
      const bad = what.includes('message_id') ? `${uid('split-bad')}-\udc00` : uid('split-bad')
      const results = await Promise.all([
        ...good.map((id) => writer.write({ events: [row(id)], errors: [] })),
        writer.write({ events: [row(uid('split-ok')), row(bad, extra)], errors: [] }),
      ])
      expect(results.slice(0, 20)).toEqual(Array(20).fill({ rejected: [] }))
      expect(results[20]).toEqual({ rejected: [{ event: 1, message: expect.stringMatching(/^the store refused this message/) }] })
      expect(await storedIds(good)).toEqual([...good].sort())
      await writer.close()
    })
  }

  it('storeBlock (the queue consumer) returns the refused message and stores the rest', async () => {
    const [a, bad] = [uid('block'), uid('block-bad')]
    const { stored, rejected } = await storeBlock(store(), { events: [row(a), row(bad, { timestamp: 'not a time' })], errors: [] })
    expect(stored.map((e) => e.message_id)).toEqual([a])
    expect([...rejected.keys()]).toEqual([`iso-writer\u0000${bad}`])
    expect(await storedIds([a, bad])).toEqual([a])
  })

  it('a table refusing every row (an operator constraint) is not split: every write fails with StoreUnavailableError', async () => {
    const writer = new GroupCommitWriter(store(), { flushMs: 20, maxRows: 10_000 })
    await store().command('ALTER TABLE events_v1 ADD CONSTRAINT split_refuse CHECK 0')
    let results: PromiseSettledResult<unknown>[]
    try {
      results = await Promise.allSettled([1, 2].map(() => writer.write({ events: [row(uid('nosplit'))], errors: [] })))
    } finally {
      await store().command('ALTER TABLE events_v1 DROP CONSTRAINT split_refuse')
    }
    for (const r of results) expect(r.status === 'rejected' && r.reason).toBeInstanceOf(StoreUnavailableError)
    await writer.close()
  })
})

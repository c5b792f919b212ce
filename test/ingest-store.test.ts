import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FUTURE_LIMIT_MS } from '../ingest/normalize.js'
import { chTime, msFromCh } from '../src/time.js'
import { GroupCommitWriter } from '../ingest/writer.js'
import { StoreUnavailableError } from '../src/errors.js'
import type { Store } from '../src/store/store.js'
import { APP_KEY, startTestServer, type TestServer, WRITE_KEY } from './harness.js'
import { until } from './poll.js'

// What ingestion leaves in the store: rejected messages kept with their reason, exact
// deduplication (across resends, restarts, one batch, concurrent requests), clock-skew
// correction, and acknowledgement only after a durable insert.

let sb: TestServer
const store = () => sb.server.store
beforeAll(async () => {
  sb = await startTestServer()
})
afterAll(async () => {
  await sb?.stop()
})

let seq = 0
const uid = (prefix: string) => `${prefix}-${++seq}`
const iso = (ms: number) => new Date(ms).toISOString()
/** ClickHouse DateTime64 text (UTC) to epoch ms. */
const ms = msFromCh

async function count(sql: string, params: Record<string, unknown> = {}): Promise<number> {
  const [row] = await store().query<{ n: number }>(sql, params)
  return Number(row?.n)
}
const storedIds = async (ids: string[]) =>
  (await store().query<{ message_id: string }>('SELECT message_id FROM events_v1 WHERE message_id IN {ids:Array(String)} ORDER BY message_id', { ids })).map(
    (r) => r.message_id,
  )

const trackMsg = (messageId: string, extra: Record<string, unknown> = {}) => ({
  type: 'track',
  messageId,
  userId: 'store-user',
  event: 'Report Exported',
  properties: { format: 'csv' },
  timestamp: iso(Date.now() - 1000),
  ...extra,
})

describe('rejected messages are kept with their reason', () => {
  it('a mixed batch stores the good messages and records each bad one in ingest_errors_v1', async () => {
    const [good1, bad, good2] = [uid('mix'), uid('mix'), uid('mix')]
    const batch = [trackMsg(good1), { type: 'track', messageId: bad, userId: 'store-user', event: '' }, trackMsg(good2)]
    const res = await sb.post('/v1/batch', { batch, sentAt: iso(Date.now()) })
    expect(await res.json()).toEqual({ success: true, accepted: 2, rejected: [{ index: 1, path: 'event', message: expect.any(String) }] })
    expect(await storedIds([good1, bad, good2])).toEqual([good1, good2].sort())
    const errors = await store().query<Record<string, unknown>>(
      'SELECT source, level, route, batch_index, message_id, path, message, payload FROM ingest_errors_v1 WHERE message_id = {id:String}',
      { id: bad },
    )
    expect(errors).toEqual([
      {
        source: 'web',
        level: 'error',
        route: '/v1/batch',
        batch_index: 1,
        message_id: bad,
        path: 'event',
        message: expect.stringMatching(/.+/),
        payload: JSON.stringify(batch[1]),
      },
    ])
  })

  it('a single invalid call is recorded too, without the write key it carried', async () => {
    const id = uid('single-bad')
    const res = await sb.post('/v1/group', { messageId: id, userId: 'store-user', writeKey: WRITE_KEY }, null)
    expect(res.status).toBe(400)
    expect(await store().query('SELECT route, path, level, payload FROM ingest_errors_v1 WHERE message_id = {id:String}', { id })).toEqual([
      { route: '/v1/group', path: 'groupId', level: 'error', payload: JSON.stringify({ messageId: id, userId: 'store-user' }) },
    ])
  })
})

describe('deduplication by messageId, per source', () => {
  const batch = Array.from({ length: 5 }, (_, i) => ({
    type: i === 0 ? 'identify' : 'track',
    messageId: `dedup-${i}`,
    userId: 'dedup-user',
    ...(i === 0 ? { traits: { plan: 'free', seats: 3 } } : { event: 'Seat Added', properties: { n: i } }),
    timestamp: iso(Date.now() - 60_000),
  }))
  const ids = batch.map((m) => m.messageId)
  const traitRows = () => count("SELECT count() AS n FROM user_traits_v1 WHERE user_id = 'dedup-user'")

  it('the same batch sent twice with a new sentAt is stored once', async () => {
    const first = await sb.post('/v1/batch', { batch, sentAt: iso(Date.now()) })
    const second = await sb.post('/v1/batch', { batch, sentAt: iso(Date.now() + 1500) })
    // `accepted` counts valid messages: a resend is accepted (and counted once).
    expect([await first.json(), await second.json()]).toEqual([
      { success: true, accepted: 5, rejected: [] },
      { success: true, accepted: 5, rejected: [] },
    ])
    expect(await storedIds(ids)).toEqual(ids)
    expect(await traitRows()).toBe(2)
  })

  it('and again after a restart', async () => {
    await sb.restart()
    const res = await sb.post('/v1/batch', { batch, sentAt: iso(Date.now() + 3000) })
    expect(res.status).toBe(200)
    expect(await storedIds(ids)).toEqual(ids)
    expect(await traitRows()).toBe(2)
    expect((await sb.stats()).events).toBeGreaterThanOrEqual(5)
    expect(await count("SELECT count() AS n FROM events_v1 WHERE user_id = 'dedup-user'")).toBe(5)
  })

  it('a messageId repeated inside one batch is stored once (the first occurrence) and counted once', async () => {
    const id = uid('repeat')
    const res = await sb.post('/v1/batch', {
      batch: [trackMsg(id, { event: 'First' }), trackMsg(uid('other')), trackMsg(id, { event: 'Second' })],
    })
    expect(await res.json()).toMatchObject({ accepted: 2 })
    expect(await store().query('SELECT event FROM events_v1 WHERE message_id = {id:String}', { id })).toEqual([{ event: 'First' }])
  })

  it('concurrent requests carrying the same messageId store it once', async () => {
    const shared = uid('concurrent')
    const own = Array.from({ length: 12 }, () => uid('own'))
    const responses = await Promise.all(own.map((id) => sb.post('/v1/batch', { batch: [trackMsg(shared), trackMsg(id)] })))
    expect(responses.map((r) => r.status)).toEqual(own.map(() => 200))
    expect(await storedIds([shared, ...own])).toEqual([shared, ...own].sort())
    expect(await count('SELECT count() AS n FROM events_v1 WHERE message_id = {id:String}', { id: shared })).toBe(1)
  })

  it('the same messageId from two sources is two messages', async () => {
    const id = uid('two-sources')
    await sb.post('/v1/track', trackMsg(id))
    await sb.post('/v1/track', trackMsg(id), APP_KEY)
    await sb.post('/v1/track', trackMsg(id), APP_KEY)
    expect(await store().query('SELECT source FROM events_v1 WHERE message_id = {id:String} ORDER BY source', { id })).toEqual([
      { source: 'app' },
      { source: 'web' },
    ])
  })

  it('a message without messageId is assigned one', async () => {
    const res = await sb.post('/v1/track', { userId: 'no-id-user', event: 'Anonymous Id Test' })
    expect(res.status).toBe(200)
    const rows = await store().query<{ message_id: string }>("SELECT message_id FROM events_v1 WHERE user_id = 'no-id-user'")
    expect(rows).toEqual([{ message_id: expect.stringMatching(/^sb-[0-9A-HJKMNP-TV-Z]{26}$/) }])
  })
})

describe('clock skew', () => {
  type Row = { timestamp: string; original_timestamp: string | null; sent_at: string | null; received_at: string }
  const row = async (id: string) =>
    (await store().query<Row>('SELECT timestamp, original_timestamp, sent_at, received_at FROM events_v1 WHERE message_id = {id:String}', { id }))[0] as Row

  it('a client whose clock is an hour ahead gets its timestamps corrected', async () => {
    const HOUR = 3_600_000
    const before = Date.now()
    const batch = [0, 1, 2].map((i) => trackMsg(uid('skew'), { timestamp: iso(before + HOUR - (30 - i) * 1000) }))
    await sb.post('/v1/batch', { batch, sentAt: iso(before + HOUR) })
    const after = Date.now()
    for (const [i, m] of batch.entries()) {
      const r = await row(m.messageId)
      const received = ms(r.received_at)
      expect(received).toBeGreaterThanOrEqual(before)
      expect(received).toBeLessThanOrEqual(after)
      expect(r.original_timestamp).toBe(chTime(Date.parse(m.timestamp)))
      expect(r.sent_at).toBe(chTime(before + HOUR))
      // receivedAt − (sentAt − originalTimestamp): the event happened 30 − i seconds before the send.
      expect(r.timestamp).toBe(chTime(received - (30 - i) * 1000))
      expect(Math.abs(ms(r.timestamp) - (before - (30 - i) * 1000))).toBeLessThan(after - before + 1000)
    }
  })

  it('per-message sentAt wins over the batch sentAt', async () => {
    const id = uid('skew-own')
    const t = Date.now()
    await sb.post('/v1/batch', { batch: [trackMsg(id, { timestamp: iso(t - 10_000), sentAt: iso(t) })], sentAt: iso(t + 7_200_000) })
    const r = await row(id)
    expect(r.timestamp).toBe(chTime(ms(r.received_at) - 10_000))
  })

  it('a timestamp more than 23 h in the future is stored as receivedAt, with a warning', async () => {
    const id = uid('future')
    const t = Date.now()
    const res = await sb.post('/v1/batch', { batch: [trackMsg(id, { timestamp: iso(t + FUTURE_LIMIT_MS + 3_600_000) })], sentAt: iso(t) })
    expect(await res.json()).toEqual({ success: true, accepted: 1, rejected: [] })
    const r = await row(id)
    expect(r.timestamp).toBe(r.received_at)
    expect(await store().query('SELECT level, path, batch_index FROM ingest_errors_v1 WHERE message_id = {id:String}', { id })).toEqual([
      { level: 'warning', path: 'timestamp', batch_index: 0 },
    ])
  })

  it('a message without timestamp or sentAt is dated receivedAt', async () => {
    const id = uid('no-time')
    await sb.post('/v1/track', { messageId: id, userId: 'u', event: 'Untimed' })
    const r = await row(id)
    expect(r).toEqual({ timestamp: r.received_at, original_timestamp: null, sent_at: null, received_at: r.received_at })
  })
})

describe('a body sent in chunks (no Content-Length)', () => {
  /** POST a body as a stream: fetch sends it with `Transfer-Encoding: chunked`. */
  const postChunked = (chunks: string[]) =>
    fetch(`${sb.url}/v1/batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}` },
      body: new ReadableStream({
        start(controller) {
          for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk))
          controller.close()
        },
      }),
      duplex: 'half',
    } as RequestInit)

  it('is read whole and stored', async () => {
    const ids = [uid('chunked'), uid('chunked')]
    const json = JSON.stringify({ batch: ids.map((id) => trackMsg(id)) })
    const res = await postChunked([json.slice(0, 40), json.slice(40)])
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ success: true, accepted: 2, rejected: [] })
    expect(await storedIds(ids)).toEqual([...ids].sort())
  })

  it('over 500 KB is refused with 413 as it arrives', async () => {
    const res = await postChunked(['{"batch":[', ...Array.from({ length: 30 }, () => `${JSON.stringify(trackMsg(uid('big'), { properties: { blob: 'x'.repeat(20_000) } }))},`), '{}]}'])
    expect(res.status).toBe(413)
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('PAYLOAD_TOO_LARGE')
  })
})

describe('acknowledgement means stored', () => {
  it('an insert that fails after the derived rows answers 503; the resend stores the message once', async () => {
    const id = uid('partial')
    const msg = { type: 'identify', messageId: id, userId: 'partial-user', traits: { plan: 'pro' }, timestamp: iso(Date.now() - 5000) }
    // A real ClickHouse error on the events insert only: the dedup lookup and derived inserts pass.
    await store().command('ALTER TABLE events_v1 ADD CONSTRAINT test_refuse_all CHECK 0')
    let status: number
    try {
      status = (await sb.post('/v1/batch', { batch: [msg], sentAt: iso(Date.now()) })).status
    } finally {
      await store().command('ALTER TABLE events_v1 DROP CONSTRAINT test_refuse_all')
    }
    expect(status).toBe(503)
    expect(await storedIds([id])).toEqual([])
    expect(await count("SELECT count() AS n FROM user_traits_v1 WHERE user_id = 'partial-user'")).toBe(1)
    const again = await sb.post('/v1/batch', { batch: [msg], sentAt: iso(Date.now()) })
    expect(again.status).toBe(200)
    expect(await storedIds([id])).toEqual([id])
    const [user] = await store().query('SELECT user_id, min(first_seen) AS f, max(last_seen) AS l FROM users_v1 WHERE user_id = {u:String} GROUP BY user_id', {
      u: 'partial-user',
    })
    expect(user).toMatchObject({ user_id: 'partial-user' })
  })

  it('a closed store answers 503 on every route and on /ready (/health, liveness, still 200); a restart recovers', async () => {
    await store().close()
    const statuses = [
      (await sb.post('/v1/track', trackMsg(uid('closed')))).status,
      (await sb.post('/v1/batch', { batch: [trackMsg(uid('closed'))] })).status,
      (await fetch(`${sb.url}/ready`)).status,
      (await fetch(`${sb.url}/health`)).status,
    ]
    expect(statuses).toEqual([503, 503, 503, 200])
    await sb.restart()
    expect((await sb.post('/v1/track', trackMsg(uid('reopened')))).status).toBe(200)
  })
})

/** Rows of a raw insert: its lines. */
const lines = (text: string | Uint8Array) => (typeof text === 'string' ? text : new TextDecoder().decode(text)).split('\n').length - 1

describe('GroupCommitWriter', () => {
  /** The real store, counting the inserts into events_v1. */
  function counting(inner: Store) {
    const inserts: number[] = []
    const wrapped: Store = {
      kind: inner.kind,
      query: (sql, params) => inner.query(sql, params),
      command: (sql, params) => inner.command(sql, params),
      ping: () => inner.ping(),
      close: () => inner.close(),
      insert: (table, rows, settings) => inner.insert(table, rows, settings),
      async insertRaw(table, text, opts) {
        if (table === 'events_v1') inserts.push(lines(text))
        return inner.insertRaw(table, text, opts)
      },
    }
    return { store: wrapped, inserts }
  }
  const event = (id: string) => ({
    source: 'writer-test',
    message_id: id,
    type: 'track',
    event: 'Grouped',
    user_id: 'writer-user',
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
  })

  it('concurrent writes share one insert, and each resolves only after it', async () => {
    const { store: s, inserts } = counting(store())
    const writer = new GroupCommitWriter(s, { flushMs: 50, maxRows: 10_000 })
    const ids = Array.from({ length: 40 }, () => uid('group'))
    await Promise.all(ids.map((id) => writer.write({ events: [event(id)], errors: [] }).then(async () => expect(await storedIds([id])).toEqual([id]))))
    expect(inserts).toEqual([40])
    await writer.close()
  })

  it('writes a block as soon as maxRows are waiting, and the remainder after a quiet flushMs', async () => {
    const { store: s, inserts } = counting(store())
    const writer = new GroupCommitWriter(s, { flushMs: 200, maxRows: 10 })
    const started = performance.now()
    await Promise.all(Array.from({ length: 25 }, () => writer.write({ events: [event(uid('size'))], errors: [] })))
    expect(inserts).toEqual([10, 10, 5])
    // The last 5 waited for the quiet period (no more writes joined), and no longer than its cap.
    expect(performance.now() - started).toBeGreaterThanOrEqual(200)
    expect(performance.now() - started).toBeLessThan(2000)
    await writer.close()
  })

  it('a burst of writes joins one block while they keep coming, up to 10 × flushMs', async () => {
    const { store: s, inserts } = counting(store())
    const writer = new GroupCommitWriter(s, { flushMs: 200, maxRows: 10_000 })
    const writes: Promise<unknown>[] = []
    // One write every 20 ms: each arrives well before the 200 ms quiet period ends.
    for (let i = 0; i < 12; i++) {
      writes.push(writer.write({ events: [event(uid('burst'))], errors: [] }))
      await new Promise((r) => setTimeout(r, 20))
    }
    await Promise.all(writes)
    expect(inserts.reduce((a, b) => a + b, 0)).toBe(12)
    // 12 writes over ~240 ms: one block, or two if the machine stalls for a whole quiet period.
    expect(inserts.length).toBeLessThanOrEqual(2)
    await writer.close()
  })

  it('a failed insert rejects every write of the block with StoreUnavailableError', async () => {
    const writer = new GroupCommitWriter(store(), { flushMs: 20, maxRows: 10_000 })
    await store().command('ALTER TABLE events_v1 ADD CONSTRAINT test_refuse_writer CHECK 0')
    let results: PromiseSettledResult<unknown>[]
    try {
      results = await Promise.allSettled([1, 2, 3].map(() => writer.write({ events: [event(uid('fail'))], errors: [] })))
    } finally {
      await store().command('ALTER TABLE events_v1 DROP CONSTRAINT test_refuse_writer')
    }
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected'])
    for (const r of results) expect((r as PromiseRejectedResult).reason).toBeInstanceOf(StoreUnavailableError)
    await writer.close()
  })

  it('refuses writes with StoreUnavailableError while more than maxPendingRows wait for a slow store', async () => {
    // The real store, with its inserts held until released: a store that has fallen behind.
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    const slow: Store = { ...store(), insertRaw: async (table, text, opts) => (await held, store().insertRaw(table, text, opts)) }
    const writer = new GroupCommitWriter(slow, { flushMs: 1, maxRows: 10, maxPendingRows: 20 })
    const first = writer.write({ events: Array.from({ length: 10 }, () => event(uid('held'))), errors: [] }) // flushing, held
    const waiting = [1, 2].map(() => writer.write({ events: Array.from({ length: 10 }, () => event(uid('waiting'))), errors: [] }))
    await expect(writer.write({ events: [event(uid('refused'))], errors: [] })).rejects.toThrow(/not keeping up: 20 rows are waiting/)
    release()
    await Promise.all([first, ...waiting])
    await writer.close()
  })

  /** The real store, with the first events insert held until released (and made to fail if asked). */
  function gated(opts: { failFirst: boolean }) {
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    const calls: { table: string; rows: number }[] = []
    let eventsInserts = 0
    const s: Store = {
      ...store(),
      async insert(table, rows, settings) {
        calls.push({ table, rows: rows.length })
        return store().insert(table, rows, settings)
      },
      async insertRaw(table, text, rawOpts) {
        calls.push({ table, rows: lines(text) })
        if (table === 'events_v1' && eventsInserts++ === 0) {
          await held
          if (opts.failFirst) throw new Error('refused for the test')
        }
        return store().insertRaw(table, text, rawOpts)
      },
    }
    return { store: s, calls, release }
  }

  it('pipelines two flushes: the second prepares during the first insert, and overlapping ids are stored once', async () => {
    const g = gated({ failFirst: false })
    const writer = new GroupCommitWriter(g.store, { flushMs: 1, maxRows: 5 })
    const ids = Array.from({ length: 7 }, () => uid('pipe'))
    const order: string[] = []
    const first = writer.write({ events: ids.slice(0, 5).map(event), errors: [] }).then(() => order.push('first'))
    await until(() => g.calls.some((c) => c.table === 'events_v1'), { timeoutMs: 5000, everyMs: 5 })
    // ids 2..4 are in both blocks; the second block is written while the first is still held.
    const second = writer.write({ events: ids.slice(2).map(event), errors: [] }).then(() => order.push('second'))
    await until(() => g.calls.filter((c) => c.table === 'users_v1').length === 2, { timeoutMs: 5000, everyMs: 5 })
    expect(g.calls.filter((c) => c.table === 'events_v1')).toEqual([{ table: 'events_v1', rows: 5 }])
    g.release()
    await Promise.all([first, second])
    expect(order).toEqual(['first', 'second'])
    expect(g.calls.filter((c) => c.table === 'events_v1').map((c) => c.rows)).toEqual([5, 2])
    expect(await storedIds(ids)).toEqual([...ids].sort())
    await writer.close()
  })

  it('a failing flush fails its writes; the next flush holding the same ids stores them once', async () => {
    const g = gated({ failFirst: true })
    const writer = new GroupCommitWriter(g.store, { flushMs: 1, maxRows: 5 })
    const ids = Array.from({ length: 7 }, () => uid('pipefail'))
    const first = writer.write({ events: ids.slice(0, 5).map(event), errors: [] })
    await until(() => g.calls.some((c) => c.table === 'events_v1'), { timeoutMs: 5000, everyMs: 5 })
    const second = writer.write({ events: ids.slice(2).map(event), errors: [] })
    await until(() => g.calls.filter((c) => c.table === 'users_v1').length === 2, { timeoutMs: 5000, everyMs: 5 })
    g.release()
    await expect(first).rejects.toBeInstanceOf(StoreUnavailableError)
    await second
    // The second block stored its own ids, including those the failed block held.
    expect(await storedIds(ids)).toEqual(ids.slice(2).sort())
    // The client retries the failed block: only its missing ids are added.
    await writer.write({ events: ids.slice(0, 5).map(event), errors: [] })
    expect(await storedIds(ids)).toEqual([...ids].sort())
    await writer.close()
  })

  it('the seen cache skips users/accounts/memberships rows the store covers, and still writes traits and widened spans', async () => {
    const written: Record<string, object[]> = {}
    const s: Store = {
      ...store(),
      insert: (table, rows, settings) => {
        ;(written[table] ??= []).push(...rows)
        return store().insert(table, rows, settings)
      },
    }
    const writer = new GroupCommitWriter(s, { flushMs: 0, maxRows: 10_000, seenCacheEntries: 1000 })
    const user = uid('seen-user')
    const account = uid('seen-acc')
    const t0 = Date.UTC(2026, 0, 10, 12)
    const at = (ms: number, extra: Partial<ReturnType<typeof event>> = {}) => ({ ...event(uid('seen')), user_id: user, account_id: account, timestamp: chTime(ms), ...extra })
    const rows = (table: string) => (written[table] ?? []).filter((r) => (r as { user_id?: string; account_id?: string }).user_id === user || (r as { account_id?: string }).account_id === account)
    const counts = () => [rows('users_v1').length, rows('accounts_v1').length, rows('memberships_v1').length]
    await writer.write({ events: [at(t0)], errors: [] })
    expect(counts()).toEqual([1, 1, 1])
    // Within 60 s after the stored last_seen: covered, nothing rewritten; a changed trait is still written.
    await writer.write({ events: [at(t0 + 30_000, { type: 'identify', traits: '{"plan":"pro"}' })], errors: [] })
    expect(counts()).toEqual([1, 1, 1])
    expect(rows('user_traits_v1')).toEqual([expect.objectContaining({ user_id: user, key: 'plan', value: '"pro"' })])
    // An earlier first_seen, or a last_seen more than 60 s later, is written.
    await writer.write({ events: [at(t0 - 1000)], errors: [] })
    expect(counts()).toEqual([2, 2, 2])
    await writer.write({ events: [at(t0 + 61_000)], errors: [] })
    expect(counts()).toEqual([3, 3, 3])
    const [seen] = await store().query<{ first_seen: string; last_seen: string }>(
      'SELECT min(first_seen) AS first_seen, max(last_seen) AS last_seen FROM users_v1 WHERE user_id = {user:String}',
      { user },
    )
    expect(seen).toEqual({ first_seen: chTime(t0 - 1000), last_seen: chTime(t0 + 61_000) })
    await writer.close()
  })

  it('close() flushes what is waiting, then refuses new writes', async () => {
    const writer = new GroupCommitWriter(store(), { flushMs: 1000, maxRows: 10_000 })
    const id = uid('closing')
    const pending = writer.write({ events: [event(id)], errors: [] })
    await writer.close()
    await pending
    expect(await storedIds([id])).toEqual([id])
    await expect(writer.write({ events: [event(uid('late'))], errors: [] })).rejects.toBeInstanceOf(StoreUnavailableError)
  })
})

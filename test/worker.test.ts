import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ADMIN_TOKEN } from './harness.js'
import { type CapturedRequest, type ClickHouseHttp, startClickHouseHttp, startTestWorker, type TestWorker } from './worker-harness.js'
import { until } from './poll.js'

// The Worker in workerd (wrangler dev, local queues) in front of ClickHouse's HTTP interface:
// what it answers, what its queue consumer sends to ClickHouse, and what ends up stored.

let ch: ClickHouseHttp
let w: TestWorker
beforeAll(async () => {
  ch = await startClickHouseHttp()
  w = await startTestWorker({ clickhouse: ch })
})
afterAll(async () => {
  await w?.dispose()
  await ch?.close()
})

const run = `w${Date.now().toString(36)}`
let seq = 0
const mid = () => `${run}-${++seq}`

const stored = async (ids: string[]) =>
  Number((await ch.store.query<{ n: number }>('SELECT count() AS n FROM events_v1 WHERE message_id IN {ids:Array(String)}', { ids }))[0]?.n ?? 0)
/** Wait until exactly `ids.length` events with these message ids are stored. */
const storedOnce = (ids: string[]) => until(async () => (await stored(ids)) === ids.length, { what: `${ids.length} events to be stored`, timeoutMs: 20_000 })
const since = (n: number) => ch.requests.slice(n)

describe('the Worker in workerd', () => {
  it('answers /ready through ClickHouse over HTTP, with the configured credentials and database', async () => {
    const before = ch.requests.length
    const res = await fetch(`${w.url}/ready`)
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ status: 'ready', store: 'server', checks: { store: { ok: true }, writes: { ok: true }, outbox: { ok: true } } })
    const [ping] = since(before)
    expect(ping).toMatchObject({ user: ch.user, password: ch.password, status: 200 })
  })

  it('queues a track call; the consumer inserts it over HTTP as ClickHouse expects (statement, settings, JSONEachRow rows)', async () => {
    const id = mid()
    const before = ch.requests.length
    const res = await w.post('/v1/track', { userId: 'u1', event: 'Signed Up', messageId: id, properties: { plan: 'free' }, context: { groupId: 'acme' } })
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ success: true })
    await storedOnce([id])

    const sent = since(before)
    const insert = sent.find((r) => r.statement === 'INSERT INTO events_v1 FORMAT JSONEachRow') as CapturedRequest
    expect(insert).toBeDefined()
    expect(insert).toMatchObject({ method: 'POST', path: '/', user: ch.user, password: ch.password, status: 200 })
    expect(insert.params).toMatchObject({
      database: 'signalbox',
      insert_deduplicate: '1',
      deduplicate_blocks_in_dependent_materialized_views: '1',
      date_time_input_format: 'best_effort',
    })
    expect(insert.params.insert_deduplication_token).toMatch(/^[0-9a-f]{32}:events_v1:[0-9a-f]{32}$/)
    // One JSON object per line, with exactly the table's insertable columns (not message_key, which ClickHouse computes).
    const lines = insert.body.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
    const columns = (
      await ch.store.query<{ name: string }>(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'events_v1' AND default_kind NOT IN ('MATERIALIZED', 'ALIAS')",
      )
    ).map((c) => c.name)
    expect(lines).toHaveLength(1)
    expect(Object.keys(lines[0] as object).sort()).toEqual(columns.sort())
    expect(lines[0]).toMatchObject({ source: 'web', message_id: id, type: 'track', event: 'Signed Up', user_id: 'u1', account_id: 'acme', properties: '{"plan":"free"}' })

    // Derived tables go before the events row, each under its own token.
    const derived = sent.filter((r) => /^INSERT INTO (users_v1|accounts_v1|memberships_v1) FORMAT JSONEachRow$/.test(r.statement))
    expect(derived.map((r) => r.statement).sort()).toEqual(['INSERT INTO accounts_v1 FORMAT JSONEachRow', 'INSERT INTO memberships_v1 FORMAT JSONEachRow', 'INSERT INTO users_v1 FORMAT JSONEachRow'])
    expect(sent.indexOf(insert)).toBeGreaterThan(Math.max(...derived.map((r) => sent.indexOf(r))))
    for (const r of derived) expect(r.params.insert_deduplication_token).toMatch(new RegExp(`^${insert.params.insert_deduplication_token?.slice(0, 32)}:`))

    // The dedup lookup ran first, with its values bound as parameters.
    const lookup = sent.find((r) => r.statement.startsWith('SELECT message_id FROM events_v1')) as CapturedRequest
    expect(lookup.statement).toBe('SELECT message_id FROM events_v1 WHERE source = {source:String} AND message_id IN {ids:Array(String)} \nFORMAT JSONEachRow')
    expect(lookup.params).toMatchObject({ param_source: 'web', param_ids: `['${id}']` })
    expect(sent.indexOf(lookup)).toBeLessThan(sent.indexOf(insert))
  })

  it('stores a message once, however often it is sent (dedup by source and messageId in the consumer)', async () => {
    const id = mid()
    for (let i = 0; i < 3; i++) expect((await w.post('/v1/track', { userId: 'u1', event: 'Clicked', messageId: id })).status).toBe(200)
    await storedOnce([id])
    // A later message proves the consumer has caught up: still one row for the repeated id.
    const later = mid()
    await w.post('/v1/track', { userId: 'u1', event: 'Clicked', messageId: later })
    await storedOnce([later])
    expect(await stored([id])).toBe(1)
  })

  it('takes a batch near 500 KB: split into queue messages within the Queue limits, every message stored once, every URL under 16 KB', async () => {
    const before = ch.requests.length
    const batch = Array.from({ length: 2500 }, () => ({ type: 'track', messageId: mid(), userId: `u-${seq % 50}`, event: 'Message Sent', properties: { text: 'x'.repeat(60) } }))
    const body = JSON.stringify({ batch })
    expect(body.length).toBeGreaterThan(300_000)
    expect(body.length).toBeLessThan(500 * 1024)
    const res = await w.post('/v1/batch', body)
    // The local queue enforces 128 KB per message and 100 messages / 256 KB per sendBatch: a
    // single message or call over them would have failed the request.
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ success: true, accepted: 2500, rejected: [] })
    await storedOnce(batch.map((m) => m.messageId))
    const sent = since(before)
    expect(Math.max(...sent.map((r) => r.urlBytes))).toBeLessThan(16 * 1024)
    // The lookup of 2,500 ids did not fit in a URL: its parameters went in a form body.
    const lookups = sent.filter((r) => r.statement.startsWith('SELECT message_id FROM events_v1'))
    expect(lookups.some((r) => r.form)).toBe(true)
    expect(lookups.every((r) => r.status === 200)).toBe(true)
  })

  it('keeps the rejected messages of a batch, with the reason, in ingest_errors_v1', async () => {
    const good = mid()
    const bad = mid()
    const res = await w.post('/v1/batch', { batch: [{ type: 'track', messageId: good, userId: 'u', event: 'e' }, { type: 'track', messageId: bad, userId: 'u' }] })
    expect(await res.json()).toMatchObject({ accepted: 1, rejected: [{ index: 1, path: 'event' }] })
    const row = await until(
      async () => (await ch.store.query<{ level: string; path: string; route: string }>('SELECT level, path, route FROM ingest_errors_v1 WHERE message_id = {id:String}', { id: bad }))[0],
      { what: 'the rejected message to be recorded', timeoutMs: 20_000 },
    )
    expect(row).toEqual({ level: 'error', path: 'event', route: '/v1/batch' })
    await storedOnce([good])
  })
})

describe('the queue consumer', () => {
  it('retries a batch that failed half-way; the retry repeats the derived rows under the same tokens and stores the events once', async () => {
    const id = mid()
    let failed = 0
    // The derived rows and the error rows are in; the events insert (the commit record) fails.
    ch.failWhen = (r) => r.statement === 'INSERT INTO events_v1 FORMAT JSONEachRow' && r.body.includes(id) && ++failed === 1
    const before = ch.requests.length
    try {
      const res = await w.post('/v1/batch', { batch: [{ type: 'group', messageId: id, userId: 'u7', groupId: 'acme', traits: { plan: 'pro' } }, { type: 'track', userId: 'u7' }] })
      expect(res.status).toBe(200)
      await storedOnce([id])
    } finally {
      ch.failWhen = undefined
    }
    const mine = since(before).filter((r) => r.body.includes(id) || r.body.includes('u7'))
    const attempts = (table: string) => mine.filter((r) => r.statement === `INSERT INTO ${table} FORMAT JSONEachRow`)
    expect(attempts('events_v1').map((r) => r.status)).toEqual([503, 200])
    for (const table of ['account_traits_v1', 'memberships_v1', 'ingest_errors_v1']) {
      const [first, second] = attempts(table)
      expect(first?.params.insert_deduplication_token, table).toMatch(new RegExp(`^[0-9a-f]{32}:${table}:[0-9a-f]{32}$`))
      // A Replicated table drops the second block: same token, same rows.
      expect(second?.params.insert_deduplication_token, table).toBe(first?.params.insert_deduplication_token)
      expect(second?.body).toBe(first?.body)
    }
  })

  it('dead-letters a batch after max_retries, and a consumer on the dead-letter queue replays it once ClickHouse is back', async () => {
    const dl = await startTestWorker({ clickhouse: ch, maxRetries: 2, replayDeadLetters: true })
    const id = mid()
    let failures = 0
    // Each try of the batch starts with the dedup lookup: fail the first 4 tries. The main queue
    // gives up after 3 (max_retries = 2), the dead-letter queue's consumer fails once more, then
    // stores it. Without the dead-letter queue the message would be gone.
    ch.failWhen = (r) => r.statement.startsWith('SELECT message_id FROM events_v1') && r.params.param_ids?.includes(id) === true && ++failures <= 4
    try {
      expect((await dl.post('/v1/track', { userId: 'u1', event: 'Dead Lettered', messageId: id })).status).toBe(200)
      await storedOnce([id])
      expect(failures).toBe(5)
    } finally {
      ch.failWhen = undefined
      await dl.dispose()
    }
  })
})

describe('rule evaluation on the edge', () => {
  const putRule = (id: string, event: string) =>
    w.admin(`/v1/rules/${id}`, {
      method: 'PUT',
      body: JSON.stringify({ id, kind: 'pql', subject: 'account', when: { all: [{ metric: 'count', event, window: '7d', op: 'gte', value: 2 }] } }),
    })
  const signals = (rule: string) =>
    ch.store.query<{ subject_id: string; status: string }>('SELECT subject_id, status FROM signals_v1 FINAL WHERE rule_id = {rule:String} ORDER BY subject_id', { rule })
  const twice = (account: string, event: string) => [0, 1].map(() => ({ type: 'track', messageId: mid(), userId: `u-${account}`, event, context: { groupId: account } }))

  it('the Cron Trigger evaluates the rules as SQL on ClickHouse and records each signal once', async () => {
    const accounts = ['edge-a', 'edge-b', 'edge-c']
    const batch = accounts.flatMap((a) => twice(a, 'Edge Used'))
    expect((await w.post('/v1/batch', { batch })).status).toBe(200)
    await storedOnce(batch.map((m) => m.messageId))
    expect((await putRule('edge-pql', 'Edge Used')).status).toBeLessThan(300)
    expect(await signals('edge-pql')).toEqual([])

    const before = ch.requests.length
    const cron = await fetch(`${w.url}/cdn-cgi/handler/scheduled?cron=*+*+*+*+*`)
    expect(cron.status).toBe(200)
    expect(await signals('edge-pql')).toEqual(accounts.map((subject_id) => ({ subject_id, status: 'open' })))
    // The rule ran inside ClickHouse, with its values bound as parameters.
    const compiled = since(before).filter((r) => /FROM events_v1/.test(r.statement) && Object.keys(r.params).some((k) => k.startsWith('param_')))
    expect(compiled.length).toBeGreaterThan(0)
    expect(compiled.every((r) => !r.statement.includes('Edge Used'))).toBe(true)

    // The next trigger finds them open: nothing fires twice.
    expect((await fetch(`${w.url}/cdn-cgi/handler/scheduled?cron=*+*+*+*+*`)).status).toBe(200)
    const [row] = await ch.store.query<{ n: number }>("SELECT count() AS n FROM signal_events_v1 WHERE rule_id = 'edge-pql' AND type = 'signal.fired'")
    expect(Number(row?.n)).toBe(3)
  })

  it('the queue consumer evaluates the subjects a batch touched right after storing it', async () => {
    expect((await putRule('edge-touch', 'Edge Touched')).status).toBeLessThan(300)
    expect((await w.post('/v1/batch', { batch: twice('edge-t', 'Edge Touched') })).status).toBe(200)
    const fired = await until(async () => ((await signals('edge-touch')).length ? await signals('edge-touch') : undefined), { what: 'the signal of the touched account', timeoutMs: 20_000 })
    expect(fired).toEqual([{ subject_id: 'edge-t', status: 'open' }])
  })
})

describe('configuration from bindings', () => {
  it('validates the bindings with the same schema as Node; a bad one answers 500 naming the variable, never its value', async () => {
    const bad = await startTestWorker({ clickhouse: { url: '' }, vars: { WRITE_KEYS: 'short', RATE_LIMIT_PER_SECOND: 'fast' } })
    try {
      const res = await fetch(`${bad.url}/health`)
      expect(res.status).toBe(500)
      const body = (await res.json()) as { error: { code: string; message: string } }
      expect(body.error.code).toBe('INTERNAL_SERVER_ERROR')
      expect(body.error.message).toMatch(/configuration is invalid: .*WRITE_KEYS/)
      expect(body.error.message).toContain('RATE_LIMIT_PER_SECOND')
      expect(body.error.message).toContain('CLICKHOUSE_URL')
      expect(body.error.message).not.toContain('short')
      expect(JSON.stringify(body)).not.toContain(ADMIN_TOKEN)
    } finally {
      await bad.dispose()
    }
  })
})

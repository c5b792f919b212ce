import { join } from 'node:path'
import { ClickHouseLogLevel, createClient as createNodeClient } from '@clickhouse/client'
import { createClient as createWebClient } from '@clickhouse/client-web'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EVENT_COLUMNS, type EventRow, eventsTsv, tsvField } from '../ingest/normalize.js'
import { chTime } from '../src/time.js'
import { insertEvents } from '../ingest/writer.js'
import { serveClickHouseHttp } from '../src/edge/local-clickhouse.js'
import { loadConfig } from '../src/config.js'
import { migrate } from '../src/store/migrate.js'
import { openStore } from '../src/store/node.js'
import { CLIENT_SETTINGS, type Store, storeFromClient } from '../src/store/store.js'
import { tempDir } from './harness.js'

// Store.insertRaw on the three clients signalbox uses: the embedded engine (chDB, raw buffer),
// a ClickHouse server over HTTP from Node, and from Workers (client-web). The server is the
// local ClickHouse HTTP interface answered by the same embedded engine (one data directory per
// process), so every store reads back what any of them wrote.

const USER = 'raw_user'
const PASSWORD = 'raw_password'
let embedded: Store
let http: Awaited<ReturnType<typeof serveClickHouseHttp>>
const stores: Record<string, Store> = {}

beforeAll(async () => {
  const dataDir = tempDir('signalbox-raw-')
  embedded = await openStore(loadConfig({ DATA_DIR: dataDir }))
  await migrate(embedded)
  http = await serveClickHouseHttp({ path: join(dataDir, 'clickhouse'), user: USER, password: PASSWORD, database: 'default' })
  const common = { url: http.url, username: USER, password: PASSWORD, database: 'default', clickhouse_settings: CLIENT_SETTINGS }
  stores.embedded = embedded
  // The client's own error log is off: failures reach the tests as rejections.
  stores['node http'] = storeFromClient(createNodeClient({ ...common, log: { level: ClickHouseLogLevel.OFF } }), 'server')
  stores['web http'] = storeFromClient(createWebClient({ ...common, keep_alive: { enabled: false } }), 'server')
})
afterAll(async () => {
  await stores['node http']?.close()
  await stores['web http']?.close()
  await http?.close()
  await embedded?.close()
})

/** Text that every layer could get wrong: quotes, backslashes, escapes, control characters, unicode. */
const NASTY = `a "quoted" 'single' back\\slash \\N \\t tab\there new\nline cr\rhere nul\u0000byte é 中文 😀 \u2028`

const row = (messageId: string, extra: Partial<EventRow> = {}): EventRow => ({
  source: 'raw-test',
  message_id: messageId,
  type: 'track',
  event: NASTY,
  user_id: 'raw-user',
  anonymous_id: '',
  account_id: '',
  timestamp: chTime(Date.UTC(2026, 10, 23, 10, 0, 0, 123)),
  original_timestamp: null,
  sent_at: chTime(Date.UTC(2026, 10, 23, 10, 0, 1, 456)),
  received_at: chTime(Date.UTC(2026, 10, 23, 10, 0, 2, 789)),
  properties: JSON.stringify({ text: NASTY, nested: { list: [1, null, 'x\\y'], empty: {} }, nothing: null }),
  traits: '{}',
  context: JSON.stringify({ ip: '10.0.0.1', page: { title: NASTY } }),
  previous_id: '',
  ...extra,
})

const stored = (store: Store, ids: string[]) =>
  store.query<EventRow>(
    `SELECT ${EVENT_COLUMNS.join(', ')} FROM events_v1 WHERE source = 'raw-test' AND message_id IN {ids:Array(String)} ORDER BY message_id`,
    { ids },
  )

describe('Store.insertRaw', () => {
  it('escapes TabSeparated fields so that every string reads back as it was', () => {
    expect(tsvField('plain text, "quotes" and é')).toBe('plain text, "quotes" and é')
    expect(tsvField('a\\b\tc\nd\re\u0000f')).toBe('a\\\\b\\tc\\nd\\re\\0f')
    expect(tsvField('\\N')).toBe('\\\\N')
    const line = eventsTsv([row('line')])
    expect(line.endsWith('\n')).toBe(true)
    expect(line.slice(0, -1).split('\t')).toHaveLength(EVENT_COLUMNS.length)
  })

  for (const name of ['embedded', 'node http', 'web http']) {
    it(`${name}: events rows round-trip exactly, nulls and empty strings included`, async () => {
      const store = stores[name] as Store
      const rows = [
        row(`${name}-1`),
        row(`${name}-2`, { original_timestamp: chTime(Date.UTC(2026, 10, 23, 9, 59, 59, 1)), sent_at: null, anonymous_id: 'anon\t1', previous_id: 'p\\1' }),
        row(`${name}-3`, { event: '', properties: '{}', context: '{}', user_id: '' }),
      ]
      await insertEvents(store, eventsTsv(rows))
      // Read back through the embedded store: what the engine holds, not what a client decodes.
      expect(await stored(embedded, rows.map((r) => r.message_id))).toEqual(rows)
      expect(JSON.parse((await stored(store, [`${name}-1`]))[0]?.properties as string)).toEqual({ text: NASTY, nested: { list: [1, null, 'x\\y'], empty: {} }, nothing: null })
    })

    it(`${name}: JSONEachRow text, bytes as well as a string; empty text inserts nothing`, async () => {
      const store = stores[name] as Store
      const rows = [row(`${name}-json-1`), row(`${name}-json-2`, { properties: '{"a":"\\u0000"}' })]
      await store.insertRaw('events_v1', `${JSON.stringify(rows[0])}\n`, { format: 'JSONEachRow' })
      await store.insertRaw('events_v1', new TextEncoder().encode(`${JSON.stringify(rows[1])}\n`), { format: 'JSONEachRow' })
      await store.insertRaw('events_v1', '', { format: 'JSONEachRow' })
      expect(await stored(embedded, rows.map((r) => r.message_id))).toEqual(rows)
    })
  }

  it('refuses names that are not plain identifiers, and formats it does not know', async () => {
    await expect(embedded.insertRaw('events_v1; DROP TABLE x', 'x\n', { format: 'TabSeparated' })).rejects.toThrow(/not a plain identifier/)
    await expect(embedded.insertRaw('events_v1', 'x\n', { format: 'TabSeparated', columns: ['a b'] })).rejects.toThrow(/not a plain identifier/)
    await expect(embedded.insertRaw('events_v1', 'x\n', { format: 'Native' as 'TabSeparated' })).rejects.toThrow(/unsupported raw insert format/)
  })

  it('over HTTP, a last row ending in whitespace (which the client would trim) fails instead of losing its last field', async () => {
    const text = 'a\tb\t\n'
    await expect((stores['node http'] as Store).insertRaw('events_v1', text, { format: 'TabSeparated', columns: ['source', 'message_id', 'event'] })).rejects.toThrow(
      /ends in whitespace/,
    )
  })

  it('a bad row fails the whole insert and stores nothing', async () => {
    for (const name of ['embedded', 'node http', 'web http']) {
      const good = eventsTsv([row(`${name}-bad-1`)])
      await expect(insertEvents(stores[name] as Store, `${good}not\ta\trow\n`)).rejects.toThrow()
      expect(await stored(embedded, [`${name}-bad-1`])).toEqual([])
    }
  })
})

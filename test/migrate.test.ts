import { rmSync } from 'node:fs'
import { afterAll, describe, expect, it } from 'vitest'
import { loadConfig } from '../src/config.js'
import { migrate, readMigrations } from '../src/store/migrate.js'
import { openStore } from '../src/store/node.js'
import { tempDir } from './harness.js'

const dir = tempDir('signalbox-migrate-')
const store = await openStore(loadConfig({ DATA_DIR: dir }))
afterAll(async () => {
  await store.close()
  rmSync(dir, { recursive: true, force: true })
})

const row = (source: string, id: string) => ({
  source,
  message_id: id,
  type: 'track',
  event: 'Message Sent',
  user_id: 'u1',
  anonymous_id: '',
  account_id: '',
  timestamp: '2026-03-01 10:00:00.000',
  original_timestamp: null,
  sent_at: null,
  received_at: '2026-03-01 10:00:00.000',
  properties: '{}',
  traits: '{}',
  context: '{}',
  previous_id: '',
})

describe('migration 016 (events_v1.message_key)', () => {
  it('keys the rows stored before it and after it alike, and a message stored twice has one key', async () => {
    const all = readMigrations()
    await migrate(store, all.filter((m) => m.version < 16))
    // Stored before the column existed; m1 twice, as a retry around the writer would.
    await store.insert('events_v1', [row('app', 'm1'), row('app', 'm1'), row('web', 'm1')])
    expect(await migrate(store, all)).toEqual(['016_add_events_message_key_v1'])
    await store.insert('events_v1', [row('app', 'm2'), row('app', 'm1')])
    const [r] = await store.query<{ rows: number; keyed: number; messages: number }>(
      `SELECT count() AS rows, countIf(message_key = cityHash64(source, message_id)) AS keyed, uniqExact(message_key) AS messages FROM events_v1`,
    )
    expect(r).toEqual({ rows: 5, keyed: 5, messages: 3 })
    // Applied once: a second start has nothing to do.
    expect(await migrate(store, all)).toEqual([])
  })
})

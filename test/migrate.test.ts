import { afterAll, describe, expect, it } from 'vitest'
import { chTime } from '../src/time.js'
import { loadConfig } from '../src/config.js'
import { migrate, readMigrations } from '../src/store/migrate.js'
import { openStore } from '../src/store/node.js'
import { removeDir, tempDir } from './harness.js'

const dir = tempDir('signalbox-migrate-')
const store = await openStore(loadConfig({ DATA_DIR: dir }))
afterAll(async () => {
  await store.close()
  removeDir(dir)
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
    expect(await migrate(store, all.filter((m) => m.version <= 16))).toEqual(['016_add_events_message_key_v1'])
    await store.insert('events_v1', [row('app', 'm2'), row('app', 'm1')])
    const [r] = await store.query<{ rows: number; keyed: number; messages: number }>(
      `SELECT count() AS rows, countIf(message_key = cityHash64(source, message_id)) AS keyed, uniqExact(message_key) AS messages FROM events_v1`,
    )
    expect(r).toEqual({ rows: 5, keyed: 5, messages: 3 })
    // Applied once: a second start has nothing to do.
    expect(await migrate(store, all.filter((m) => m.version <= 16))).toEqual([])
  })
})

describe('migration 017 (signal_claims_v1 expiry)', () => {
  it('drops claims stored more than 30 days ago, whatever moment the evaluator claimed them at', async () => {
    // Up to 017 only: later migrations are not this test's subject.
    const upTo17 = readMigrations().filter((m) => m.version <= 17)
    expect(await migrate(store, upTo17)).toEqual(['017_expire_signal_claims_v1'])
    expect(await migrate(store, upTo17)).toEqual([])
    const ago = (days: number) => chTime(Date.now() - days * 86_400_000)
    // stored_at is a DateTime (seconds).
    const agoSeconds = (days: number) => ago(days).slice(0, 19)
    const claim = (key: string, claimed_at: string, stored_at?: string) => ({ claim_key: key, owner: 'o', signal_id: `sig_${key}`, signal: '{}', claimed_at, ...(stored_at ? { stored_at } : {}) })
    await store.insert('signal_claims_v1', [
      claim('old', ago(1), agoSeconds(31)),
      claim('recent', ago(1), agoSeconds(29)),
      // An evaluator whose clock is set in the past (tests, replays) claims now: kept.
      claim('now', ago(400)),
    ])
    // TTL is applied by merges; a final merge applies it now.
    await store.command('OPTIMIZE TABLE signal_claims_v1 FINAL')
    const rows = await store.query<{ claim_key: string }>('SELECT claim_key FROM signal_claims_v1 ORDER BY claim_key')
    expect(rows.map((r) => r.claim_key)).toEqual(['now', 'recent'])
  })
})

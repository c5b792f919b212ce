import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadConfig } from '../src/config.js'
import { openStore } from '../src/store/node.js'
import type { Store } from '../src/store/store.js'
import { tempDir } from './harness.js'

// chDB keeps a connection's settings from one statement to the next: a deduplication token given
// to one insert was reused by the next insert on the connection, which a table with a
// deduplication window (delivery leases, signal claims, rule versions) then dropped unseen.

let store: Store
beforeAll(async () => {
  store = await openStore(loadConfig({ DATA_DIR: tempDir('signalbox-settings-') }))
  await store.command('CREATE TABLE windowed (a String) ENGINE = MergeTree ORDER BY a SETTINGS non_replicated_deduplication_window = 100')
  await store.command('CREATE TABLE other (a String) ENGINE = MergeTree ORDER BY a')
})
afterAll(async () => {
  await store?.close()
})

describe('insert settings on the embedded store', () => {
  it('a deduplication token given to one insert is not reused by the next inserts', async () => {
    await store.insert('other', [{ a: 'x' }], { insert_deduplication_token: 'one-token' })
    await store.insert('windowed', [{ a: 'first' }])
    await store.insert('windowed', [{ a: 'second' }])
    await store.insertRaw('windowed', '{"a":"third"}\n', { format: 'JSONEachRow' })
    expect((await store.query<{ a: string }>('SELECT a FROM windowed ORDER BY a')).map((r) => r.a)).toEqual(['first', 'second', 'third'])
  })

  it('an insert under its own token is still deduplicated', async () => {
    await store.insert('windowed', [{ a: 'tok-1' }], { insert_deduplication_token: 'same' })
    await store.insert('windowed', [{ a: 'tok-2' }], { insert_deduplication_token: 'same' })
    expect((await store.query<{ a: string }>("SELECT a FROM windowed WHERE a LIKE 'tok-%'")).map((r) => r.a)).toEqual(['tok-1'])
  })
})

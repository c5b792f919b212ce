import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { GroupCommitWriter } from '../ingest/writer.js'
import { runRule } from '../rules/run.js'
import { parseRule } from '../rules/schema.js'
import { markBuiltIfEmpty, StateKeeper } from '../rules/state/keeper.js'
import { loadConfig } from '../src/config.js'
import { migrate } from '../src/store/migrate.js'
import { openStore } from '../src/store/node.js'
import type { Store } from '../src/store/store.js'
import { removeDir, tempDir } from './harness.js'
import { DAY, NOW, ev, group } from './rules-fixtures.js'

/**
 * `signalbox state rebuild`: events stored around the writer (a backfill, a restore) are missing
 * from the per-day state until it is rebuilt; after the rebuild both backends agree again. The
 * command runs in its own process on the store's DATA_DIR, as an operator runs it.
 */
const BIN = fileURLToPath(new URL('../bin/signalbox.js', import.meta.url))
const dir = tempDir('signalbox-rebuild-')
let store: Store
const open = async () => {
  store = await openStore(loadConfig({ DATA_DIR: dir }))
  return store
}
afterAll(async () => {
  await store?.close()
  removeDir(dir)
})

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH ?? '', DATA_DIR: dir }, timeout: 120_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    )
  })
}

const rule = parseRule({ id: 'r', kind: 'custom', subject: 'account', when: { all: [{ metric: 'count', window: '7d', op: 'gte', value: 1 }] } })
const both = async () =>
  Promise.all(
    (['events', 'state'] as const).map(async (backend) => (await runRule(store, rule, { asOf: NOW, subjectIds: ['acc'], backend }))[0]?.reasons[0]?.measured),
  )

beforeAll(async () => {
  await open()
  await migrate(store)
  await markBuiltIfEmpty(store, NOW)
  const writer = new GroupCommitWriter(store, { flushMs: 0, maxRows: 1000, state: new StateKeeper(store) })
  await writer.write({ events: [group('u1', 'acc', {}, NOW - 10 * DAY), ev({ at: NOW - DAY, event: 'Message Sent', userId: 'u1' })], errors: [] })
  await writer.close()
  // A restore of older rows straight into events_v1, around the writer.
  await store.insert('events_v1', [ev({ at: NOW - 2 * DAY, event: 'Message Sent', userId: 'u1', accountId: 'acc' }), ev({ at: NOW - 3 * DAY, event: 'Message Sent', userId: 'u1' })])
})

describe('signalbox state rebuild', () => {
  it('restores the state of events stored around the writer, with a progress bar', async () => {
    expect(await both()).toEqual([3, 1])
    await store.close()
    const r = await cli(['state', 'rebuild'])
    expect(r.stderr).toContain('rebuilding the per-day state')
    expect(r.stdout).toMatch(/^rebuilt the per-day state: 1 slice\(s\), 0 rule measure\(s\), [\d.]+ s\n$/)
    expect(r.code).toBe(0)
    await open()
    expect(await both()).toEqual([3, 3])
  })

  it('rebuilds from a day on: earlier days are left as they are', async () => {
    await store.insert('events_v1', [ev({ at: NOW - 5 * DAY, event: 'Message Sent', userId: 'u1' }), ev({ at: NOW - DAY, event: 'Message Sent', userId: 'u1', accountId: 'acc' })])
    expect(await both()).toEqual([5, 3])
    await store.close()
    const r = await cli(['state', 'rebuild', '--from', new Date(NOW - 2 * DAY).toISOString().slice(0, 10)])
    expect(r.stdout).toMatch(/^rebuilt the per-day state from \d{4}-\d{2}-\d{2}: 1 slice\(s\)/)
    await open()
    // The event of five days ago is before --from: still missing.
    expect(await both()).toEqual([5, 4])
  })

  it('refuses a day that is not YYYY-MM-DD, saying so', async () => {
    await store.close()
    const r = await cli(['state', 'rebuild', '--from', 'yesterday'])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('--from takes a UTC day as YYYY-MM-DD, not "yesterday"')
    await open()
  })
})

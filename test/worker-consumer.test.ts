import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type EventRow } from '../ingest/normalize.js'
import { chTime } from '../src/time.js'
import { backoff, consumeIngestBatch } from '../src/edge/consumer.js'
import { packMessages } from '../src/edge/queue-sink.js'
import type { QueueBatch, QueueMessage } from '../src/edge/types.js'
import { loadConfig } from '../src/config.js'
import { migrate } from '../src/store/migrate.js'
import { openStore } from '../src/store/node.js'
import type { Store } from '../src/store/store.js'
import { removeDir, tempDir } from './harness.js'

// The queue consumer's logic on the real embedded engine, driven with queue batches as the
// Workers runtime hands them over (ack/retry recorded). Its HTTP side is in worker.test.ts.

let real: Store
let dir: string
/** The real store, with the settings of every insert recorded. */
let inserts: { table: string; settings?: Record<string, string | number> }[] = []
let store: Store
beforeAll(async () => {
  dir = tempDir()
  real = await openStore(loadConfig({ DATA_DIR: dir }))
  await migrate(real)
  store = {
    ...real,
    kind: real.kind,
    query: (sql, params) => real.query(sql, params),
    command: (sql, params) => real.command(sql, params),
    ping: () => real.ping(),
    close: () => real.close(),
    async insert(table, rows, settings) {
      if (rows.length > 0) inserts.push({ table, settings })
      await real.insert(table, rows, settings)
    },
  }
})
afterAll(async () => {
  await real?.close()
  removeDir(dir)
})

const logger = pino({ level: 'silent' })
let seq = 0
const at = chTime(Date.parse('2026-11-20T10:00:00Z'))
const row = (id: string): EventRow => ({
  source: 'app', message_id: id, type: 'track', event: 'Report Exported', user_id: 'u1', anonymous_id: '', account_id: 'acme',
  timestamp: at, original_timestamp: null, sent_at: null, received_at: at, properties: '{}', traits: '{}', context: '{}', previous_id: '',
})

type Outcome = { acked: string[]; retried: { id: string; delaySeconds?: number }[] }
function batchOf(bodies: unknown[], attempts = 1): { batch: QueueBatch<unknown>; outcome: Outcome } {
  const outcome: Outcome = { acked: [], retried: [] }
  const messages: QueueMessage<unknown>[] = bodies.map((body) => {
    const id = `qmsg-${++seq}`
    return {
      id, body, attempts, timestamp: new Date(),
      ack: () => void outcome.acked.push(id),
      retry: (o?: { delaySeconds?: number }) => void outcome.retried.push({ id, delaySeconds: o?.delaySeconds }),
    }
  })
  return {
    outcome,
    batch: { queue: 'signalbox-ingest', messages, ackAll: () => messages.forEach((m) => m.ack()), retryAll: (o) => messages.forEach((m) => m.retry(o)) },
  }
}
const envelopes = (ids: string[]) => packMessages({ events: ids.map(row), errors: [] }).map((m) => m.row)
const count = async (ids: string[]) => Number((await real.query<{ n: number }>('SELECT count() AS n FROM events_v1 WHERE message_id IN {ids:Array(String)}', { ids }))[0]?.n)

describe('consumeIngestBatch', () => {
  it('stores the envelopes of a batch as one block per table, then acks every message', async () => {
    const ids = ['c1', 'c2', 'c3']
    const bodies = [...envelopes(ids.slice(0, 2)), ...envelopes(ids.slice(2))]
    const { batch, outcome } = batchOf(bodies)
    inserts = []
    const stored: EventRow[] = []
    const r = await consumeIngestBatch(batch, { store, logger, retryBaseSeconds: 30, onStored: (e) => void stored.push(...e) })
    expect(r).toEqual({ stored: 3, acked: 2, retried: 0, invalid: 0 })
    expect(outcome).toEqual({ acked: batch.messages.map((m) => m.id), retried: [] })
    expect(await count(ids)).toBe(3)
    expect(inserts.filter((i) => i.table === 'events_v1')).toHaveLength(1)
    expect(stored.map((e) => e.message_id)).toEqual(ids)
  })

  it('stores a redelivered batch once, and sends the same tokens for the same rows', async () => {
    const bodies = envelopes(['r1', 'r2'])
    inserts = []
    await consumeIngestBatch(batchOf(bodies).batch, { store, logger, retryBaseSeconds: 30 })
    const first = inserts.map((i) => i.settings?.insert_deduplication_token)
    inserts = []
    const again = batchOf(bodies, 2)
    const r = await consumeIngestBatch(again.batch, { store, logger, retryBaseSeconds: 30 })
    expect(r.stored).toBe(0)
    expect(again.outcome.acked).toHaveLength(1)
    expect(await count(['r1', 'r2'])).toBe(2)
    // Nothing new to insert for the events; derived rows (none new either) would reuse the tokens.
    expect(inserts.filter((i) => i.table === 'events_v1')).toEqual([])
    expect(first.every((t) => typeof t === 'string' && /^[0-9a-f]{32}:\w+:[0-9a-f]{32}$/.test(t))).toBe(true)
  })

  it('retries every message of a batch the store refuses, with exponential backoff, acking none', async () => {
    await real.command('DETACH TABLE events_v1')
    try {
      const { batch, outcome } = batchOf(envelopes(['f1']), 4)
      const r = await consumeIngestBatch(batch, { store, logger, retryBaseSeconds: 30 })
      expect(r).toMatchObject({ stored: 0, acked: 0, retried: 1 })
      expect(outcome).toEqual({ acked: [], retried: [{ id: batch.messages[0]?.id, delaySeconds: 240 }] })
    } finally {
      await real.command('ATTACH TABLE events_v1')
    }
    expect(await count(['f1'])).toBe(0)
  })

  it('never acks what is not an ingestion envelope (it reaches the dead-letter queue), and still stores the rest', async () => {
    const { batch, outcome } = batchOf([{ hello: 'world' }, ...envelopes(['g1'])])
    const r = await consumeIngestBatch(batch, { store, logger, retryBaseSeconds: 5 })
    expect(r).toEqual({ stored: 1, acked: 1, retried: 1, invalid: 1 })
    expect(outcome.retried).toEqual([{ id: batch.messages[0]?.id, delaySeconds: 5 }])
    expect(outcome.acked).toEqual([batch.messages[1]?.id])
  })

  it('backs off exponentially up to the 12-hour cap of Cloudflare Queues', () => {
    expect([1, 2, 3, 4].map((a) => backoff(a, 30))).toEqual([30, 60, 120, 240])
    expect(backoff(30, 30)).toBe(43_200)
    expect(backoff(1, 0)).toBe(0)
  })
})

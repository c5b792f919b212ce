/**
 * The ceiling for bench/ingest.ts: the same rows (the events_v1 row of each benchmark message, built
 * by the same normalisation as the server) inserted straight into events_v1 of a fresh embedded
 * store, in BLOCK-row blocks (10,000 unless set), in the server's insert format (TabSeparated text through
 * `Store.insertRaw`), encoded before the clock starts: the fastest way to put these rows into
 * the engine. Run as its own process; prints one JSON line: `{ rows, seconds, rowsPerSecond }`.
 */
import { rmSync } from 'node:fs'
import { eventsTsv, toEventRow } from '../ingest/normalize.js'
import { checkMessage } from '../ingest/routes.js'
import { insertEvents } from '../ingest/writer.js'
import { loadConfig } from '../src/config.js'
import { migrate } from '../src/store/migrate.js'
import { openStore } from '../src/store/node.js'
import { batchJson } from './ingest-data.js'

const EVENTS = Number(process.env.EVENTS ?? 300_000)
const BLOCK = Number(process.env.BLOCK ?? 10_000)
const DATA_DIR = process.env.DATA_DIR as string

const store = await openStore(loadConfig({ DATA_DIR }))
await migrate(store)

// Built and encoded before the clock starts: the ceiling measures inserting, not preparing.
const blocks: Buffer[] = []
for (let first = 0; first < EVENTS; first += BLOCK) {
  const receivedAt = Date.now()
  const { batch, sentAt } = JSON.parse(batchJson('ceiling', first, Math.min(BLOCK, EVENTS - first), receivedAt)) as { batch: unknown[]; sentAt: string }
  const rows = batch.map((raw) => {
    const checked = checkMessage(raw)
    if (!checked.ok) throw new Error(JSON.stringify(checked.details))
    return toEventRow(checked.message, 'default', receivedAt, Date.parse(sentAt)).row
  })
  blocks.push(Buffer.from(eventsTsv(rows)))
}

const cpuBefore = process.cpuUsage()
const started = performance.now()
for (const text of blocks) await insertEvents(store, text)
const seconds = (performance.now() - started) / 1000
const cpu = process.cpuUsage(cpuBefore)
const [count] = await store.query<{ n: number }>('SELECT count() AS n FROM events_v1')
await store.close()
rmSync(DATA_DIR, { recursive: true, force: true })
if (Number(count?.n) !== EVENTS) throw new Error(`stored ${count?.n} rows, expected ${EVENTS}`)
process.stdout.write(`${JSON.stringify({ rows: EVENTS, seconds, rowsPerSecond: EVENTS / seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6 })}\n`)

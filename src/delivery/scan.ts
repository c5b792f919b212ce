import type { Store } from '../store/store.js'
import { newDelivery } from './deliver.js'
import { eventIdFloor, idTime } from './ids.js'
import { type LogRow, readLog } from './log.js'
import { type DeliveryRecord, OutboxStore } from './outbox.js'
import { type WebhookRecord, webhookWants } from './webhooks.js'

const PAGE = 1000

/**
 * The deliveries these log rows call for: one per (active endpoint that wants the event's kind
 * and rule, event made while the endpoint was active), with the deterministic id of the pair.
 */
export function deliveriesFor(rows: readonly LogRow[], endpoints: readonly WebhookRecord[], now: number): DeliveryRecord[] {
  const out: DeliveryRecord[] = []
  for (const row of rows) {
    const eventTime = idTime(row.event_id)
    for (const w of endpoints) {
      if (!w.enabled || w.deleted || eventTime < w.active_since || !webhookWants(w, row.kind, row.rule_id)) continue
      out.push(newDelivery(w.id, row, now))
    }
  }
  return out
}

/**
 * One scan of the signal log for the webhook outbox, the same on Node (the dispatcher) and on the
 * edge (the Cron Trigger): read the log after `cursor`, less `settleMs` (concurrent writers may
 * make entries visible out of id order), page by page; record a delivery row for every
 * (endpoint, matching event) not recorded yet (`recorded` says which are; ids are deterministic,
 * so no sender records one twice), then hand the new ones to `onRecorded` (a worker's queue, the
 * delivery queue). Rows are recorded before they are handed on: a crash in between leaves them
 * pending in the store, where every sender finds them. Returns the new cursor (the last entry read).
 */
export async function scanLog(opts: {
  store: Store
  endpoints: readonly WebhookRecord[]
  cursor: string | undefined
  settleMs: number
  now: () => number
  /** Which of these deliveries are recorded already. */
  recorded: (deliveries: DeliveryRecord[]) => Promise<Set<string>>
  onRecorded: (deliveries: DeliveryRecord[]) => Promise<void> | void
}): Promise<{ cursor: string | undefined; recorded: number }> {
  const endpoints = opts.endpoints.filter((w) => w.enabled && !w.deleted)
  let cursor = opts.cursor
  let count = 0
  if (endpoints.length === 0) return { cursor, recorded: 0 }
  const earliest = Math.min(...endpoints.map((w) => w.active_since))
  const outbox = new OutboxStore(opts.store)
  let after = eventIdFloor(Math.max(cursor ? idTime(cursor) : 0, earliest) - opts.settleMs)
  for (;;) {
    const rows = await readLog(opts.store, { after, limit: PAGE })
    if (rows.length === 0) break
    const wanted = deliveriesFor(rows, endpoints, opts.now())
    const known = wanted.length ? await opts.recorded(wanted) : new Set<string>()
    const fresh = wanted.filter((d) => !known.has(d.id))
    if (fresh.length > 0) {
      await outbox.saveDeliveries(fresh)
      await opts.onRecorded(fresh)
      count += fresh.length
    }
    const last = (rows.at(-1) as LogRow).event_id
    if (!cursor || last > cursor) cursor = last
    after = last
    if (rows.length < PAGE) break
  }
  return { cursor, recorded: count }
}

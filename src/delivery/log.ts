import { Signal, SignalEvent, type SignalEventType } from '../signals.js'
import type { Store } from '../store/store.js'
import { isoFromCh } from '../time.js'

/** One entry of the signal log as stored (`signal` is the signal's JSON). */
export type LogRow = {
  event_id: string
  type: SignalEventType
  kind: string
  rule_id: string
  signal_id: string
  at: string
  signal: string
}

/**
 * Signal log entries after `after` (an event id; `''` for the beginning), in log order, optionally
 * only of some kinds. The log is a ReplacingMergeTree that may hold a row twice until a merge (a
 * retried insert): duplicates sort next to each other and are dropped here.
 */
export async function readLog(store: Store, opts: { after: string; kinds?: readonly string[]; limit: number }): Promise<LogRow[]> {
  const rows = await store.query<LogRow>(
    `SELECT event_id, type, kind, rule_id, signal_id, at, signal FROM signal_events_v1
     WHERE event_id > {after:String} AND (empty({kinds:Array(String)}) OR has({kinds:Array(String)}, kind))
     ORDER BY event_id LIMIT {limit:UInt32}`,
    { after: opts.after, kinds: opts.kinds ?? [], limit: opts.limit },
  )
  return rows.filter((r, i) => i === 0 || rows[i - 1]?.event_id !== r.event_id)
}

/** A log row as the signal event the bus carries (same id, type, timestamp and signal). */
export function eventFromLog(row: LogRow): SignalEvent {
  return { id: row.event_id, type: row.type, timestamp: isoFromCh(row.at), data: Signal.parse(JSON.parse(row.signal)) }
}

/** The JSON webhook body for a log row, spliced from the stored signal JSON as it is (no re-encoding). */
export function payloadFromLog(row: LogRow): string {
  return `{"type":${JSON.stringify(row.type)},"timestamp":${JSON.stringify(isoFromCh(row.at))},"data":${row.signal}}`
}

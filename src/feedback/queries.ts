import type { Store } from '../store/store.js'

/** A signal_feedback_v1 row as read back; `created_ms` is epoch milliseconds. */
export type FeedbackRow = {
  id: string
  signal_id: string
  verdict: string
  reason: string
  by: string
  created_ms: number
}

export type FeedbackInsert = { id: string; signal_id: string; verdict: string; reason: string; by: string; created_at: string }

export async function insertFeedback(store: Store, row: FeedbackInsert): Promise<void> {
  await store.insert('signal_feedback_v1', [row])
}

/** Every verdict on these signals, oldest first per signal. */
export async function selectFeedback(store: Store, signalIds: readonly string[]): Promise<FeedbackRow[]> {
  if (signalIds.length === 0) return []
  return store.query<FeedbackRow>(
    `SELECT id, signal_id, verdict, reason, by, toUnixTimestamp64Milli(created_at) AS created_ms
     FROM signal_feedback_v1
     WHERE signal_id IN {ids:Array(String)}
     ORDER BY signal_id, created_at, id`,
    { ids: signalIds },
  )
}

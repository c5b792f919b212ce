import type { Logger } from 'pino'
import type { EventRow } from '../../ingest/normalize.js'
import { dedupKey, type IngestErrorRow, type InsertSettings, insertErrorRows, type StateHook, storeBlock } from '../../ingest/writer.js'
import { sha256Hex } from '../hash.js'
import { backoffDelay } from '../delivery/backoff.js'
import type { Store } from '../store/store.js'
import { MAX_DELAY_SECONDS } from './deliveries.js'
import { IngestEnvelope } from './envelope.js'
import type { QueueBatch, QueueMessage } from './types.js'


export type ConsumerDeps = {
  store: Store
  logger: Logger
  /** The first retry waits this long, doubling per attempt. */
  retryBaseSeconds: number
  /** Called with the events newly stored (e.g. to re-evaluate the subjects they touched). */
  onStored?: (events: EventRow[]) => Promise<void> | void
  /** Keeps the per-day state of the stored events, as the Node writer does (rules/state/keeper.ts). */
  state?: StateHook
}

export type ConsumeResult = { stored: number; acked: number; retried: number; invalid: number }

/**
 * The ingestion queue's consumer: store a batch of envelopes into ClickHouse as one block per
 * table, then ack every message; on any failure retry them all with exponential backoff (the
 * queue dead-letters a message after `max_retries`, see wrangler.toml).
 *
 * Deduplication, in two layers:
 * - the same dedup-then-insert as the Node writer (`storeBlock`): messages whose (source,
 *   messageId) is already stored are dropped first. With `max_concurrency = 1` the consumer is the
 *   single writer, so this is as exact as on Node;
 * - every insert carries an `insert_deduplication_token` made of the batch (its envelope ids,
 *   stable across redeliveries) and a digest of the rows inserted, so ClickHouse drops a block it
 *   already committed when a batch is redelivered after a lost ack. The digest keeps the token from
 *   ever naming different rows: after a partial failure the retry inserts what is left, under a
 *   new token, instead of having it dropped as a duplicate.
 *   (Tokens take effect on Replicated tables, i.e. in cluster mode; a single-node MergeTree ignores
 *   them unless `non_replicated_deduplication_window` is set.)
 */
export async function consumeIngestBatch(batch: QueueBatch<unknown>, deps: ConsumerDeps): Promise<ConsumeResult> {
  const valid: { message: QueueMessage<unknown>; envelope: IngestEnvelope }[] = []
  let invalid = 0
  for (const message of batch.messages) {
    const parsed = IngestEnvelope.safeParse(message.body)
    if (parsed.success) valid.push({ message, envelope: parsed.data })
    else {
      // Not ours, or from an incompatible version: never dropped unseen, it goes to the
      // dead-letter queue after its retries.
      invalid++
      deps.logger.error({ queue: batch.queue, messageId: message.id, issues: parsed.error.issues.slice(0, 5) }, 'invalid ingestion envelope')
      message.retry({ delaySeconds: backoff(message.attempts, deps.retryBaseSeconds) })
    }
  }
  if (valid.length === 0) return { stored: 0, acked: 0, retried: invalid, invalid }

  const batchToken = sha256Hex(valid.map((v) => v.envelope.id).sort().join(',')).slice(0, 32)
  const settings: InsertSettings = (table, rows) => ({
    insert_deduplicate: 1,
    insert_deduplication_token: `${batchToken}:${table}:${sha256Hex(JSON.stringify(rows)).slice(0, 32)}`,
    // A redelivered block skipped by a table must be skipped by its materialized views too.
    deduplicate_blocks_in_dependent_materialized_views: 1,
  })
  const events = valid.flatMap((v) => v.envelope.events)
  const errors = valid.flatMap((v) => v.envelope.errors)
  let fresh: EventRow[]
  try {
    // Large lookups travel as a form body (see edge/store.ts), so they are as large as on Node;
    // a few run at once (Workers allow 6 open connections per invocation).
    const { stored, rejected } = await storeBlock(deps.store, { events, errors }, { settings, lookupConcurrency: 4, state: deps.state })
    fresh = stored
    // Messages the store refused on their own were answered 2xx at the edge: they are kept as
    // ingestion errors before the batch is acked, so nothing vanishes unseen.
    if (rejected.size > 0) await insertErrorRows(deps.store, refusedRows(events, rejected, batchToken), settings, deps.logger)
  } catch (err) {
    const attempts = Math.max(...valid.map((v) => v.message.attempts))
    deps.logger.error({ err, queue: batch.queue, messages: valid.length, attempts }, 'storing an ingestion batch failed; retrying it')
    for (const { message } of valid) message.retry({ delaySeconds: backoff(message.attempts, deps.retryBaseSeconds) })
    return { stored: 0, acked: 0, retried: valid.length + invalid, invalid }
  }
  for (const { message } of valid) message.ack()
  deps.logger.info({ queue: batch.queue, messages: valid.length, events: events.length, stored: fresh.length, errors: errors.length }, 'ingestion batch stored')
  if (fresh.length > 0 && deps.onStored) {
    // Stored and acked: a failing listener must not send the batch round again.
    try {
      await deps.onStored(fresh)
    } catch (err) {
      deps.logger.warn({ err }, 'the stored-events listener failed')
    }
  }
  return { stored: fresh.length, acked: valid.length, retried: invalid, invalid }
}

/** Ingestion-error rows for the events the store refused (ids made from the batch, so a redelivery writes the same rows). */
function refusedRows(events: EventRow[], rejected: Map<string, string>, batchToken: string): IngestErrorRow[] {
  const rows: IngestErrorRow[] = []
  for (const e of events) {
    const key = dedupKey(e)
    const message = rejected.get(key)
    if (message === undefined) continue
    rejected.delete(key)
    rows.push({
      id: `ierr_${sha256Hex(`${batchToken}:${key}`).slice(0, 26)}`,
      received_at: e.received_at,
      source: e.source,
      level: 'error',
      route: '(queue)',
      batch_index: -1,
      message_id: e.message_id,
      path: '(message)',
      message,
      payload: JSON.stringify(e),
    })
  }
  return rows
}

/** The queue's retry delay in seconds: the webhooks' exponential backoff without jitter, base · 2^(attempts−1), at most 12 h. */
export function backoff(attempts: number, baseSeconds: number): number {
  return backoffDelay(attempts, { baseMs: baseSeconds * 1000, maxMs: MAX_DELAY_SECONDS * 1000, jitter: 0 }) / 1000
}

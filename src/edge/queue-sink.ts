import { monotonicFactory } from 'ulid'
import type { EventRow } from '../../ingest/normalize.js'
import type { EventSink, IngestErrorRow, WriteBatch, WriteResult } from '../../ingest/writer.js'
import { StoreUnavailableError } from '../errors.js'
import { ENVELOPE_VERSION, type IngestEnvelope } from './envelope.js'
import type { QueueProducer } from './types.js'

/**
 * Cloudflare Queues limits: 128 KB per message, 100 messages and 256 KB per `sendBatch` (KB = 1000
 * bytes). The defaults keep a margin under each, since the platform counts its own framing too.
 */
export const QUEUE_LIMITS = {
  messageBytes: 120_000,
  batchMessages: 100,
  batchBytes: 250_000,
} as const
export type QueueLimits = { messageBytes: number; batchMessages: number; batchBytes: number }

const nextUlid = monotonicFactory()
const encoder = new TextEncoder()
const bytes = (s: string) => encoder.encode(s).length
/** The envelope without rows: its size is the same for every message (ids have a fixed length). */
const ENVELOPE_BYTES = bytes(JSON.stringify({ v: ENVELOPE_VERSION, id: `qm_${'0'.repeat(26)}`, events: [], errors: [] }))

type Sized<T> = { row: T; bytes: number }

/**
 * The edge's EventSink: accepted rows go to a Cloudflare Queue, and `write` resolves only once the
 * queue has accepted every message of the batch, so a 2xx still means "durably stored". Rows are
 * packed into as few messages as the per-message limit allows, and messages into as few
 * `sendBatch` calls as the per-call limits allow (sent in parallel). If any call fails the request
 * fails (503) and the client resends; the consumer's dedup by (source, messageId) makes the
 * messages that did reach the queue harmless.
 */
export class QueueSink implements EventSink {
  constructor(
    private readonly queue: QueueProducer<IngestEnvelope>,
    private readonly limits: QueueLimits = QUEUE_LIMITS,
  ) {}

  /** Nothing is refused here: the queue consumer stores the block, and records what the store refuses (ingest_errors_v1). */
  async write(batch: WriteBatch): Promise<WriteResult> {
    const messages = packMessages(batch, this.limits)
    const calls = packCalls(messages, this.limits)
    try {
      await Promise.all(calls.map((call) => this.queue.sendBatch(call.map(({ row }) => ({ body: row, contentType: 'json' as const })))))
    } catch (err) {
      throw new StoreUnavailableError(err)
    }
    return { rejected: [] }
  }

  async close(): Promise<void> {}
}

/** Rows into envelopes of at most `messageBytes` (as JSON), events first, in order. */
export function packMessages(batch: WriteBatch, limits: QueueLimits = QUEUE_LIMITS): Sized<IngestEnvelope>[] {
  const room = limits.messageBytes - ENVELOPE_BYTES
  const out: Sized<IngestEnvelope>[] = []
  let current: Sized<IngestEnvelope> | undefined
  const add = (kind: 'events' | 'errors', row: EventRow | IngestErrorRow, size: number) => {
    // +1 for the comma between rows.
    if (!current || current.bytes + size + 1 > limits.messageBytes) {
      current = { row: { v: ENVELOPE_VERSION, id: `qm_${nextUlid()}`, events: [], errors: [] }, bytes: ENVELOPE_BYTES }
      out.push(current)
    }
    ;(current.row[kind] as (EventRow | IngestErrorRow)[]).push(row)
    current.bytes += size + 1
  }
  for (const e of batch.events) {
    const size = bytes(JSON.stringify(e))
    // Cannot happen with the 32 KB message limit (a row is at most about twice its message),
    // but if it did, failing the request is right: dropping or cutting an event would lose it.
    if (size > room) throw new Error(`an event row of ${size} bytes does not fit in a queue message (${limits.messageBytes} bytes)`)
    add('events', e, size)
  }
  for (const e of batch.errors) {
    const fitted = fitErrorRow(e, room)
    add('errors', fitted.row, fitted.bytes)
  }
  return out
}

/**
 * An ingestion-error row whose copy of the rejected message is too large for one queue message
 * keeps the reason and as much of the payload as fits, marked as cut.
 */
function fitErrorRow(row: IngestErrorRow, room: number): Sized<IngestErrorRow> {
  let fitted = row
  let size = bytes(JSON.stringify(row))
  let keep = row.payload.length
  while (size > room && keep > 0) {
    keep = Math.floor(keep / 2)
    fitted = { ...row, payload: `${row.payload.slice(0, keep)}…[cut to fit a queue message]` }
    size = bytes(JSON.stringify(fitted))
  }
  if (size > room) throw new Error(`an ingestion-error row of ${size} bytes does not fit in a queue message`)
  return { row: fitted, bytes: size }
}

/** Envelopes into `sendBatch` calls of at most `batchMessages` messages and `batchBytes` bytes. */
export function packCalls<T>(messages: Sized<T>[], limits: QueueLimits = QUEUE_LIMITS): Sized<T>[][] {
  const calls: Sized<T>[][] = []
  let current: Sized<T>[] = []
  let size = 0
  for (const m of messages) {
    if (current.length > 0 && (current.length >= limits.batchMessages || size + m.bytes > limits.batchBytes)) {
      calls.push(current)
      current = []
      size = 0
    }
    current.push(m)
    size += m.bytes
  }
  if (current.length > 0) calls.push(current)
  return calls
}

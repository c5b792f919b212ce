import { z } from 'zod'
import { attemptDelivery, newDelivery } from '../delivery/deliver.js'
import type { DispatcherOptions } from '../delivery/dispatcher.js'
import { eventIdFloor, idTime } from '../delivery/ids.js'
import { type LogRow, readLog } from '../delivery/log.js'
import { type DeliveryRecord, OutboxStore } from '../delivery/outbox.js'
import { type WebhookRecord, WebhookStore, webhookWants } from '../delivery/webhooks.js'
import type { Store } from '../store/store.js'
import type { QueueBatch, QueueProducer } from './types.js'

/** One message of the delivery queue: the id of a delivery row in the outbox (the row holds the rest). */
export const DeliveryMessage = z.object({ delivery: z.string().startsWith('dlv_') })
export type DeliveryMessage = z.infer<typeof DeliveryMessage>

/** The edge's own position in the signal log (the Node dispatcher keeps `webhooks`). */
export const EDGE_CURSOR = 'webhooks-edge'
const PAGE = 1000
/** Cloudflare Queues: at most 100 messages per sendBatch, delays of at most 12 hours. */
const SEND_BATCH = 100
export const MAX_DELAY_SECONDS = 43_200
/** A pending delivery not attempted this long after it was due is sent to the queue again. */
const STALE_MS = 5 * 60_000

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

/** The queue delay (whole seconds, within the queue's limit) until `at`. */
export function delaySecondsUntil(at: number | null, now: number): number {
  if (at === null) return 0
  return Math.min(MAX_DELAY_SECONDS, Math.max(0, Math.ceil((at - now) / 1000)))
}

export async function sendDeliveryMessages(queue: QueueProducer<DeliveryMessage>, ids: readonly string[]): Promise<void> {
  for (let i = 0; i < ids.length; i += SEND_BATCH) {
    await queue.sendBatch(ids.slice(i, i + SEND_BATCH).map((delivery) => ({ body: { delivery }, contentType: 'json' as const })))
  }
}

/**
 * The edge's outbox scan (after each scheduled evaluation): read the signal log after the edge's
 * durable cursor (less `settleMs`, as concurrent writers may make entries visible out of id order),
 * record a delivery row per (endpoint, matching event) not recorded yet (by the Node dispatcher
 * either: ids are deterministic, so a re-scan records and queues nothing twice), send one message
 * per new delivery to the delivery queue, then save the cursor. Rows are recorded before they are
 * queued: a crash in between leaves them pending, and `requeueStale` sends them at the next run.
 */
export async function queueDeliveries(deps: {
  store: Store
  queue: QueueProducer<DeliveryMessage>
  now: () => number
  settleMs?: number
}): Promise<{ queued: number; requeued: number }> {
  const outbox = new OutboxStore(deps.store)
  const endpoints = (await new WebhookStore(deps.store, deps.now).list()).filter((w) => w.enabled && !w.deleted)
  const cursor = await outbox.readCursor(EDGE_CURSOR)
  let queued = 0
  let last = cursor
  if (endpoints.length > 0) {
    const earliest = Math.min(...endpoints.map((w) => w.active_since))
    let after = eventIdFloor(Math.max(cursor ? idTime(cursor) : 0, earliest) - (deps.settleMs ?? 5000))
    for (;;) {
      const rows = await readLog(deps.store, { after, limit: PAGE })
      if (rows.length === 0) break
      const wanted = deliveriesFor(rows, endpoints, deps.now())
      const stored = wanted.length ? await outbox.existing(wanted.map((d) => d.id)) : new Set<string>()
      const fresh = wanted.filter((d) => !stored.has(d.id))
      if (fresh.length) {
        await outbox.saveDeliveries(fresh)
        await sendDeliveryMessages(deps.queue, fresh.map((d) => d.id))
        queued += fresh.length
      }
      after = (rows.at(-1) as LogRow).event_id
      if (!last || after > last) last = after
      if (rows.length < PAGE) break
    }
  }
  if (last && last !== cursor) await outbox.writeCursor(EDGE_CURSOR, last)
  const requeued = await requeueStale(outbox, deps.queue, deps.now())
  return { queued, requeued }
}

/**
 * Pending deliveries the queue may not hold: recorded but not attempted within STALE_MS (a crash
 * between recording and queueing), or replayed (POST /v1/deliveries/:id/retry) when the Worker
 * could not queue them. Retrying deliveries are not resent: their message is retried by the queue
 * itself (it is acknowledged only after the outcome is recorded). A message sent twice costs at
 * most one extra attempt, with the same webhook-id; the consumer skips settled deliveries.
 */
async function requeueStale(outbox: OutboxStore, queue: QueueProducer<DeliveryMessage>, now: number): Promise<number> {
  const open = await outbox.open(1000)
  const stale = open.filter((d) => d.status === 'pending' && (d.next_attempt_at ?? 0) < now - STALE_MS)
  await sendDeliveryMessages(queue, stale.map((d) => d.id))
  return stale.length
}

/** What the queue consumer needs: the Node dispatcher's options for making an attempt. */
export type DeliveryConsumerDeps = Pick<DispatcherOptions, 'store' | 'logger' | 'policy' | 'timeoutMs' | 'publicUrl' | 'now' | 'random'>

/**
 * The delivery queue's consumer: each message is one attempt of one delivery (signed as on Node,
 * Slack format too). The attempt and the delivery's new state are written to the outbox; a
 * retriable failure retries the message after the policy's delay (Retry-After honoured), so the
 * `webhook-id` (the delivery id) is the same at every attempt; after the last attempt the delivery
 * is dead. Messages for deliveries that are settled, not due, or whose endpoint was deleted or
 * disabled are acknowledged without an attempt.
 */
export async function consumeDeliveryBatch(batch: QueueBatch<unknown>, deps: DeliveryConsumerDeps): Promise<void> {
  const now = deps.now ?? Date.now
  const outbox = new OutboxStore(deps.store)
  const webhooks = new WebhookStore(deps.store, now)
  await Promise.all(
    batch.messages.map(async (msg) => {
      const parsed = DeliveryMessage.safeParse(msg.body)
      if (!parsed.success) {
        deps.logger.error({ message: msg.id }, 'webhooks: a delivery queue message is not a delivery; dropped')
        return msg.ack()
      }
      const id = parsed.data.delivery
      try {
        const d = await outbox.find(id)
        if (!d || (d.status !== 'pending' && d.status !== 'retrying')) return msg.ack()
        const wait = delaySecondsUntil(d.next_attempt_at, now())
        if (wait > 1) return msg.retry({ delaySeconds: wait })
        const w = await webhooks.find(d.webhook_id)
        if (!w || w.deleted || !w.enabled) return msg.ack()
        const { next, attempt, result } = await attemptDelivery(d, w, { policy: deps.policy, timeoutMs: deps.timeoutMs, publicUrl: deps.publicUrl, now, random: deps.random })
        await outbox.saveAttempts([attempt])
        await outbox.saveDeliveries([next])
        deps.logger.debug({ delivery: d.id, webhook: w.id, status: next.status, code: result.statusCode, ms: result.durationMs }, 'webhook attempt')
        if (next.status === 'retrying') msg.retry({ delaySeconds: delaySecondsUntil(next.next_attempt_at, now()) })
        else msg.ack()
      } catch (err) {
        // The store is unreachable: nothing was decided; try the message again shortly.
        deps.logger.warn({ err, delivery: id }, 'webhooks: a delivery could not be attempted; retried')
        msg.retry({ delaySeconds: 5 })
      }
    }),
  )
}

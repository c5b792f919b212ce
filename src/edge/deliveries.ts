import { z } from 'zod'
import { attemptDelivery } from '../delivery/deliver.js'
import type { DispatcherOptions } from '../delivery/dispatcher.js'
import { DeliveryLeases, LEASE_MARGIN_MS } from '../delivery/lease.js'
import { OutboxStore } from '../delivery/outbox.js'
import { scanLog } from '../delivery/scan.js'
import { WebhookStore } from '../delivery/webhooks.js'
import type { Store } from '../store/store.js'
import type { QueueBatch, QueueProducer } from './types.js'

/** One message of the delivery queue: the id of a delivery row in the outbox (the row holds the rest). */
export const DeliveryMessage = z.object({ delivery: z.string().startsWith('dlv_') })
export type DeliveryMessage = z.infer<typeof DeliveryMessage>

export { deliveriesFor } from '../delivery/scan.js'

/** The edge's own position in the signal log (the Node dispatcher keeps `webhooks`). */
export const EDGE_CURSOR = 'webhooks-edge'
/** Cloudflare Queues: at most 100 messages per sendBatch, delays of at most 12 hours. */
const SEND_BATCH = 100
export const MAX_DELAY_SECONDS = 43_200
/** A pending delivery not attempted this long after it was due is sent to the queue again. */
const STALE_MS = 5 * 60_000

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
 * The edge's outbox scan (after each scheduled evaluation): `scanLog` after the edge's durable
 * cursor, each new delivery sent as one message to the delivery queue, then the cursor saved.
 * A crash between recording and queueing leaves a delivery pending: `requeueStale` sends it at the
 * next run.
 */
export async function queueDeliveries(deps: {
  store: Store
  queue: QueueProducer<DeliveryMessage>
  now: () => number
  settleMs?: number
}): Promise<{ queued: number; requeued: number }> {
  const outbox = new OutboxStore(deps.store)
  const endpoints = await new WebhookStore(deps.store, deps.now).list()
  const saved = await outbox.readCursor(EDGE_CURSOR)
  const { cursor, recorded: queued } = await scanLog({
    store: deps.store,
    endpoints,
    cursor: saved,
    settleMs: deps.settleMs ?? 5000,
    now: deps.now,
    recorded: (wanted) => outbox.existing(wanted.map((d) => d.id)),
    onRecorded: (fresh) => sendDeliveryMessages(deps.queue, fresh.map((d) => d.id)),
  })
  if (cursor && cursor !== saved) await outbox.writeCursor(EDGE_CURSOR, cursor)
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
export type DeliveryConsumerDeps = Pick<DispatcherOptions, 'store' | 'logger' | 'policy' | 'timeoutMs' | 'publicUrl' | 'now' | 'random' | 'leaseMode' | 'allowPrivate'>

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
  const leases = new DeliveryLeases(deps.store, deps.timeoutMs + LEASE_MARGIN_MS, deps.leaseMode)
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
        // One sender per attempt across the Worker and any Node dispatcher on the store: if another
        // holds (or made) it, this message looks at the delivery again when that lease ends.
        const lease = await leases.claim(d, now())
        if (!lease.held) return msg.retry({ delaySeconds: Math.max(1, delaySecondsUntil(lease.until, now())) })
        const { next, attempt, result } = await attemptDelivery(d, w, {
          policy: deps.policy,
          timeoutMs: deps.timeoutMs,
          publicUrl: deps.publicUrl,
          now,
          random: deps.random,
          allowPrivate: deps.allowPrivate ?? false,
        })
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

import { type AttemptResult, sendAttempt } from './attempt.js'
import { type RetryPolicy, retryDelay } from './backoff.js'
import { deliveryIdFor } from './ids.js'
import { type LogRow, payloadFromLog } from './log.js'
import type { AttemptRecord, DeliveryRecord } from './outbox.js'
import type { WebhookPayload } from './payload.js'
import { signatureHeaders } from './signing.js'
import { slackMessage } from './slack.js'
import { urlRefusal } from './targets.js'
import { signingSecrets, type WebhookRecord } from './webhooks.js'

/** A new, not yet attempted delivery of one signal-log event to one endpoint (its id is deterministic). */
export function newDelivery(webhookId: string, row: LogRow, now: number): DeliveryRecord {
  return {
    id: deliveryIdFor(webhookId, row.event_id),
    webhook_id: webhookId,
    event_id: row.event_id,
    type: row.type,
    signal_id: row.signal_id,
    kind: row.kind,
    rule_id: row.rule_id,
    payload: payloadFromLog(row),
    status: 'pending',
    attempts: 0,
    round_attempts: 0,
    next_attempt_at: now,
    last_status_code: null,
    last_error: '',
    created_at: now,
    updated_at: now,
    delivered_at: null,
  }
}

/**
 * One attempt of one delivery, on any runtime: the body (the stored payload, or its Slack
 * message), the Standard Webhooks signature (webhook-id = the delivery id, stable across
 * attempts), the POST, and the delivery's next state from the retry policy. The caller records
 * `next` and `attempt` (Node: the dispatcher's group commit; Workers: the delivery queue consumer).
 */
export async function attemptDelivery(
  d: DeliveryRecord,
  w: WebhookRecord,
  o: {
    policy: RetryPolicy
    timeoutMs: number
    publicUrl?: string
    stop?: AbortSignal
    now: () => number
    random?: () => number
    /** Private and loopback targets allowed (WEBHOOK_ALLOW_PRIVATE); link-local and metadata never. */
    allowPrivate: boolean
    /** Node: a fetch that also checks the addresses the name resolves to (guarded-fetch.ts). */
    fetch?: typeof fetch
  },
): Promise<{ next: DeliveryRecord; attempt: AttemptRecord; result: AttemptResult }> {
  const at = o.now()
  // The URL's literal host is checked on every runtime; on Node the guarded fetch checks the resolved addresses too.
  const refused = urlRefusal(w.url, o.allowPrivate)
  if (refused) {
    const result: AttemptResult = { ok: false, statusCode: null, error: `the target is refused: ${refused}; not retried`, retriable: false, response: '', durationMs: 0 }
    return { result, ...deliveryOutcome(d, result, at, o) }
  }
  const body = w.format === 'slack' ? JSON.stringify(slackMessage(JSON.parse(d.payload) as WebhookPayload, o.publicUrl)) : d.payload
  const headers = signatureHeaders({ id: d.id, at, body, secrets: signingSecrets(w, at) })
  const result = await sendAttempt({ url: w.url, body, headers, timeoutMs: o.timeoutMs, stop: o.stop, now: o.now, fetch: o.fetch })
  return { result, ...deliveryOutcome(d, result, at, o) }
}

/** The delivery's state after an attempt that started at `at` ended with `result`, and the attempt's log row. */
export function deliveryOutcome(
  d: DeliveryRecord,
  result: AttemptResult,
  at: number,
  o: { policy: RetryPolicy; now: () => number; random?: () => number },
): { next: DeliveryRecord; attempt: AttemptRecord } {
  const done = o.now()
  const attempts = d.attempts + 1
  // A shutdown says nothing about the endpoint: it does not use up the round.
  const round = result.interrupted ? d.round_attempts : d.round_attempts + 1
  const base = { ...d, attempts, round_attempts: round, last_status_code: result.statusCode, updated_at: done }
  let next: DeliveryRecord
  if (result.ok) {
    next = { ...base, status: 'delivered', next_attempt_at: null, last_error: '', delivered_at: done }
  } else if (!result.retriable || round >= o.policy.maxAttempts) {
    const why = result.retriable ? `${result.error}; dead-lettered after ${round} attempts` : result.error
    next = { ...base, status: 'dead', next_attempt_at: null, last_error: why }
  } else {
    const wait = result.interrupted ? 0 : retryDelay(round, o.policy, result.retryAfterMs, o.random)
    next = { ...base, status: 'retrying', next_attempt_at: done + wait, last_error: result.error }
  }
  const attempt: AttemptRecord = {
    delivery_id: d.id,
    webhook_id: d.webhook_id,
    attempt: attempts,
    at,
    status_code: result.statusCode,
    error: result.error,
    response: result.response,
    duration_ms: result.durationMs,
  }
  return { next, attempt }
}

import { encodeTime } from 'ulid'
import { describe, expect, it } from 'vitest'
import type { AttemptResult } from '../src/delivery/attempt.js'
import { deliveryOutcome } from '../src/delivery/deliver.js'
import { deliveryIdFor } from '../src/delivery/ids.js'
import type { LogRow } from '../src/delivery/log.js'
import type { DeliveryRecord } from '../src/delivery/outbox.js'
import type { WebhookRecord } from '../src/delivery/webhooks.js'
import { DeliveryMessage, deliveriesFor, delaySecondsUntil, MAX_DELAY_SECONDS } from '../src/edge/deliveries.js'

// The pure steps of the Workers delivery path (src/edge/deliveries.ts, src/delivery/deliver.ts).

const T0 = Date.parse('2026-01-01T00:00:00Z')
const evt = (ms: number, n: number) => `evt_${encodeTime(ms, 10)}${String(n).padStart(16, '0')}`
const row = (ms: number, n: number, kind = 'pql', rule_id = 'r1'): LogRow => ({
  event_id: evt(ms, n),
  type: 'signal.fired',
  kind,
  rule_id,
  signal_id: `sig_${n}`,
  at: '2026-01-01 00:00:00.000',
  signal: '{"id":"x"}',
})
const hook = (id: string, o: Partial<WebhookRecord> = {}): WebhookRecord => ({
  id,
  url: 'https://example.test/h',
  description: '',
  kinds: [],
  rule_ids: [],
  format: 'json',
  enabled: true,
  created_at: new Date(T0).toISOString(),
  updated_at: new Date(T0).toISOString(),
  secret: 'whsec_x',
  previous_secret: '',
  previous_secret_until: null,
  deleted: false,
  active_since: T0,
  ...o,
})

describe('deliveriesFor', () => {
  it('makes one pending delivery per (active endpoint that wants the event, event), with the deterministic id of the pair', () => {
    const rows = [row(T0 + 10, 1), row(T0 + 20, 2, 'churn_risk', 'r2'), row(T0 - 10, 3)]
    const hooks = [hook('wh_a'), hook('wh_b', { kinds: ['churn_risk'] }), hook('wh_c', { rule_ids: ['r1'] }), hook('wh_off', { enabled: false }), hook('wh_del', { deleted: true })]
    const out = deliveriesFor(rows, hooks, T0 + 100)
    expect(out.map((d) => [d.webhook_id, d.event_id])).toEqual([
      ['wh_a', evt(T0 + 10, 1)],
      ['wh_c', evt(T0 + 10, 1)],
      ['wh_a', evt(T0 + 20, 2)],
      ['wh_b', evt(T0 + 20, 2)],
    ])
    expect(out[0]).toMatchObject({ id: deliveryIdFor('wh_a', evt(T0 + 10, 1)), status: 'pending', attempts: 0, round_attempts: 0, next_attempt_at: T0 + 100 })
    // The same rows make the same ids: a re-scan records nothing new.
    expect(deliveriesFor(rows, hooks, T0 + 999).map((d) => d.id)).toEqual(out.map((d) => d.id))
  })
})

describe('delaySecondsUntil', () => {
  it('rounds up to whole seconds, never negative, within the queue limit of 12 hours', () => {
    expect(delaySecondsUntil(null, T0)).toBe(0)
    expect(delaySecondsUntil(T0 - 5000, T0)).toBe(0)
    expect(delaySecondsUntil(T0 + 1, T0)).toBe(1)
    expect(delaySecondsUntil(T0 + 30_000, T0)).toBe(30)
    expect(delaySecondsUntil(T0 + 86_400_000, T0)).toBe(MAX_DELAY_SECONDS)
  })
})

describe('DeliveryMessage', () => {
  it('accepts a delivery id and rejects anything else', () => {
    expect(DeliveryMessage.safeParse({ delivery: 'dlv_01ABC' }).success).toBe(true)
    expect(DeliveryMessage.safeParse({ delivery: 'wh_1' }).success).toBe(false)
    expect(DeliveryMessage.safeParse('dlv_1').success).toBe(false)
  })
})

describe('deliveryOutcome', () => {
  const d = { ...deliveriesFor([row(T0, 1)], [hook('wh_a')], T0)[0] } as DeliveryRecord
  const policy = { maxAttempts: 3, baseMs: 1000, maxMs: 60_000, jitter: 0 }
  const o = { policy, now: () => T0 + 50 }
  const fail = (r: Partial<AttemptResult> = {}): AttemptResult => ({ ok: false, statusCode: 500, error: 'the endpoint answered 500', retriable: true, response: '', durationMs: 5, ...r })

  it('delivered on a 2xx; the attempt row carries the outcome', () => {
    const { next, attempt } = deliveryOutcome(d, { ok: true, statusCode: 204, error: '', retriable: false, response: '', durationMs: 3 }, T0, o)
    expect(next).toMatchObject({ status: 'delivered', attempts: 1, round_attempts: 1, delivered_at: T0 + 50, next_attempt_at: null })
    expect(attempt).toMatchObject({ delivery_id: d.id, attempt: 1, at: T0, status_code: 204, duration_ms: 3 })
  })
  it('retrying after the backoff, or the longer Retry-After; dead after the last attempt of the round; a 4xx is not retried', () => {
    expect(deliveryOutcome(d, fail(), T0, o).next).toMatchObject({ status: 'retrying', next_attempt_at: T0 + 50 + 1000 })
    expect(deliveryOutcome(d, fail({ statusCode: 429, retryAfterMs: 20_000 }), T0, o).next.next_attempt_at).toBe(T0 + 50 + 20_000)
    const last = deliveryOutcome({ ...d, attempts: 2, round_attempts: 2 }, fail(), T0, o).next
    expect(last).toMatchObject({ status: 'dead', attempts: 3, next_attempt_at: null })
    expect(last.last_error).toMatch(/dead-lettered after 3 attempts/)
    expect(deliveryOutcome(d, fail({ statusCode: 410, retriable: false }), T0, o).next.status).toBe('dead')
  })
})

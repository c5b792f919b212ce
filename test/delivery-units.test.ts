import { Webhook } from 'standardwebhooks'
import { decodeTime } from 'ulid'
import { describe, expect, it } from 'vitest'
import { backoffDelay, isRetriableStatus, parseRetryAfter, retryDelay, roundDurationMs } from '../src/delivery/backoff.js'
import { deliveryIdFor, eventIdFloor, idTime, newWebhookSecret } from '../src/delivery/ids.js'
import { signatureHeaders } from '../src/delivery/signing.js'
import { slackMessage } from '../src/delivery/slack.js'
import { signingSecrets, type WebhookRecord, webhookWants } from '../src/delivery/webhooks.js'
import { ConfigError, loadConfig } from '../src/config.js'
import { makeSignal } from './delivery-helpers.js'

const policy = { maxAttempts: 17, baseMs: 10_000, maxMs: 4 * 3_600_000 }

describe('backoff', () => {
  it('doubles from the base up to the cap, with ± 20 % jitter', () => {
    const mid = () => 0.5
    expect([1, 2, 3, 4, 11, 12, 16].map((a) => backoffDelay(a, policy, mid))).toEqual([10_000, 20_000, 40_000, 80_000, 10_240_000, 14_400_000, 14_400_000])
    expect(backoffDelay(3, policy, () => 0)).toBe(32_000)
    expect(backoffDelay(3, policy, () => 0.999_999)).toBe(48_000)
    expect(backoffDelay(3, { ...policy, jitter: 0 }, () => 0)).toBe(40_000)
  })

  it('with the defaults, a delivery is dead-lettered after about a day of tries', () => {
    const cfg = loadConfig({})
    const hours = roundDurationMs({ maxAttempts: cfg.WEBHOOK_MAX_ATTEMPTS, baseMs: cfg.WEBHOOK_BACKOFF_BASE_MS, maxMs: cfg.WEBHOOK_BACKOFF_MAX_MS }) / 3_600_000
    // 10 s · (2^11 − 1) for the first 11 waits, then 5 waits of 4 h.
    expect(hours).toBeCloseTo((10 * 2047 + 5 * 14_400) / 3600, 5)
    expect(hours).toBeGreaterThan(22)
    expect(hours).toBeLessThan(28)
    expect(cfg.WEBHOOK_TIMEOUT_MS).toBe(10_000)
  })

  it('reads Retry-After as seconds or an HTTP date, and waits for it (capped)', () => {
    const now = Date.parse('2026-07-01T12:00:00Z')
    expect(parseRetryAfter('120', now)).toBe(120_000)
    expect(parseRetryAfter('Wed, 01 Jul 2026 12:00:30 GMT', now)).toBe(30_000)
    expect(parseRetryAfter('Wed, 01 Jul 2026 11:00:00 GMT', now)).toBe(0)
    expect(parseRetryAfter('soon', now)).toBeUndefined()
    expect(parseRetryAfter(null, now)).toBeUndefined()
    const mid = () => 0.5
    expect(retryDelay(1, policy, 120_000, mid)).toBe(120_000)
    expect(retryDelay(1, policy, 1_000, mid)).toBe(10_000)
    expect(retryDelay(1, policy, 48 * 3_600_000, mid)).toBe(4 * 3_600_000)
    expect(retryDelay(1, { ...policy, maxMs: 100 }, 1000, mid)).toBe(1000)
  })

  it('retries what may change (408, 425, 429, 5xx), not other answers', () => {
    expect([408, 425, 429, 500, 502, 503, 504].every(isRetriableStatus)).toBe(true)
    expect([300, 301, 400, 401, 403, 404, 410, 422].some(isRetriableStatus)).toBe(false)
  })
})

describe('ids and signing', () => {
  const evt = 'evt_01J2ZK3QX0A1B2C3D4E5F6G7H8'
  it('derives the delivery id (the webhook-id header) from the endpoint and the event: stable, distinct, a ULID of the event time', () => {
    const a = deliveryIdFor('wh_01J2ZK3QX0AAAAAAAAAAAAAAAA', evt)
    expect(a).toBe(deliveryIdFor('wh_01J2ZK3QX0AAAAAAAAAAAAAAAA', evt))
    expect(a).not.toBe(deliveryIdFor('wh_01J2ZK3QX0BBBBBBBBBBBBBBBB', evt))
    expect(a).not.toBe(deliveryIdFor('wh_01J2ZK3QX0AAAAAAAAAAAAAAAA', 'evt_01J2ZK3QX0A1B2C3D4E5F6G7H9'))
    expect(a).toMatch(/^dlv_[0-9A-HJKMNP-TV-Z]{26}$/)
    expect(idTime(a)).toBe(decodeTime('01J2ZK3QX0A1B2C3D4E5F6G7H8'))
    expect(eventIdFloor(idTime(evt)) < evt).toBe(true)
    expect(eventIdFloor(idTime(evt) + 1) > evt).toBe(true)
  })

  it('signs so that standardwebhooks verifies, with every secret during a rotation', () => {
    const s1 = newWebhookSecret()
    const s2 = newWebhookSecret()
    const body = JSON.stringify({ type: 'signal.fired', timestamp: '2026-07-01T12:00:00.000Z', data: { x: 1 } })
    const at = Date.now()
    const headers = signatureHeaders({ id: 'dlv_X', at, body, secrets: [s1, s2] })
    expect(headers['webhook-timestamp']).toBe(String(Math.floor(at / 1000)))
    expect(new Webhook(s1).verify(body, headers)).toEqual(JSON.parse(body))
    expect(new Webhook(s2).verify(body, headers)).toEqual(JSON.parse(body))
    expect(() => new Webhook(newWebhookSecret()).verify(body, headers)).toThrow()
    // A stale timestamp (a replayed capture) is refused by the receiver's library.
    const old = signatureHeaders({ id: 'dlv_X', at: at - 10 * 60_000, body, secrets: [s1] })
    expect(() => new Webhook(s1).verify(body, old)).toThrow(/too old/)
  })

  it('signs with the previous secret only until its grace period ends', () => {
    const w = { secret: 'whsec_new', previous_secret: 'whsec_old', previous_secret_until: 1000 } as WebhookRecord
    expect(signingSecrets(w, 999)).toEqual(['whsec_new', 'whsec_old'])
    expect(signingSecrets(w, 1000)).toEqual(['whsec_new'])
    expect(signingSecrets({ ...w, previous_secret: '', previous_secret_until: null }, 0)).toEqual(['whsec_new'])
  })

  it('filters by kind and rule; empty filters take everything', () => {
    expect(webhookWants({ kinds: [], rule_ids: [] }, 'mql', 'r')).toBe(true)
    expect(webhookWants({ kinds: ['pql'], rule_ids: [] }, 'mql', 'r')).toBe(false)
    expect(webhookWants({ kinds: ['pql', 'mql'], rule_ids: ['r'] }, 'mql', 'r')).toBe(true)
    expect(webhookWants({ kinds: [], rule_ids: ['a'] }, 'mql', 'r')).toBe(false)
  })
})

describe('Slack format', () => {
  it('renders a resolution for a user without a link when no public URL is known', () => {
    const s = makeSignal({
      kind: 'churn_risk',
      rule_id: 'churn-usage-drop',
      subject: { type: 'user', id: 'u<1>' },
      status: 'resolved',
      fired_at: '2026-06-01T00:00:00.000Z',
      resolved_at: '2026-06-10T00:00:00.000Z',
      reasons: [{ condition: 'active_users(7d) drop vs 28d', metric: 'active_users', measured: 12.345, op: 'drop_pct_gte', threshold: 40, passed: false }],
    })
    const m = slackMessage({ type: 'signal.resolved', timestamp: '2026-06-10T00:00:00.000Z', data: s })
    expect(m.text).toBe('Churn risk resolved for user u<1> (rule churn-usage-drop)')
    expect(m.blocks[0]?.text?.text).toBe(':white_check_mark: *Churn risk* resolved for user *u&lt;1&gt;*\nRule `churn-usage-drop` (v3)')
    expect(m.blocks[1]?.text?.text).toBe('*Why*\n▫️ `active_users(7d) drop vs 28d`: measured *12.35* (drop_pct_gte 40)')
    expect(m.blocks[2]?.elements).toEqual([{ type: 'mrkdwn', text: `resolved 2026-06-10T00:00:00.000Z (fired 2026-06-01T00:00:00.000Z) · signal ${s.id}` }])
    const linked = slackMessage({ type: 'signal.fired', timestamp: s.fired_at, data: s }, 'https://sb.example.com/')
    expect(JSON.stringify(linked)).toContain('<https://sb.example.com/v1/users/u%3C1%3E|Open user u&lt;1&gt;>')
  })
})

describe('configuration', () => {
  it('validates read tokens and webhook settings, naming the variable', () => {
    expect(loadConfig({ READ_TOKENS: 'read_token_aaaaaaaaaa, read_token_bbbbbbbbbb' }).READ_TOKENS).toEqual(['read_token_aaaaaaaaaa', 'read_token_bbbbbbbbbb'])
    expect(() => loadConfig({ READ_TOKENS: 'short' })).toThrow(/READ_TOKENS.*16 characters/)
    expect(() => loadConfig({ WEBHOOK_TIMEOUT_MS: 'ten' })).toThrow(ConfigError)
    expect(() => loadConfig({ PUBLIC_URL: 'ftp://x' })).toThrow(/PUBLIC_URL/)
  })
})

import { describe, expect, it } from 'vitest'
import { batchJson } from '../bench/ingest-data.js'
import { correctTimestamp, FUTURE_LIMIT_MS, toEventRow } from '../ingest/normalize.js'
import { chTime } from '../src/time.js'
import { RateLimiter } from '../ingest/ratelimit.js'
import { checkMessage, jsonSizeBound } from '../ingest/routes.js'
import { MessageSchemas, parseTimestamp } from '../ingest/schema.js'
import { zodDetails } from '../src/errors.js'
import { deriveRows } from '../ingest/writer.js'

// The pure parts of ingestion, with known answers.

const T = Date.UTC(2026, 10, 23, 12, 0, 0) // 2026-11-23 12:00:00 UTC
const S = 1000
const H = 3_600_000

describe('correctTimestamp', () => {
  it.each([
    ['a correct clock', T - 5 * S, T, T, T - 5 * S],
    ['a clock an hour ahead', T + H - 5 * S, T + H, T, T - 5 * S],
    ['a clock a day behind', T - 24 * H - 5 * S, T - 24 * H, T, T - 5 * S],
    ['a slow network (received 2 s after the send)', T - 5 * S, T, T + 2 * S, T - 3 * S],
  ])('%s: receivedAt − (sentAt − original)', (_, original, sentAt, receivedAt, expected) => {
    expect(correctTimestamp(original, sentAt, receivedAt)).toEqual({ timestamp: expected })
  })

  it('takes the original as is without sentAt, and receivedAt without either', () => {
    expect(correctTimestamp(T - H, undefined, T)).toEqual({ timestamp: T - H })
    expect(correctTimestamp(undefined, T - H, T)).toEqual({ timestamp: T })
    expect(correctTimestamp(undefined, undefined, T)).toEqual({ timestamp: T })
  })

  it('clamps a result more than 23 h in the future to receivedAt, with a warning', () => {
    expect(correctTimestamp(T + FUTURE_LIMIT_MS, undefined, T)).toEqual({ timestamp: T + FUTURE_LIMIT_MS })
    const clamped = correctTimestamp(T + FUTURE_LIMIT_MS + 1, undefined, T)
    expect(clamped).toEqual({ timestamp: T, warning: { path: 'timestamp', message: expect.stringMatching(/more than 23h in the future/) } })
    // sentAt cannot excuse it: an original 2 days ahead of a correct send is still in the future.
    expect(correctTimestamp(T + 48 * H, T, T).timestamp).toBe(T)
  })

  it('keeps the original when the correction would leave the years DateTime64 holds', () => {
    const original = Date.UTC(2026, 0, 1)
    const result = correctTimestamp(original, Date.UTC(2299, 0, 1), T)
    expect(result).toEqual({ timestamp: original, warning: { path: 'sentAt', message: expect.stringMatching(/before 1900/) } })
  })
})

describe('parseTimestamp', () => {
  it.each([
    ['2026-11-23T12:00:00.000Z', T],
    ['2026-11-23T12:00:00Z', T],
    ['2026-11-23T12:00:00z', T],
    ['2026-11-23T12:00:00', T],
    ['2026-11-23 12:00:00', T],
    ['2026-11-23T12:00', T],
    ['2026-11-23T12:00:00.123456789Z', T + 123],
    ['2026-11-23T12:00:00,5Z', T + 500],
    ['2026-11-23T13:30:00+01:30', T],
    ['2026-11-23T13:30:00+0130', T],
    ['2026-11-23T13:00:00+01', T],
    ['2026-11-23T07:00:00-05:00', T],
    ['2026-11-23', Date.UTC(2026, 10, 23)],
    ['2024-02-29T00:00:00Z', Date.UTC(2024, 1, 29)],
    ['1900-01-01T00:00:00Z', Date.UTC(1900, 0, 1)],
    // The form toISOString() writes, read without the regular expression.
    ['2026-11-23T12:00:00.789Z', T + 789],
    ['2024-02-29T23:59:59.999Z', Date.UTC(2024, 1, 29, 23, 59, 59, 999)],
    ['1900-01-01T00:00:00.000Z', Date.UTC(1900, 0, 1)],
    ['2299-12-31T23:59:59.999Z', Date.UTC(2300, 0, 1) - 1],
  ])('%s', (text, expected) => {
    expect(parseTimestamp(text)).toBe(expected)
  })

  it.each([
    'yesterday',
    '',
    '2026-02-30T00:00:00Z',
    '2026-02-29T00:00:00Z',
    '2026-13-01T00:00:00Z',
    '2026-11-23T24:00:00Z',
    '2026-11-23T12:60:00Z',
    '2026-11-23T12:00:00+15:00',
    '2026-11-23T12:00:00 UTC',
    '1899-12-31T23:59:59Z',
    '2300-01-01T00:00:00Z',
    '0001-01-01T00:00:00Z',
    '26-11-23',
    '1795399109749',
    '2026-02-29T00:00:00.000Z',
    '2026-04-31T00:00:00.000Z',
    '2026-00-10T00:00:00.000Z',
    '2026-11-23T24:00:00.000Z',
    '2026-11-23T12:00:60.000Z',
    '1899-12-31T23:59:59.999Z',
    '2300-01-01T00:00:00.000Z',
    '2026-11-2xT12:00:00.000Z',
    '2026-11-23T12:00:00.000Y',
    '+02026-11-23T12:00:00.0Z',
  ])('rejects %j', (text) => {
    expect(parseTimestamp(text)).toBeUndefined()
  })
})

describe('checkMessage', () => {
  it('validates by type, coercing numeric ids to text', () => {
    const checked = checkMessage({ type: 'track', userId: 42, event: 'Paid', timestamp: '2026-11-23T12:00:00Z' })
    expect(checked).toEqual({ ok: true, message: expect.objectContaining({ type: 'track', userId: '42', event: 'Paid', timestamp: T }) })
  })

  it('forces the type of a single-message route', () => {
    const checked = checkMessage({ type: 'identify', userId: 'u' }, 'track')
    expect(checked).toEqual({ ok: false, details: [{ path: 'event', message: expect.any(String) }] })
  })

  it('measures the message in UTF-8 bytes', () => {
    // 11,000 × '€' is 33,000 bytes in UTF-8 (but 11,000 UTF-16 units).
    const checked = checkMessage({ type: 'track', userId: 'u', event: 'e', properties: { s: '€'.repeat(11_000) } })
    expect(checked).toEqual({ ok: false, details: [{ path: '(message)', message: expect.stringMatching(/^is 330\d\d bytes; the limit is 32768$/) }] })
  })

  it.each([null, 1, 'x', [1]])('rejects %j as not an object', (raw) => {
    expect(checkMessage(raw)).toEqual({ ok: false, details: [{ path: '(message)', message: 'must be a JSON object' }] })
  })
})

describe('checkMessage without zod (plain track messages)', () => {
  // The fast path must answer exactly as TrackMessage does, for valid and invalid messages alike.
  const zod = (raw: unknown) => {
    const parsed = MessageSchemas.track.safeParse(raw)
    return parsed.success ? { ok: true, message: parsed.data } : { ok: false, details: zodDetails(parsed.error) }
  }
  const long = (n: number) => 'x'.repeat(n)
  const VALUES: Record<string, unknown[]> = {
    messageId: [undefined, null, '', 'm-1', long(256), long(257), 5, {}],
    userId: [undefined, null, '', 'u', 7, 0, long(1024), long(1025), {}, true],
    anonymousId: [undefined, null, '', 'a', 8, long(1025), []],
    event: [undefined, null, '', 'Signed Up', long(512), long(513), 3],
    properties: [undefined, null, {}, { plan: 'pro', n: [1, { x: null }] }, [], 'text', 1],
    context: [undefined, null, {}, { ip: '10.0.0.1', groupId: 'g' }, [], 'text'],
    integrations: [undefined, null, {}, [], false],
    timestamp: [undefined, null, '', '2026-11-23T10:00:00Z', '2026-11-23 10:00:00.5+02:00', '2026-11-23', 'yesterday', '2026-02-30T00:00:00Z', '1899-01-01T00:00:00Z', 5],
    originalTimestamp: [undefined, null, '2026-11-23T10:00:00.123-0530', 'not a date', {}],
    sentAt: [undefined, null, '2026-11-23T10:00:05Z', '2026-13-01T00:00:00Z', 0],
  }
  const base = { type: 'track', messageId: 'm-0', userId: 'u-0', event: 'Report Exported', properties: { a: 1 }, timestamp: '2026-11-23T09:59:00Z', extra: { kept: true } }

  it('agrees with zod on every single-field variation of a valid message', () => {
    let n = 0
    for (const [key, values] of Object.entries(VALUES)) {
      for (const value of values) {
        const raw: Record<string, unknown> = { ...base, [key]: value }
        if (value === undefined) delete raw[key]
        expect(checkMessage(raw), `${key}=${JSON.stringify(value)}`).toEqual(zod(raw))
        n++
      }
    }
    expect(n).toBe(70)
  })

  it('agrees with zod on 3,000 random combinations', () => {
    let seed = 42
    const next = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)
    for (let i = 0; i < 3000; i++) {
      const raw: Record<string, unknown> = { type: 'track' }
      for (const [key, values] of Object.entries(VALUES)) {
        const value = values[Math.floor(next() * values.length)]
        if (value !== undefined) raw[key] = value
      }
      expect(checkMessage(raw), JSON.stringify(raw)).toEqual(zod(raw))
    }
  })

  it('returns a copy with parsed timestamps, and leaves the message as sent', () => {
    const raw = { ...base, sentAt: '2026-11-23T10:00:00Z' }
    const checked = checkMessage(raw)
    expect(checked).toEqual({ ok: true, message: { ...base, timestamp: Date.UTC(2026, 10, 23, 9, 59), sentAt: Date.UTC(2026, 10, 23, 10) } })
    expect(raw.timestamp).toBe('2026-11-23T09:59:00Z')
    expect(checked.ok && checked.message.properties).toBe(raw.properties)
  })
})

describe('toEventRow', () => {
  const row = (msg: Record<string, unknown>) => {
    const checked = checkMessage(msg)
    if (!checked.ok) throw new Error(JSON.stringify(checked.details))
    return toEventRow(checked.message, 'web', T, T).row
  }

  it('page and screen become Page Viewed / Screen Viewed with name and category in the properties', () => {
    expect(row({ type: 'page', userId: 'u', name: 'Pricing', category: 'Docs', properties: { path: '/pricing' } })).toMatchObject({
      type: 'page',
      event: 'Page Viewed',
      properties: JSON.stringify({ path: '/pricing', name: 'Pricing', category: 'Docs' }),
    })
    expect(row({ type: 'screen', userId: 'u', name: 'Home' })).toMatchObject({ event: 'Screen Viewed', properties: '{"name":"Home"}' })
  })

  it('context.groupId attributes an event to an account; group sets it from groupId', () => {
    expect(row({ type: 'track', userId: 'u', event: 'e', context: { groupId: 'acc_1' } }).account_id).toBe('acc_1')
    expect(row({ type: 'group', userId: 'u', groupId: 'acc_2', traits: { plan: 'pro' } })).toMatchObject({ account_id: 'acc_2', traits: '{"plan":"pro"}' })
  })

  it('identify takes traits from context.traits when it has none of its own', () => {
    expect(row({ type: 'identify', userId: 'u', context: { traits: { email: 'a@b.c' } } }).traits).toBe('{"email":"a@b.c"}')
  })

  it('stores the three times as DateTime64 text', () => {
    const r = row({ type: 'track', userId: 'u', event: 'e', timestamp: '2026-11-23T11:59:50Z' })
    expect(r).toMatchObject({ timestamp: chTime(T - 10 * S), original_timestamp: chTime(T - 10 * S), sent_at: chTime(T), received_at: chTime(T) })
  })
})

describe('RateLimiter', () => {
  it('allows a burst, then a steady rate, answering whole seconds to wait', () => {
    let now = 0
    const limiter = new RateLimiter(2, 3, () => now)
    expect([1, 2, 3, 4].map(() => limiter.take('k'))).toEqual([0, 0, 0, 1])
    expect(limiter.take('other')).toBe(0)
    now += 500 // one token back at 2/s
    expect([limiter.take('k'), limiter.take('k')]).toEqual([0, 1])
  })

  it('answers at least 1 s, rounded up, at slow rates', () => {
    let now = 0
    const limiter = new RateLimiter(0.1, 1, () => now)
    expect([limiter.take('k'), limiter.take('k')]).toEqual([0, 10])
    now += 5000
    expect(limiter.take('k')).toBe(5)
  })

  it('is off at 0 requests per second', () => {
    const limiter = new RateLimiter(0, 1)
    expect(Array.from({ length: 100 }, () => limiter.take('k')).every((w) => w === 0)).toBe(true)
  })
})

describe('deriveRows', () => {
  const base = { source: 'web', anonymous_id: '', account_id: '', original_timestamp: null, sent_at: null, received_at: chTime(T), properties: '{}', traits: '{}', context: '{}', previous_id: '' }
  const ev = (o: Partial<typeof base> & { message_id: string; type: string; user_id: string; timestamp: string; event?: string }) => ({ event: '', ...base, ...o })

  it('widens first/last seen, links identities, and splits traits into rows', () => {
    const d = deriveRows([
      ev({ message_id: '1', type: 'track', user_id: 'u', anonymous_id: 'a', account_id: 'acc', timestamp: chTime(T) }),
      ev({ message_id: '2', type: 'track', user_id: 'u', account_id: 'acc', timestamp: chTime(T - H) }),
      ev({ message_id: '3', type: 'identify', user_id: 'u', traits: '{"plan":"pro","seats":5}', timestamp: chTime(T + H) }),
      ev({ message_id: '4', type: 'group', user_id: 'u', account_id: 'acc', traits: '{"tier":null}', timestamp: chTime(T) }),
      ev({ message_id: '5', type: 'alias', user_id: 'u', previous_id: 'old', timestamp: chTime(T) }),
    ])
    expect(d.users).toEqual([{ user_id: 'u', first_seen: chTime(T - H), last_seen: chTime(T + H) }])
    expect(d.accounts).toEqual([{ account_id: 'acc', first_seen: chTime(T - H), last_seen: chTime(T) }])
    expect(d.memberships).toEqual([{ account_id: 'acc', user_id: 'u', first_seen: chTime(T - H), last_seen: chTime(T) }])
    expect(d.identities).toEqual([
      { previous_id: 'a', user_id: 'u', via: 'anonymous', first_seen: chTime(T) },
      { previous_id: 'old', user_id: 'u', via: 'alias', first_seen: chTime(T) },
    ])
    expect(d.userTraits).toEqual([
      { user_id: 'u', key: 'plan', value: '"pro"', timestamp: chTime(T + H), source: 'web', message_id: '3' },
      { user_id: 'u', key: 'seats', value: '5', timestamp: chTime(T + H), source: 'web', message_id: '3' },
    ])
    expect(d.accountTraits).toEqual([{ account_id: 'acc', key: 'tier', value: 'null', timestamp: chTime(T), source: 'web', message_id: '4' }])
  })
})

describe('jsonSizeBound', () => {
  const enc = new TextEncoder()
  const exact = (v: unknown) => enc.encode(JSON.stringify(v)).length

  it.each([
    ['plain text', { a: 'hello', b: [1, 2, { c: null }], d: true }],
    ['quotes and backslashes', { 'k"\\': '"\\"\\' }],
    ['control characters', { s: '\u0000\u001f\n\t' }],
    ['non-ASCII and emoji', { s: 'é€🚀', [`🔑`]: ['ü'] }],
    ['numbers', { n: [-1.7976931348623157e308, 5e-324, 123456789012345680000] }],
    ['a realistic message', JSON.parse(batchJson('bound', 0, 1, T)).batch[0]],
  ])('bounds %s from above', (_, value) => {
    expect(jsonSizeBound(value, Infinity)).toBeGreaterThanOrEqual(exact(value))
  })

  it('stays within a few times the real size for ordinary messages, so they are never re-measured', () => {
    const msg = JSON.parse(batchJson('bound', 0, 1, T)).batch[0]
    expect(jsonSizeBound(msg, Infinity)).toBeLessThan(6 * exact(msg))
    expect(jsonSizeBound(msg, Infinity)).toBeLessThan(32 * 1024)
  })
})

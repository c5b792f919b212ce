import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { CompileOptions } from '../rules/compile.js'
import { type RuleMatch, runRule } from '../rules/run.js'
import { parseRule } from '../rules/schema.js'
import { DAY, HOUR, NOW, ev, group, identify, many, openRuleStore } from './rules-fixtures.js'

/**
 * Compiled rules run on the embedded engine against fixtures whose answers are known by
 * construction. Every query runs twice — reading whole days from the daily rollup, and reading
 * events_v1 only — and both must agree.
 */
let db: Awaited<ReturnType<typeof openRuleStore>>
beforeAll(async () => {
  db = await openRuleStore()
})
afterAll(async () => {
  await db.close()
})
beforeEach(async () => {
  await db.reset()
})

async function run(doc: unknown, opts: Partial<CompileOptions> = {}): Promise<RuleMatch[]> {
  const rule = parseRule(doc)
  const withRollup = await runRule(db.store, rule, { asOf: NOW, rollups: true, ...opts })
  const rawOnly = await runRule(db.store, rule, { asOf: NOW, ...opts, rollups: false })
  expect(rawOnly).toEqual(withRollup)
  if (!rule.sources) {
    // The per-day state answers exactly as the raw events do (rules/compile/state.ts).
    await db.stateFor([rule])
    const fromState = await runRule(db.store, rule, { asOf: NOW, ...opts, backend: 'state' })
    expect(plain(fromState)).toEqual(plain(withRollup))
  }
  if (opts.subjectIds) {
    // An incremental run (scope from rules/scope.ts) answers as the full run does for its subjects.
    const full = await runRule(db.store, rule, { asOf: NOW, ...opts, subjectIds: undefined })
    const asked = new Set(opts.subjectIds)
    expect(withRollup.filter((r) => r.matched)).toEqual(full.filter((r) => asked.has(r.subjectId)))
  }
  return withRollup
}

/** Matches as plain objects (reasons built), to compare two backends. */
const plain = (rows: RuleMatch[]) => rows.map((r) => ({ subjectId: r.subjectId, matched: r.matched, score: r.score, reasons: r.reasons }))

/** Matched subject ids of a full run. */
const matched = async (doc: unknown, opts: Partial<CompileOptions> = {}) => (await run(doc, opts)).map((r) => r.subjectId)

/** subject → measured value of reason `i`, for the given subjects. */
async function measured(doc: unknown, ids: string[], i = 0, opts: Partial<CompileOptions> = {}) {
  const rows = await run(doc, { ...opts, subjectIds: ids })
  return Object.fromEntries(rows.map((r) => [r.subjectId, r.reasons[i]?.measured]))
}

const accountRule = (when: unknown, extra: object = {}) => ({ id: 'r', kind: 'custom', subject: 'account', when, ...extra })
const userRule = (when: unknown, extra: object = {}) => ({ id: 'r', kind: 'custom', subject: 'user', when, ...extra })
const count = (value: number, extra: object = {}) => ({ all: [{ metric: 'count', event: 'Message Sent', window: '30d', op: 'gte', value, ...extra }] })

describe('count and thresholds', () => {
  const pql = {
    id: 'pql-active-team',
    kind: 'pql',
    subject: 'account',
    where: [{ trait: 'plan', op: 'eq', value: 'free' }],
    when: {
      all: [
        { metric: 'count', event: 'Message Sent', window: '30d', op: 'gte', value: 20 },
        { metric: 'active_users', window: '7d', op: 'gte', value: 2 },
      ],
    },
  }

  it('fires exactly at and over the threshold, not one under', async () => {
    const team = (acc: string, n: number) => [
      group(`${acc}-a`, acc, { plan: 'free' }, NOW - 40 * DAY),
      group(`${acc}-b`, acc, {}, NOW - 40 * DAY),
      ...many(n, NOW - 30 * DAY, NOW, { event: 'Message Sent', userId: `${acc}-a` }),
      ev({ at: NOW - HOUR, event: 'Opened', userId: `${acc}-b` }),
    ]
    await db.put([...team('under', 19), ...team('at', 20), ...team('over', 21)])
    expect(await matched(pql)).toEqual(['at', 'over'])
    const rows = await run(pql, { subjectIds: ['under', 'at', 'nobody'] })
    expect(rows.map((r) => [r.subjectId, r.matched, r.reasons.map((x) => x.measured)])).toEqual([
      ['at', true, ['free', 20, 2]],
      ['nobody', false, [null, 0, 0]],
      ['under', false, ['free', 19, 2]],
    ])
  })

  it('explains every condition with its measured value and threshold', async () => {
    await db.put([group('u1', 'acc', { plan: 'free' }, NOW - 40 * DAY), ...many(25, NOW - 10 * DAY, NOW, { event: 'Message Sent', userId: 'u1' })])
    const [row] = await run(pql, { subjectIds: ['acc'] })
    expect(row).toEqual({
      subjectId: 'acc',
      matched: false,
      score: null,
      reasons: [
        { condition: 'trait plan eq "free"', metric: 'trait', op: 'eq', threshold: 'free', measured: 'free', passed: true },
        { condition: 'count(Message Sent, 30d) >= 20', metric: 'count', op: 'gte', threshold: 20, measured: 25, passed: true },
        { condition: 'active_users(7d) >= 2', metric: 'active_users', op: 'gte', threshold: 2, measured: 1, passed: false },
      ],
    })
  })

  it('counts events in (asOf − window, asOf]: the left edge and the future are out', async () => {
    await db.put([
      group('u1', 'acc', {}, NOW - 40 * DAY),
      ev({ at: NOW - 30 * DAY, event: 'Message Sent', userId: 'u1' }), // exactly the left edge: out
      ev({ at: NOW - 30 * DAY + 1, event: 'Message Sent', userId: 'u1' }), // 1 ms inside
      ev({ at: NOW - 15 * DAY, event: 'Message Sent', userId: 'u1' }),
      ev({ at: NOW, event: 'Message Sent', userId: 'u1' }), // exactly now: in
      ev({ at: NOW + 1, event: 'Message Sent', userId: 'u1' }), // the future: out
    ])
    expect(await measured(accountRule(count(1)), ['acc'])).toEqual({ acc: 3 })
    // As of an earlier moment (a backtest), later events do not exist yet.
    expect(await measured(accountRule(count(1)), ['acc'], 0, { asOf: NOW - 15 * DAY })).toEqual({ acc: 3 })
    expect(await measured(accountRule(count(1)), ['acc'], 0, { asOf: NOW - 15 * DAY - 1 })).toEqual({ acc: 2 })
  })

  it('counts only track, page and screen: identify, group and alias are not activity', async () => {
    await db.put([
      group('u1', 'acc', { plan: 'free' }, NOW - 2 * DAY),
      identify('u1', { title: 'CTO' }, NOW - DAY),
      ev({ type: 'alias', userId: 'u1', previousId: 'old', at: NOW - DAY }),
      ev({ type: 'page', userId: 'u1', accountId: 'acc', at: NOW - HOUR }),
      ev({ type: 'screen', userId: 'u1', accountId: 'acc', at: NOW - HOUR }),
      ev({ event: 'Message Sent', userId: 'u1', at: NOW - HOUR }),
    ])
    const all = accountRule({ all: [{ metric: 'count', window: '7d', op: 'gte', value: 1 }] })
    expect(await measured(all, ['acc'])).toEqual({ acc: 3 })
  })

  it('counts a message once when it is inserted twice, in the rollup as in events_v1', async () => {
    const row = ev({ at: NOW - 10 * DAY, event: 'Message Sent', userId: 'u1', accountId: 'acc', messageId: 'dup-1' })
    await db.put([row])
    // Around the writer's dedup: the same message inserted again, directly.
    await db.store.insert('events_v1', [row])
    await db.store.insert('events_v1', [{ ...row, source: 'app' }]) // same id, another source: another message
    const [stored] = await db.store.query<{ n: number }>("SELECT count() AS n FROM events_v1 WHERE message_id = 'dup-1'")
    expect(Number(stored?.n)).toBe(3)
    const rolled = await db.store.query<{ source: string; n: number }>('SELECT source, uniqExactMerge(messages) AS n FROM activity_daily_v1 GROUP BY source ORDER BY source')
    expect(rolled.map((r) => [r.source, Number(r.n)])).toEqual([
      ['app', 1],
      ['web', 1],
    ])
    // Rows written around the writer reach the per-day state through a rebuild, which reads each message once.
    await db.rebuild()
    expect(await measured(accountRule(count(1)), ['acc'])).toEqual({ acc: 2 })
  })

  it('sums every day of a long window across the rollup and the raw edges', async () => {
    // One event at 06:00 and one at 18:00 every day for 60 days: the edges are partial days.
    const rows = Array.from({ length: 60 }, (_, d) => [
      ev({ at: NOW - d * DAY - 6 * HOUR, event: 'Message Sent', userId: 'u1', accountId: 'acc' }),
      ev({ at: NOW - d * DAY + 6 * HOUR, event: 'Message Sent', userId: 'u1', accountId: 'acc' }),
    ]).flat()
    await db.put(rows)
    // (NOW − 30d, NOW]: the 06:00 events of days 0..29 back and the 18:00 events of days 1..30 back.
    expect(await measured(accountRule(count(1)), ['acc'])).toEqual({ acc: 60 })
    // 702h back is exactly the 06:00 event 29 days ago: the left edge is out.
    expect(await measured(accountRule(count(1, { window: '702h' })), ['acc'])).toEqual({ acc: 58 })
    expect(await measured(accountRule(count(1, { window: '703h' })), ['acc'])).toEqual({ acc: 59 })
  })
})

describe('subjects: accounts and users', () => {
  it('an account sees tagged events and its members’ untagged events, including their joined anonymous history', async () => {
    await db.put([
      group('u1', 'A', {}, NOW - 20 * DAY),
      ev({ at: NOW - DAY, event: 'Message Sent', userId: 'u1' }), // member, untagged → A
      ev({ at: NOW - DAY, event: 'Message Sent', userId: 'u2', accountId: 'A' }), // tagged → A
      group('u3', 'A', {}, NOW - 20 * DAY),
      group('u3', 'B', {}, NOW - 20 * DAY),
      ev({ at: NOW - DAY, event: 'Message Sent', userId: 'u3' }), // member of both, untagged → A and B
      ev({ at: NOW - DAY, event: 'Message Sent', userId: 'u3', accountId: 'B' }), // tagged → B only
      ev({ at: NOW - 10 * DAY, event: 'Message Sent', anonymousId: 'anon4' }), // before signing up
      identify('u4', {}, NOW - 5 * DAY, 'anon4'),
      group('u4', 'A', {}, NOW - 5 * DAY),
      ev({ at: NOW - DAY, event: 'Message Sent', userId: 'u5' }), // nobody's member: no account
    ])
    const users = accountRule({ all: [{ metric: 'active_users', window: '30d', op: 'gte', value: 1 }] })
    expect(await measured(accountRule(count(1)), ['A', 'B'])).toEqual({ A: 4, B: 2 })
    expect(await measured(users, ['A', 'B'])).toEqual({ A: 4, B: 1 })
  })

  it('a user sees the anonymous and aliased history joined to them', async () => {
    await db.put([
      ev({ type: 'page', anonymousId: 'anon1', at: NOW - 10 * DAY }),
      ev({ type: 'page', anonymousId: 'anon1', at: NOW - 9 * DAY }),
      identify('first-id', {}, NOW - 8 * DAY, 'anon1'),
      ev({ type: 'page', userId: 'first-id', at: NOW - 7 * DAY }),
      ev({ type: 'alias', previousId: 'first-id', userId: 'final-id', at: NOW - 6 * DAY }),
      ev({ type: 'page', userId: 'final-id', at: NOW - 5 * DAY }),
      ev({ type: 'page', anonymousId: 'never-identified', at: NOW - 5 * DAY }),
    ])
    const views = userRule({ all: [{ metric: 'count', event: 'Page Viewed', window: '30d', op: 'gte', value: 4 }] })
    expect(await matched(views)).toEqual(['final-id'])
    expect(await measured(views, ['final-id', 'never-identified'])).toEqual({ 'final-id': 4, 'never-identified': 0 })
  })

  it('an incremental account run resolves the ids on tagged events of non-members, and two-hop histories of members', async () => {
    await db.put([
      // Someone who is not a member sends events tagged with A from two devices before signing
      // in (never tagged once signed in): one user, not two.
      ev({ at: NOW - 3 * DAY, event: 'Message Sent', anonymousId: 'anon-x', accountId: 'A' }),
      ev({ at: NOW - 3 * DAY, event: 'Message Sent', anonymousId: 'anon-y', accountId: 'A' }),
      identify('outsider', {}, NOW - 2 * DAY, 'anon-x'),
      identify('outsider', {}, NOW - 2 * DAY, 'anon-y'),
      ev({ at: NOW - DAY, event: 'Message Sent', userId: 'outsider' }),
      // A member's untagged history: anonymous → first id → aliased id (two hops).
      ev({ at: NOW - 4 * DAY, event: 'Message Sent', anonymousId: 'anon-m' }),
      identify('first-m', {}, NOW - 4 * DAY, 'anon-m'),
      ev({ at: NOW - 3 * DAY, event: 'Message Sent', userId: 'first-m' }),
      ev({ type: 'alias', previousId: 'first-m', userId: 'member', at: NOW - 2 * DAY }),
      group('member', 'A', {}, NOW - 2 * DAY),
      // Another account's member, whose events must not leak into A.
      group('other', 'B', {}, NOW - 2 * DAY),
      ev({ at: NOW - DAY, event: 'Message Sent', userId: 'other' }),
    ])
    const users = accountRule({ all: [{ metric: 'active_users', window: '30d', op: 'gte', value: 1 }] })
    // `measured` also checks each incremental answer against the full run's.
    expect(await measured(users, ['A'])).toEqual({ A: 2 })
    expect(await measured(accountRule(count(1)), ['A'])).toEqual({ A: 4 })
  })

  it('narrows to sources', async () => {
    await db.put([
      ev({ at: NOW - DAY, event: 'Message Sent', userId: 'u1', accountId: 'acc', source: 'web' }),
      ev({ at: NOW - 3 * DAY, event: 'Message Sent', userId: 'u1', accountId: 'acc', source: 'app' }),
      ev({ at: NOW - 3 * DAY, event: 'Message Sent', userId: 'u1', accountId: 'acc', source: 'backend' }),
    ])
    expect(await measured(accountRule(count(1), { sources: ['app', 'backend'] }), ['acc'])).toEqual({ acc: 2 })
  })

  it('splits subjects into shards whose union is the full run', async () => {
    await db.put(Array.from({ length: 12 }, (_, i) => ev({ at: NOW - DAY, event: 'Message Sent', userId: `u${i}`, accountId: `acc${i}` })))
    const rule = accountRule(count(1))
    const full = await matched(rule)
    expect(full).toHaveLength(12)
    const shards = await Promise.all([0, 1, 2].map((index) => matched(rule, { shard: { count: 3, index } })))
    expect(shards.flat().sort()).toEqual(full)
    expect(shards.every((s) => s.length < 12)).toBe(true)
  })
})

describe('metrics', () => {
  it('active_days counts distinct UTC days with activity', async () => {
    await db.put([
      ev({ at: NOW - 1 * HOUR, event: 'E', userId: 'u1', accountId: 'acc' }),
      ev({ at: NOW - 2 * HOUR, event: 'E', userId: 'u1', accountId: 'acc' }),
      ev({ at: NOW - 3 * DAY, event: 'E', userId: 'u2', accountId: 'acc' }),
      ev({ at: NOW - 5 * DAY, event: 'E', userId: 'u1', accountId: 'acc' }),
      ev({ at: NOW - 9 * DAY, event: 'E', userId: 'u1', accountId: 'acc' }),
    ])
    const days = (value: number) => accountRule({ all: [{ metric: 'active_days', window: '7d', op: 'gte', value }] })
    expect(await measured(days(3), ['acc'])).toEqual({ acc: 3 })
    expect(await matched(days(3))).toEqual(['acc'])
    expect(await matched(days(4))).toEqual([])
  })

  it('sum, avg, max and min of a numeric property (numbers or numeric strings)', async () => {
    const order = (amount: unknown, at = NOW - DAY) => ev({ at, event: 'Order', userId: 'u1', accountId: 'acc', properties: { amount } })
    await db.put([order(10), order('30'), order(20), order('n/a'), order(1000, NOW - 40 * DAY), ev({ at: NOW - DAY, event: 'Order', userId: 'u1', accountId: 'acc' })])
    const m = (metric: string) => accountRule({ all: [{ metric, property: 'amount', event: 'Order', window: '30d', op: 'gte', value: 0 }] })
    expect(await measured(m('sum'), ['acc'])).toEqual({ acc: 60 })
    expect(await measured(m('avg'), ['acc'])).toEqual({ acc: 20 })
    expect(await measured(m('max'), ['acc'])).toEqual({ acc: 30 })
    expect(await measured(m('min'), ['acc'])).toEqual({ acc: 10 })
    expect(await measured(m('avg'), ['nobody'])).toEqual({ nobody: null })
  })

  it('days_since_last_seen, with the lookback as a lower bound when nothing is found', async () => {
    await db.put([
      ev({ at: NOW - 10 * DAY, event: 'E', userId: 'u1', accountId: 'quiet' }),
      ev({ at: NOW - 100 * DAY, event: 'E', userId: 'u2', accountId: 'gone' }),
      ev({ at: NOW - 2 * DAY, event: 'E', userId: 'u3', accountId: 'busy' }),
    ])
    const since = (value: number) => accountRule({ all: [{ metric: 'days_since_last_seen', window: '90d', op: 'gte', value }] })
    expect(await measured(since(10), ['quiet', 'gone', 'busy'])).toEqual({ quiet: 10, gone: 90, busy: 2 })
    expect(await matched(since(10))).toEqual(['gone', 'quiet'])
    expect(await matched(since(10.001))).toEqual(['gone'])
  })

  it('baseline drop: mean daily active users against the 28 days before the last 7', async () => {
    const daily = (user: string, acc: string, from: number, to: number) =>
      Array.from({ length: to - from }, (_, d) => ev({ at: NOW - (from + d) * DAY - HOUR, event: 'E', userId: user, accountId: acc }))
    // Baseline (days 7..34 ago): 4 users every day → 4 per day. Last 7 days: 2 users every day → 2 per day.
    await db.put([
      ...['a', 'b', 'c', 'd'].flatMap((u) => daily(`${u}1`, 'dropping', 7, 35)),
      ...['a', 'b'].flatMap((u) => daily(`${u}1`, 'dropping', 0, 7)),
      ...['a', 'b'].flatMap((u) => daily(`${u}2`, 'steady', 0, 35)),
    ])
    const drop = (value: number, min_baseline?: number) =>
      accountRule({
        all: [{ metric: 'active_users', window: '7d', baseline: { window: '28d', offset: '7d' }, op: 'drop_pct_gte', value, ...(min_baseline !== undefined ? { min_baseline } : {}) }],
      })
    const [row] = await run(drop(50), { subjectIds: ['dropping'] })
    expect(row?.reasons[0]).toMatchObject({ measured: 50, passed: true, detail: { current_per_day: 2, baseline_per_day: 4 } })
    expect(await matched(drop(50))).toEqual(['dropping'])
    expect(await matched(drop(50.01))).toEqual([])
    expect(await matched(drop(50, 4))).toEqual(['dropping'])
    expect(await matched(drop(50, 4.01))).toEqual([])
    expect(await measured(drop(50), ['steady'])).toEqual({ steady: 0 })
  })

  it('baseline rise of a count, normalised per day', async () => {
    // Baseline: 14 events over 14 days (1/day); last 7 days: 21 events (3/day) → +200%.
    await db.put([
      ...many(14, NOW - 21 * DAY, NOW - 7 * DAY, { event: 'E', userId: 'u1', accountId: 'acc' }),
      ...many(21, NOW - 7 * DAY, NOW, { event: 'E', userId: 'u1', accountId: 'acc' }),
    ])
    const rise = (value: number) => accountRule({ all: [{ metric: 'count', event: 'E', window: '7d', baseline: { window: '14d' }, op: 'rise_pct_gte', value }] })
    expect(await measured(rise(200), ['acc'])).toEqual({ acc: 200 })
    expect(await matched(rise(200))).toEqual(['acc'])
    expect(await matched(rise(201))).toEqual([])
  })

  it('seat usage: active users (or a trait) over the seats trait', async () => {
    await db.put([
      group('u1', 'acc', { seats: 4 }, NOW - 40 * DAY),
      group('u2', 'acc', {}, NOW - 40 * DAY),
      group('u3', 'acc', {}, NOW - 40 * DAY),
      group('u4', 'acc', {}, NOW - 40 * DAY),
      ...['u1', 'u2', 'u3'].map((u) => ev({ at: NOW - 2 * DAY, event: 'E', userId: u })),
      ev({ at: NOW - 35 * DAY, event: 'E', userId: 'u4' }),
      group('v1', 'traits', { seats: '10', seats_used: 9 }, NOW - DAY),
      ev({ at: NOW - DAY, event: 'E', userId: 'v1' }),
      ev({ at: NOW - DAY, event: 'E', userId: 'w1', accountId: 'no-seats' }),
    ])
    const seats = (value: number, extra: object = {}) => accountRule({ all: [{ metric: 'seat_usage', window: '30d', op: 'gte', value, ...extra }] })
    expect(await measured(seats(0.75), ['acc', 'no-seats'])).toEqual({ acc: 0.75, 'no-seats': null })
    expect(await matched(seats(0.75))).toEqual(['acc'])
    expect(await matched(seats(0.76))).toEqual([])
    expect(await measured(seats(0.9, { used_trait: 'seats_used' }), ['traits'])).toEqual({ traits: 0.9 })
  })

  it('champion: the most active user quiet for N days while others continue', async () => {
    await db.put([
      ...many(50, NOW - 80 * DAY, NOW - 20 * DAY, { event: 'E', userId: 'champ', accountId: 'lost' }),
      ...many(5, NOW - 5 * DAY, NOW, { event: 'E', userId: 'other', accountId: 'lost' }),
      ...many(50, NOW - 80 * DAY, NOW - DAY, { event: 'E', userId: 'champ2', accountId: 'fine' }),
      ...many(5, NOW - 5 * DAY, NOW, { event: 'E', userId: 'other2', accountId: 'fine' }),
    ])
    const quiet = (value: number) => accountRule({ all: [{ metric: 'champion_quiet', champion: 'top', window: '90d', op: 'gte', value }] })
    const rows = await run(quiet(20), { subjectIds: ['lost', 'fine', 'empty'] })
    expect(rows.map((r) => [r.subjectId, r.matched, r.reasons[0]?.measured, r.reasons[0]?.detail])).toEqual([
      ['empty', false, null, { champion: '' }],
      ['fine', false, 1, { champion: 'champ2' }],
      ['lost', true, 20, { champion: 'champ' }],
    ])
    expect(await matched(quiet(20.001))).toEqual([])
  })

  it('champion: users with a trait, quiet for N days', async () => {
    await db.put([
      group('c1', 'acc', {}, NOW - 60 * DAY),
      identify('c1', { role: 'champion' }, NOW - 60 * DAY),
      group('c2', 'acc', {}, NOW - 60 * DAY),
      identify('c2', { role: 'champion' }, NOW - 60 * DAY),
      group('m1', 'acc', {}, NOW - 60 * DAY),
      ev({ at: NOW - 30 * DAY, event: 'E', userId: 'c1' }),
      ev({ at: NOW - 16 * DAY, event: 'E', userId: 'c2' }),
      ev({ at: NOW - HOUR, event: 'E', userId: 'm1' }),
      group('s1', 'silent', {}, NOW - 60 * DAY),
      identify('s1', { role: 'champion' }, NOW - 60 * DAY),
      group('x1', 'none', {}, NOW - 60 * DAY),
      ev({ at: NOW - HOUR, event: 'E', userId: 'x1' }),
    ])
    const quiet = accountRule({ all: [{ metric: 'champion_quiet', champion: { trait: 'role', op: 'eq', value: 'champion' }, window: '90d', op: 'gte', value: 14 }] })
    const rows = await run(quiet, { subjectIds: ['acc', 'silent', 'none'] })
    expect(rows.map((r) => [r.subjectId, r.matched, r.reasons[0]?.measured, r.reasons[0]?.detail])).toEqual([
      ['acc', true, 16, { champion: 'c2' }],
      ['none', false, null, { champion: '' }],
      ['silent', true, 90, { champion: 's1' }],
    ])
  })
})

describe('filters', () => {
  const props = [
    { plan: 'pro', n: 5, tags: ['beta', 'Admin'], title: 'VP of Sales' },
    { plan: 'free', n: '7', tags: [], title: 'engineer' },
    { plan: 'pro', n: 9, flag: true },
    {},
  ]
  const cases: [object, number][] = [
    [{ property: 'plan', op: 'eq', value: 'pro' }, 2],
    [{ property: 'plan', op: 'neq', value: 'pro' }, 1],
    [{ property: 'n', op: 'gt', value: 5 }, 2],
    [{ property: 'n', op: 'gte', value: 5 }, 3],
    [{ property: 'n', op: 'lt', value: 7 }, 1],
    [{ property: 'n', op: 'lte', value: 7 }, 2],
    [{ property: 'n', op: 'eq', value: 7 }, 1],
    [{ property: 'plan', op: 'in', value: ['free', 'enterprise'] }, 1],
    [{ property: 'n', op: 'in', value: [5, 9] }, 2],
    [{ property: 'title', op: 'contains', value: 'vp' }, 1],
    [{ property: 'title', op: 'contains', value: ['nothing', 'ENGIN'] }, 1],
    [{ property: 'tags', op: 'contains', value: 'beta' }, 1],
    // More needles than one multiSearchAny call takes (255): searched in slices, the match in the last one.
    [{ property: 'title', op: 'contains', value: [...Array.from({ length: 600 }, (_, i) => `nothing${i}`), 'OF SALES'] }, 1],
    [{ property: 'tags', op: 'contains', value: [...Array.from({ length: 600 }, (_, i) => `nothing${i}`), 'Admin'] }, 1],
    [{ property: 'flag', op: 'exists' }, 1],
    [{ property: 'flag', op: 'exists', value: false }, 3],
    [{ property: 'flag', op: 'eq', value: true }, 1],
  ]
  it.each(cases)('property filter %o matches %i events', async (filter, n) => {
    await db.put(props.map((properties) => ev({ at: NOW - DAY, event: 'E', userId: 'u1', accountId: 'acc', properties })))
    expect(await measured(accountRule({ all: [{ metric: 'count', event: 'E', where: [filter], window: '7d', op: 'gte', value: 1 }] }), ['acc'])).toEqual({ acc: n })
  })

  it('string filters match values written with JSON escapes, as other clients may write them', async () => {
    // Stored as sent (no re-serialization): an escaped slash, a unicode escape, an escaped quote.
    const texts = ['{"path":"\\/pricing"}', '{"path":"/pric\\u0069ng"}', '{"path":"a\\"b"}', '{"path":"/pricing"}', '{"path":"/docs","x":"/pricing"}']
    await db.put(texts.map((properties) => ({ ...ev({ at: NOW - DAY, event: 'E', userId: 'u1', accountId: 'acc' }), properties })))
    const where = (filter: object) => accountRule({ all: [{ metric: 'count', event: 'E', where: [filter], window: '7d', op: 'gte', value: 1 }] })
    expect(await measured(where({ property: 'path', op: 'eq', value: '/pricing' }), ['acc'])).toEqual({ acc: 3 })
    expect(await measured(where({ property: 'path', op: 'in', value: ['a"b', '/nowhere'] }), ['acc'])).toEqual({ acc: 1 })
    // More values than multiSearchAny takes (255): the filter still works, without the prefilter.
    const many = [...Array.from({ length: 300 }, (_, i) => `/p${i}`), '/pricing']
    expect(await measured(where({ property: 'path', op: 'in', value: many }), ['acc'])).toEqual({ acc: 3 })
  })

  it('plan filters read the latest trait as of the evaluation moment', async () => {
    await db.put([
      group('u1', 'free-acc', { plan: 'free' }, NOW - 10 * DAY),
      group('u2', 'upgraded', { plan: 'free' }, NOW - 10 * DAY),
      group('u2', 'upgraded', { plan: 'pro' }, NOW - 2 * DAY),
      group('u3', 'no-plan', { seats: 3 }, NOW - 10 * DAY),
      ...['u1', 'u2', 'u3'].map((u) => ev({ at: NOW - DAY, event: 'Message Sent', userId: u })),
    ])
    const free = accountRule(count(1), { where: [{ trait: 'plan', op: 'eq', value: 'free' }] })
    const notFree = accountRule(count(1), { where: [{ trait: 'plan', op: 'neq', value: 'free' }] })
    const noPlan = accountRule(count(1), { where: [{ trait: 'plan', op: 'exists', value: false }] })
    expect(await matched(free)).toEqual(['free-acc'])
    expect(await matched(notFree)).toEqual(['upgraded'])
    expect(await matched(noPlan)).toEqual(['no-plan'])
    // Three days ago the upgrade had not happened; the message of yesterday had not been sent either.
    expect(await matched(accountRule({ all: [{ trait: 'plan', op: 'eq', value: 'free' }] }), { asOf: NOW - 3 * DAY })).toEqual(['free-acc', 'upgraded'])
  })

  it('any / all nest', async () => {
    await db.put([
      group('u1', 'a', { plan: 'pro' }, NOW - 10 * DAY),
      group('u2', 'b', { plan: 'free' }, NOW - 10 * DAY),
      group('u3', 'c', { plan: 'free' }, NOW - 10 * DAY),
      ...many(3, NOW - 5 * DAY, NOW, { event: 'Message Sent', userId: 'u3' }),
    ])
    const rule = accountRule({
      any: [{ trait: 'plan', op: 'eq', value: 'pro' }, { all: [{ trait: 'plan', op: 'eq', value: 'free' }, { metric: 'count', event: 'Message Sent', window: '7d', op: 'gte', value: 3 }] }],
    })
    expect(await matched(rule)).toEqual(['a', 'c'])
    const [row] = await run(rule, { subjectIds: ['b'] })
    expect(row?.reasons.map((r) => [r.condition, r.passed])).toEqual([
      ['trait plan eq "pro"', false],
      ['trait plan eq "free"', true],
      ['count(Message Sent, 7d) >= 3', false],
    ])
  })
})

describe('scores', () => {
  const mql = (threshold: number, extra: object = {}) => ({
    id: 'mql',
    kind: 'mql',
    subject: 'user',
    score: {
      half_life: '14d',
      items: [
        { event: 'Page Viewed', where: [{ property: 'path', op: 'eq', value: '/pricing' }], points: 10, max: 30 },
        { event: 'Webinar Registered', points: 20 },
        { when: { metric: 'active_days', event: 'Page Viewed', window: '30d', op: 'gte', value: 3 }, points: 5 },
        { trait: 'title', op: 'contains', value: 'VP', points: 15 },
      ],
      ...extra,
    },
    threshold,
  })
  const pricing = (user: string, at: number) => ev({ type: 'page', userId: user, at, properties: { path: '/pricing' } })

  it('decays points by age: a half-life ago counts half', async () => {
    await db.put([ev({ at: NOW, event: 'Webinar Registered', userId: 'fresh' }), ev({ at: NOW - 14 * DAY, event: 'Webinar Registered', userId: 'old' })])
    const rows = await run(mql(10), { subjectIds: ['fresh', 'old'] })
    expect(rows.map((r) => [r.subjectId, r.score, r.matched])).toEqual([
      ['fresh', 20, true],
      ['old', 10, true],
    ])
    expect(await matched(mql(10.01))).toEqual(['fresh'])
  })

  it('caps an item, adds condition and trait points, and explains each item', async () => {
    await db.put([
      identify('lead', { title: 'VP Marketing' }, NOW - 20 * DAY),
      ...[0, 1, 2, 3, 4].map((d) => pricing('lead', NOW - d * DAY)),
      ev({ type: 'page', userId: 'lead', at: NOW - 3 * DAY, properties: { path: '/blog' } }),
    ])
    const [row] = await run(mql(50), { subjectIds: ['lead'] })
    // Five pricing views decayed: 10 × Σ 2^(−d/14) for d = 0..4 ≈ 46.6, capped at 30; 5 active days ≥ 3 → 5; title → 15.
    expect(row?.score).toBe(50)
    expect(row?.matched).toBe(true)
    expect(row?.reasons.map((r) => [r.condition, r.measured])).toEqual([
      ['10 points per Page Viewed where path eq "/pricing", at most 30, halving every 14d', 30],
      ['20 points per Webinar Registered, halving every 14d', 0],
      ['5 points when active_days(Page Viewed, 30d) >= 3', 5],
      ['15 points when trait title contains "VP"', 15],
      ['score >= 50', 50],
    ])
    expect(row?.reasons[0]?.detail).toEqual({ events: 5 })
    expect(await matched(mql(50.01))).toEqual([])
  })

  it('ignores events older than the score window', async () => {
    await db.put([ev({ at: NOW - 31 * DAY, event: 'Webinar Registered', userId: 'u' }), ev({ at: NOW - 29 * DAY, event: 'Webinar Registered', userId: 'u' })])
    const [row] = await run(mql(0, { half_life: undefined, window: '30d' }), { subjectIds: ['u'] })
    expect(row?.score).toBe(20)
  })
})

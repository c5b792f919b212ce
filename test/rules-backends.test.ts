import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { EventRow } from '../ingest/normalize.js'
import { stateMeasures } from '../rules/compile/state.js'
import { type RuleMatch, runRules } from '../rules/run.js'
import { parseRule, type Rule } from '../rules/schema.js'
import { DAY, HOUR, NOW, ev, group, identify, many, openRuleStore } from './rules-fixtures.js'

/**
 * The two backends of the rule compiler answer alike: the reference (raw events and the rollup,
 * attributed at query time) and the per-day state (rules/compile/state.ts), kept by the writer as
 * the events arrive (rules/state/). Every comparison is of matched subjects and every measured
 * value, for full and incremental runs, at moments that put window edges through the fixtures'
 * days. The rules cover every metric; the fixtures aliases, memberships, duplicates and window
 * edges, and identify / alias / group arriving after the events they re-attribute. (The compile
 * fixtures in rules-compile.test.ts are compared too, after a rebuild of the state.)
 */
const DIR = fileURLToPath(new URL('../rules/defaults/', import.meta.url))
const pack = readdirSync(DIR)
  .filter((f) => f.endsWith('.yaml'))
  .map((f) => parseRule(parse(readFileSync(`${DIR}${f}`, 'utf8'))))

const custom = (subject: 'account' | 'user', id: string, when: unknown): Rule => parseRule({ id, kind: 'custom', subject, when })
const metrics: Rule[] = [
  custom('account', 'count-any', { all: [{ metric: 'count', window: '7d', op: 'gte', value: 1 }] }),
  custom('account', 'count-list', { all: [{ metric: 'count', event: ['Message Sent', 'Page Viewed'], window: '30h', op: 'gte', value: 1 }] }),
  custom('account', 'count-where', { all: [{ metric: 'count', event: 'Order', where: [{ property: 'plan', op: 'eq', value: 'pro' }], window: '10d', op: 'gte', value: 1 }] }),
  custom('account', 'users', { all: [{ metric: 'active_users', window: '3d', op: 'gte', value: 1 }] }),
  custom('account', 'days', { all: [{ metric: 'active_days', event: 'Message Sent', window: '14d', op: 'gte', value: 2 }] }),
  custom('account', 'sum', { all: [{ metric: 'sum', property: 'amount', event: 'Order', window: '30d', op: 'gte', value: 10 }] }),
  custom('account', 'avg', { all: [{ metric: 'avg', property: 'amount', event: 'Order', window: '30d', op: 'gte', value: 10 }] }),
  custom('account', 'max', { all: [{ metric: 'max', property: 'amount', window: '30d', op: 'gte', value: 10 }] }),
  custom('account', 'min', { all: [{ metric: 'min', property: 'amount', event: 'Order', where: [{ property: 'plan', op: 'exists' }], window: '30d', op: 'lte', value: 10 }] }),
  custom('account', 'since', { all: [{ metric: 'days_since_last_seen', event: 'Message Sent', window: '60d', op: 'gte', value: 1 }] }),
  custom('account', 'since-where', { all: [{ metric: 'days_since_last_seen', where: [{ property: 'plan', op: 'eq', value: 'pro' }], window: '60d', op: 'gte', value: 1 }] }),
  custom('account', 'rise', { all: [{ metric: 'count', window: '2d', baseline: { window: '5d' }, op: 'rise_pct_gte', value: 10 }] }),
  custom('account', 'champion-trait', { all: [{ metric: 'champion_quiet', champion: { trait: 'role', op: 'eq', value: 'champion' }, window: '20d', op: 'gte', value: 2 }] }),
  custom('user', 'user-count', { all: [{ metric: 'count', window: '12h', op: 'gte', value: 1 }] }),
  custom('user', 'user-days', { all: [{ metric: 'active_days', window: '9d', op: 'gte', value: 2 }] }),
  parseRule({
    id: 'user-score',
    kind: 'mql',
    subject: 'user',
    score: {
      half_life: '2d',
      window: '20d',
      items: [
        { event: 'Page Viewed', where: [{ property: 'path', op: 'eq', value: '/pricing' }], points: 10, max: 25 },
        { event: 'Order', points: 3 },
        { when: { metric: 'count', event: 'Page Viewed', window: '5d', op: 'gte', value: 2 }, points: 4 },
      ],
    },
    threshold: 5,
  }),
]
const rules = [...pack, ...metrics]

let db: Awaited<ReturnType<typeof openRuleStore>>
beforeAll(async () => {
  db = await openRuleStore()
  // The writer keeps what these rules read from the first event on (no rebuild in this file).
  db.keeper.measures = stateMeasures(rules)
})
afterAll(async () => {
  await db.close()
})

const plain = (rows: RuleMatch[]) => rows.map((r) => ({ subjectId: r.subjectId, matched: r.matched, score: r.score, reasons: r.reasons }))

/** Both backends, every rule (grouped as the evaluator groups them), one moment; returns the state's answer. */
async function agree(asOf: number, ids?: { account: string[]; user: string[] }) {
  for (const subject of ['account', 'user'] as const) {
    const group = rules.filter((r) => r.subject === subject)
    const subjectIds = ids?.[subject]
    if (subjectIds && !subjectIds.length) continue
    const events = await runRules(db.store, group, { asOf, subjectIds })
    const state = await runRules(db.store, group, { asOf, subjectIds, backend: 'state' })
    group.forEach((rule, k) => expect({ rule: rule.id, asOf, rows: plain(state[k] ?? []) }).toEqual({ rule: rule.id, asOf, rows: plain(events[k] ?? []) }))
  }
}


const daily = (user: string, from: number, to: number, extra: Partial<Parameters<typeof ev>[0]> = {}): EventRow[] =>
  Array.from({ length: to - from }, (_, d) => ev({ at: NOW - (from + d) * DAY - 3 * HOUR, event: 'Feature Used', userId: user, ...extra }))

describe('the state backend answers as the raw events do, on the default pack’s subjects and on every metric', () => {
  beforeAll(async () => {
    await db.put([
      ...['p1', 'p2', 'p3'].map((u, i) => group(u, 'pack-free', i === 0 ? { plan: 'free' } : {}, NOW - 60 * DAY)),
      ...many(520, NOW - 31 * DAY, NOW, { event: 'Message Sent', userId: 'p1' }),
      ...['p2', 'p3'].map((u) => ev({ at: NOW - DAY, event: 'Message Sent', userId: u, accountId: 'pack-free' })),
      ...['c1', 'c2', 'c3', 'c4'].map((u, i) => group(u, 'pack-pro', i === 0 ? { plan: 'pro', seats: 4 } : {}, NOW - 60 * DAY)),
      ...['c1', 'c2', 'c3', 'c4'].flatMap((u) => daily(u, 7, 35)),
      ...['c1', 'c2'].flatMap((u) => daily(u, 0, 7)),
      ...many(40, NOW - 80 * DAY, NOW - 15 * DAY, { event: 'Feature Used', userId: 'c3', accountId: 'pack-pro' }),
      identify('c4', { role: 'champion', title: 'VP Sales' }, NOW - 40 * DAY),
      identify('lead', { title: 'Head of Growth' }, NOW - 10 * DAY),
      ev({ at: NOW - HOUR, event: 'Demo Requested', userId: 'lead' }),
      ...[0, 1, 2, 3].map((d) => ev({ at: NOW - d * DAY - 2 * HOUR, type: 'page', userId: 'lead', properties: { path: '/pricing' } })),
      ev({ at: NOW - 14 * DAY, event: 'Webinar Registered', userId: 'lead' }),
      ...[1, 2, 3, 4, 5].map((d) => ev({ at: NOW - d * DAY - d * HOUR, event: 'Order', userId: 'c2', properties: { amount: d * 3, plan: d % 2 ? 'pro' : 'free' } })),
      ev({ at: NOW - 2 * DAY, event: 'Order', userId: 'c2', accountId: 'pack-pro', properties: { amount: '12' } }),
      ev({ at: NOW - 2 * DAY, event: 'Order', userId: 'lead', properties: { amount: 'n/a' } }),
    ])
  })
  const some = { account: ['pack-free', 'pack-pro', 'nobody'], user: ['p1', 'c2', 'lead', 'nobody'] }
  it.each([
    ['now', NOW],
    ['three days back, in the morning', NOW - 3 * DAY + 7 * HOUR],
    ['ten days back, half an hour before the same time', NOW - 10 * DAY - 30 * 60_000],
  ])('incremental, as of %s', async (_, asOf) => {
    await agree(asOf, some)
  })
  it.each([
    ['now', NOW],
    ['five hours back', NOW - 5 * HOUR],
  ])('full, as of %s', async (_, asOf) => {
    await agree(asOf)
  })
  it('is not vacuous: the pack fires on its fixtures', async () => {
    const [pql] = await runRules(db.store, [pack.find((r) => r.id === 'pql-product-usage') as Rule], { asOf: NOW, backend: 'state' })
    expect(pql?.map((r) => r.subjectId)).toEqual(['pack-free'])
  })
})

describe('duplicates', () => {
  it('counts a message sent twice (a resend, the same id twice in a batch) once; the same id from another source is another message', async () => {
    const once = ev({ at: NOW - DAY, event: 'Message Sent', userId: 'dup', accountId: 'dups', messageId: 'dup-1' })
    await db.put([once, once])
    await db.put([once])
    await db.put([{ ...once, source: 'app' }])
    await agree(NOW, { account: ['dups'], user: ['dup'] })
    const [rows] = await runRules(db.store, [metrics[0] as Rule], { asOf: NOW, subjectIds: ['dups'], backend: 'state' })
    expect(rows?.[0]?.reasons[0]?.measured).toBe(2)
  })
})

describe('at the exact edges of a window: the left edge out, a millisecond inside in, now in, the future out, midnight on both sides', () => {
  const midnight = Math.floor(NOW / DAY) * DAY
  beforeAll(async () => {
    await db.put([
      group('e1', 'edges', {}, NOW - 40 * DAY),
      ...[NOW - 7 * DAY, NOW - 7 * DAY + 1, NOW - 7 * DAY - 1, NOW, NOW + 1, midnight, midnight - 1, midnight - 7 * DAY, NOW - 30 * HOUR].map((at, i) =>
        ev({ at, event: i % 2 ? 'Message Sent' : 'Page Viewed', userId: 'e1', properties: { path: '/pricing', amount: i } }),
      ),
    ])
  })
  it.each([
    ['now', NOW],
    ['a millisecond before', NOW - 1],
    ['a millisecond after', NOW + 1],
    ['midnight', midnight],
    ['a millisecond before midnight', midnight - 1],
    ['a millisecond after the left edge a week ago', NOW - 7 * DAY + 1],
  ])('as of %s', async (_, asOf) => {
    await agree(asOf, { account: ['edges'], user: ['e1'] })
  })
  it('a full run a millisecond after midnight', async () => {
    await agree(midnight + 1)
  })
})

describe('re-attribution: identify, alias and group that arrive after the events they move', () => {
  const A = ['late-acc', 'late-acc-2']
  const U = ['late-u', 'late-final', 'late-first', 'late-v']
  const check = async () => {
    await agree(NOW, { account: A, user: U })
    await agree(NOW - 2 * DAY - 6 * HOUR, { account: A, user: U })
  }
  const measuredOf = async (rule: Rule, id: string) => {
    const [rows] = await runRules(db.store, [rule], { asOf: NOW, subjectIds: [id], backend: 'state' })
    return rows?.[0]?.reasons[0]?.measured
  }
  const countAny = metrics[0] as Rule
  const userCount = custom('user', 'user-count-30d', { all: [{ metric: 'count', window: '30d', op: 'gte', value: 1 }] })

  // One history, in steps (the tests of this block run in order, on the same store).
  it('anonymous activity, an earlier user id, a user’s untagged activity', async () => {
    db.keeper.measures = stateMeasures([...rules, userCount])
    await db.put([
      ev({ at: NOW - 3 * DAY, type: 'page', anonymousId: 'late-anon', properties: { path: '/pricing' } }),
      ev({ at: NOW - 2 * DAY - 8 * HOUR, event: 'Message Sent', anonymousId: 'late-anon', accountId: 'late-acc' }),
      ev({ at: NOW - 2 * DAY - 2 * HOUR, event: 'Message Sent', anonymousId: 'late-anon' }),
      ev({ at: NOW - DAY, event: 'Message Sent', userId: 'late-first' }),
      ev({ at: NOW - 2 * DAY, event: 'Order', userId: 'late-v', properties: { amount: 20, plan: 'pro' } }),
      ev({ at: NOW - 2 * DAY - 6 * HOUR, event: 'Message Sent', userId: 'late-v' }),
    ])
    await check()
    expect(await measuredOf(countAny, 'late-acc')).toBe(1)
  })

  it('identify joins the anonymous history to a first user id', async () => {
    await db.put([identify('late-first', {}, NOW - 20 * HOUR, 'late-anon')])
    await check()
    expect(await measuredOf(userCount, 'late-first')).toBe(4)
  })

  it('alias moves it on to the final id (two hops), and group brings the untagged part to an account', async () => {
    await db.put([ev({ type: 'alias', previousId: 'late-first', userId: 'late-final', at: NOW - 10 * HOUR }), group('late-final', 'late-acc-2', {}, NOW - 9 * HOUR)])
    await check()
    expect(await measuredOf(userCount, 'late-final')).toBe(4)
    expect(await measuredOf(userCount, 'late-first')).toBe(0)
    // 3 of the 4: one was tagged with late-acc, and stays there.
    expect(await measuredOf(countAny, 'late-acc-2')).toBe(3)
  })

  it('a first context.groupId makes a member: its earlier untagged events count for the account', async () => {
    await db.put([ev({ at: NOW - HOUR, event: 'Message Sent', userId: 'late-v', accountId: 'late-acc' })])
    await check()
    expect(await measuredOf(countAny, 'late-acc')).toBe(4)
  })

  it('a repeated identify and group change nothing', async () => {
    await db.put([identify('late-first', {}, NOW - HOUR, 'late-anon'), group('late-final', 'late-acc-2', {}, NOW - HOUR)])
    await check()
    await agree(NOW)
  })
})

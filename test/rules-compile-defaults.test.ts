import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { compileRule, compileRules, fusable } from '../rules/compile.js'
import { runRule, runRules } from '../rules/run.js'
import { parseRule, type Rule } from '../rules/schema.js'
import type { EventRow } from '../ingest/normalize.js'
import { DAY, HOUR, NOW, ev, group, identify, many, openRuleStore } from './rules-fixtures.js'

/**
 * The default rule pack (rules/defaults/*.yaml): each rule parses, compiles, fires on an account
 * or user built to meet it, and stays silent on a near miss built to fall just short.
 */
const DIR = fileURLToPath(new URL('../rules/defaults/', import.meta.url))
const pack = new Map<string, Rule>(
  readdirSync(DIR)
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => {
      const rule = parseRule(parse(readFileSync(`${DIR}${f}`, 'utf8')))
      return [rule.id, rule]
    }),
)

/** `user` active every day from `from` to `to` days ago (exclusive), an hour before the same time of day. */
const daily = (user: string, from: number, to: number, extra: Partial<Parameters<typeof ev>[0]> = {}): EventRow[] =>
  Array.from({ length: to - from }, (_, d) => ev({ at: NOW - (from + d) * DAY - HOUR, event: 'Feature Used', userId: user, ...extra }))

const team = (acc: string, traits: Record<string, unknown>, users: string[]) => users.map((u, i) => group(u, acc, i === 0 ? traits : {}, NOW - 60 * DAY))

const fixtures: EventRow[] = [
  // pql-product-usage: free, 500 messages in 30 days, 3 people active this week.
  ...team('pql-hit', { plan: 'free' }, ['p1', 'p2', 'p3']),
  ...many(500, NOW - 30 * DAY, NOW, { event: 'Message Sent', userId: 'p1' }),
  ...['p2', 'p3'].map((u) => ev({ at: NOW - DAY, event: 'Message Sent', userId: u, accountId: 'pql-hit', messageId: `pql-${u}-x` })),
  // near miss: one message short (498 + 1 from a teammate = 499).
  ...team('pql-near', { plan: 'free' }, ['q1', 'q2', 'q3']),
  ...many(497, NOW - 30 * DAY, NOW, { event: 'Message Sent', userId: 'q1' }),
  ...['q2', 'q3'].map((u) => ev({ at: NOW - DAY, event: 'Message Sent', userId: u })),
  // near miss: the same usage on a paid plan is not a PQL.
  ...team('pql-paid', { plan: 'pro' }, ['r1', 'r2', 'r3']),
  ...many(500, NOW - 30 * DAY, NOW, { event: 'Message Sent', userId: 'r1' }),
  ...['r2', 'r3'].map((u) => ev({ at: NOW - DAY, event: 'Message Sent', userId: u })),

  // mql-engaged-lead: VP title 15 + demo now 30 + pricing now 10 = 55.
  identify('lead-hit', { title: 'VP Sales' }, NOW - 10 * DAY),
  ev({ at: NOW, event: 'Demo Requested', userId: 'lead-hit' }),
  ev({ at: NOW, type: 'page', userId: 'lead-hit', properties: { path: '/pricing' } }),
  // near miss: no title points; demo 30 + pricing 10 + a webinar one half-life ago 7.5 = 47.5.
  identify('lead-near', { title: 'Engineer' }, NOW - 10 * DAY),
  ev({ at: NOW, event: 'Demo Requested', userId: 'lead-near' }),
  ev({ at: NOW, type: 'page', userId: 'lead-near', properties: { path: '/pricing' } }),
  ev({ at: NOW - 14 * DAY, event: 'Webinar Registered', userId: 'lead-near' }),

  // churn-usage-drop: 4 daily users for the 28 days before the last 7, then 2 → −50%.
  ...team('churn-hit', { plan: 'pro' }, ['c1', 'c2', 'c3', 'c4']),
  ...['c1', 'c2', 'c3', 'c4'].flatMap((u) => daily(u, 7, 35)),
  ...['c1', 'c2'].flatMap((u) => daily(u, 0, 7)),
  // near miss: one extra user-day in the last week → 15/7 per day, −46%.
  ...team('churn-near', { plan: 'pro' }, ['d1', 'd2', 'd3', 'd4']),
  ...['d1', 'd2', 'd3', 'd4'].flatMap((u) => daily(u, 7, 35)),
  ...['d1', 'd2'].flatMap((u) => daily(u, 0, 7)),
  ...daily('d3', 3, 4),
  // near miss: the same drop on the free plan.
  ...team('churn-free', { plan: 'free' }, ['f1', 'f2', 'f3', 'f4']),
  ...['f1', 'f2', 'f3', 'f4'].flatMap((u) => daily(u, 7, 35)),
  ...['f1', 'f2'].flatMap((u) => daily(u, 0, 7)),

  // champion-gone-quiet: the top user last seen 15 days ago, a teammate active this week.
  ...team('champ-hit', { plan: 'pro' }, ['h1', 'h2']),
  ...many(40, NOW - 80 * DAY, NOW - 15 * DAY, { event: 'Feature Used', userId: 'h1' }),
  ...many(5, NOW - 5 * DAY, NOW, { event: 'Feature Used', userId: 'h2' }),
  // near miss: the top user last seen 13 days ago.
  ...team('champ-near', { plan: 'pro' }, ['i1', 'i2']),
  ...many(40, NOW - 80 * DAY, NOW - 13 * DAY, { event: 'Feature Used', userId: 'i1' }),
  ...many(5, NOW - 5 * DAY, NOW, { event: 'Feature Used', userId: 'i2' }),

  // seat-expansion: 9 of 10 seats active in 30 days.
  ...team('seats-hit', { plan: 'pro', seats: 10 }, ['s0', 's1', 's2', 's3', 's4', 's5', 's6', 's7', 's8', 's9']),
  ...['s0', 's1', 's2', 's3', 's4', 's5', 's6', 's7', 's8'].map((u) => ev({ at: NOW - 20 * DAY, event: 'Feature Used', userId: u })),
  // near miss: 8 of 10.
  ...team('seats-near', { plan: 'pro', seats: 10 }, ['t0', 't1', 't2', 't3', 't4', 't5', 't6', 't7', 't8', 't9']),
  ...['t0', 't1', 't2', 't3', 't4', 't5', 't6', 't7'].map((u) => ev({ at: NOW - 20 * DAY, event: 'Feature Used', userId: u })),
  ev({ at: NOW - 31 * DAY, event: 'Feature Used', userId: 't8' }),
]

let db: Awaited<ReturnType<typeof openRuleStore>>
beforeAll(async () => {
  db = await openRuleStore()
  await db.put(fixtures)
})
afterAll(async () => {
  await db.close()
})

const expected: Record<string, { fires: string; silent: string[] }> = {
  'pql-product-usage': { fires: 'pql-hit', silent: ['pql-near', 'pql-paid'] },
  'mql-engaged-lead': { fires: 'lead-hit', silent: ['lead-near'] },
  'churn-usage-drop': { fires: 'churn-hit', silent: ['churn-near', 'churn-free'] },
  'champion-gone-quiet': { fires: 'champ-hit', silent: ['champ-near'] },
  'seat-expansion': { fires: 'seats-hit', silent: ['seats-near'] },
}

describe('the default rule pack', () => {
  it('holds the five rules of the pack, each described', () => {
    expect([...pack.keys()].sort()).toEqual(Object.keys(expected).sort())
    expect([...pack.values()].map((r) => r.kind).sort()).toEqual(['churn_risk', 'churn_risk', 'expansion', 'mql', 'pql'])
    for (const rule of pack.values()) {
      expect(rule.description?.length).toBeGreaterThan(40)
      expect(rule.cooldown).toBeDefined()
      expect(compileRule(rule, { asOf: NOW }).sql).toMatch(/^WITH/)
    }
  })

  it.each(Object.entries(expected))('%s fires on its fixture and not on the near misses', async (id, { fires, silent }) => {
    const rule = pack.get(id) as Rule
    const full = await runRule(db.store, rule, { asOf: NOW })
    expect(full.map((r) => r.subjectId)).toEqual([fires])
    // Every condition holds (for a score: the score reaches the threshold; items may give nothing).
    const reasons = full[0]?.reasons ?? []
    expect(rule.score ? reasons.at(-1)?.passed : reasons.every((r) => r.passed)).toBe(true)
    const raw = await runRule(db.store, rule, { asOf: NOW, rollups: false })
    expect(raw).toEqual(full)
    const some = await runRule(db.store, rule, { asOf: NOW, subjectIds: [fires, ...silent] })
    expect(Object.fromEntries(some.map((r) => [r.subjectId, r.matched]))).toEqual(Object.fromEntries([[fires, true], ...silent.map((s) => [s, false])]))
    for (const row of some.filter((r) => !r.matched)) expect(row.reasons.some((r) => !r.passed)).toBe(true)
  })

  it('answers the same when rules of one subject type share one query', async () => {
    const accountRules = [...pack.values()].filter((r) => r.subject === 'account').reverse()
    // A second user rule to share the MQL score's query: one demo request in 30 days.
    const demo = parseRule({
      id: 'demo-requested',
      kind: 'mql',
      subject: 'user',
      when: { all: [{ metric: 'count', event: 'Demo Requested', window: '30d', op: 'gte', value: 1 }] },
    })
    const userRules = [demo, pack.get('mql-engaged-lead') as Rule]
    const accounts = Object.values(expected).flatMap((e) => [e.fires, ...e.silent]).filter((id) => !id.startsWith('lead'))
    for (const [rules, ids] of [
      [accountRules, accounts],
      [userRules, ['lead-hit', 'lead-near', 'p1']],
    ] as const) {
      const alone = await Promise.all(rules.map((r) => runRule(db.store, r, { asOf: NOW })))
      expect(await runRules(db.store, [...rules], { asOf: NOW })).toEqual(alone)
      // Every rule of the pack fires on its fixture, and the demo rule on both leads.
      expect(alone.map((rows) => rows.map((r) => r.subjectId))).toEqual(
        rules.map((r) => (r.id === 'demo-requested' ? ['lead-hit', 'lead-near'] : [expected[r.id]?.fires])),
      )
      const some = await Promise.all(rules.map((r) => runRule(db.store, r, { asOf: NOW, subjectIds: [...ids] })))
      expect(await runRules(db.store, [...rules], { asOf: NOW, subjectIds: [...ids] })).toEqual(some)
      expect(some.every((rows) => rows.length === ids.length)).toBe(true)
    }
  })

  it('shares a query only between rules of one subject type and the same sources', () => {
    const pql = pack.get('pql-product-usage') as Rule
    const mql = pack.get('mql-engaged-lead') as Rule
    expect(fusable(pql, pack.get('seat-expansion') as Rule)).toBe(true)
    expect(fusable(pql, mql)).toBe(false)
    expect(fusable(pql, { ...pql, sources: ['web'] })).toBe(false)
    expect(() => compileRules([pql, mql], { asOf: NOW })).toThrow(/same subject type and sources/)
    // One rule compiles to the columns of the contract; several to numbered ones.
    expect(compileRules([pql], { asOf: NOW }).sql).toContain('AS matched,')
    expect(compileRules([pql, pql], { asOf: NOW }).sql).toMatch(/AS matched0,[\s\S]*AS matched1,/)
  })

  it('scores the MQL lead and its near miss as constructed', async () => {
    const rows = await runRule(db.store, pack.get('mql-engaged-lead') as Rule, { asOf: NOW, subjectIds: ['lead-hit', 'lead-near'] })
    expect(rows.map((r) => [r.subjectId, r.score])).toEqual([
      ['lead-hit', 55],
      ['lead-near', 47.5],
    ])
  })
})

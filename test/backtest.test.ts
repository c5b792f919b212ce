import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { EventRow } from '../ingest/normalize.js'
import { backtest, moments } from '../rules/backtest.js'
import { Evaluator } from '../rules/evaluator.js'
import { parseRule, type Rule } from '../rules/schema.js'
import { putRule } from '../rules/store.js'
import { DAY, HOUR, NOW, ev, group, openRuleStore } from './rules-fixtures.js'

let db: Awaited<ReturnType<typeof openRuleStore>>
beforeAll(async () => {
  db = await openRuleStore()
  await db.put(history())
})
afterAll(async () => {
  await db.close()
})

const START = NOW - 14 * DAY

/** A deterministic, irregular history: 8 accounts, 2 users each, bursts and quiet spells over 14 days. */
function history(): EventRow[] {
  let seed = 42
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)
  const rows: EventRow[] = []
  for (let a = 0; a < 8; a++) {
    const account = `acc-${a}`
    for (let u = 0; u < 2; u++) rows.push(group(`${account}-u${u}`, account, { plan: a % 2 ? 'free' : 'pro' }, START))
    for (let day = 0; day < 14; day++) {
      // Each account is busy on some days and silent on others.
      if (rand() < 0.45) continue
      const n = Math.floor(rand() * 5)
      for (let i = 0; i < n; i++) {
        rows.push(ev({ at: START + day * DAY + Math.floor(rand() * DAY), event: 'Used', userId: `${account}-u${i % 2}`, accountId: account }))
      }
      if (rand() < 0.5) rows.push(ev({ at: START + day * DAY + Math.floor(rand() * DAY), event: 'Pricing Viewed', userId: `${account}-u0` }))
    }
  }
  // The hand-checked account: two events on one morning, nothing after.
  rows.push(ev({ at: START + HOUR, event: 'Used', userId: 'hand-u', accountId: 'hand' }))
  rows.push(ev({ at: START + 2 * HOUR, event: 'Used', userId: 'hand-u', accountId: 'hand' }))
  return rows
}

type Happening = { type: 'fired' | 'resolved'; subject: string; at: string }

/** What the evaluator does when it is run at each moment in turn (signals stored, as in production). */
async function loop(rule: Rule, times: number[]): Promise<Happening[]> {
  const clock = { now: 0 }
  const evaluator = new Evaluator(db.store, undefined, { now: () => clock.now })
  const out: Happening[] = []
  for (const t of times) {
    clock.now = t
    const r = await evaluator.evaluate({ ruleIds: [rule.id] })
    expect(r.errors).toEqual([])
    for (const s of r.fired) out.push({ type: 'fired', subject: s.subject.id, at: s.fired_at })
    for (const s of r.resolved) out.push({ type: 'resolved', subject: s.subject.id, at: s.resolved_at as string })
  }
  return sort(out)
}

const sort = (h: Happening[]) => [...h].sort((a, b) => a.at.localeCompare(b.at) || a.subject.localeCompare(b.subject) || a.type.localeCompare(b.type))

async function compare(doc: Record<string, unknown>, step: number) {
  const rule = parseRule(doc)
  const { stored } = await putRule(db.store, rule, '', START)
  const from = START
  const to = NOW
  const bt = await backtest(db.store, rule, { from, to, step, version: stored.version })
  const fromBacktest = sort([
    ...bt.fired.map((f) => ({ type: 'fired' as const, subject: f.subject.id, at: f.at })),
    ...bt.resolved.map((r) => ({ type: 'resolved' as const, subject: r.subject.id, at: r.at })),
  ])
  const fromLoop = await loop(rule, moments(from, to, step))
  return { bt, fromBacktest, fromLoop }
}

describe('backtest', () => {
  it('matches a loop of evaluations at the same moments (count rule with a cooldown)', async () => {
    const { bt, fromBacktest, fromLoop } = await compare(
      {
        id: 'bt-count',
        kind: 'pql',
        subject: 'account',
        cooldown: '3d',
        when: { all: [{ metric: 'count', event: 'Used', window: '2d', op: 'gte', value: 4 }] },
      },
      6 * HOUR,
    )
    expect(bt.moments).toBe(14 * 4 + 1)
    expect(fromBacktest.length).toBeGreaterThan(4) // the history does make the rule fire and resolve
    expect(fromBacktest.some((h) => h.type === 'resolved')).toBe(true)
    expect(fromBacktest).toEqual(fromLoop)
  })

  it('matches a loop of evaluations for a user score rule with decay and caps', async () => {
    const { fromBacktest, fromLoop } = await compare(
      {
        id: 'bt-score',
        kind: 'mql',
        subject: 'user',
        score: {
          half_life: '2d',
          items: [
            { event: 'Pricing Viewed', points: 10, max: 30 },
            { event: 'Used', points: 4 },
          ],
        },
        threshold: 15,
      },
      12 * HOUR,
    )
    expect(fromBacktest.length).toBeGreaterThan(2)
    expect(fromBacktest).toEqual(fromLoop)
  })

  it('gives the known answer on a hand-checked history, and stores nothing', async () => {
    const rule = parseRule({
      id: 'bt-hand',
      kind: 'pql',
      subject: 'account',
      where: [{ trait: 'plan', op: 'exists', value: false }],
      when: { all: [{ metric: 'count', event: 'Used', window: '1d', op: 'gte', value: 2 }] },
    })
    const bt = await backtest(db.store, rule, { from: START, to: START + 2 * DAY, step: 6 * HOUR })
    const iso = (ms: number) => new Date(ms).toISOString()
    // Moments START, +6h, …: the events at +1h and +2h count from +6h until the window (t−1d, t] passes them at +1d+6h.
    expect(bt.fired.map((f) => [f.subject.id, f.at])).toEqual([['hand', iso(START + 6 * HOUR)]])
    expect(bt.resolved.map((r) => [r.subject.id, r.at, r.fired_at])).toEqual([['hand', iso(START + DAY + 6 * HOUR), iso(START + 6 * HOUR)]])
    expect(bt.fired[0]?.reasons.find((r) => r.metric === 'count')).toMatchObject({ measured: 2, threshold: 2, passed: true })
    expect(bt.open_at_end).toBe(0)
    const stored = await db.store.query<{ n: number }>("SELECT count() AS n FROM signals_v1 WHERE rule_id = 'bt-hand'")
    expect(Number(stored[0]?.n)).toBe(0)
  })
})

import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { chTime } from '../src/time.js'
import { parseRule, type Rule } from '../rules/schema.js'
import { parseOutcome } from '../src/quality/outcomes.js'
import { applyDefaultOutcomes, putOutcome } from '../src/quality/outcome-store.js'
import { qualityReport, wilson } from '../src/quality/quality.js'
import { qualityQuery } from '../src/quality/queries.js'
import { recordFeedback } from '../src/feedback/feedback.js'
import { newSignalId, recordSignalEvents, type Signal } from '../src/signals.js'
import { DAY, HOUR, NOW, ev, group, identify, openRuleStore } from './rules-fixtures.js'

let db: Awaited<ReturnType<typeof openRuleStore>>
beforeAll(async () => {
  db = await openRuleStore()
})
afterAll(async () => {
  await db.close()
})
beforeEach(async () => {
  await db.reset()
  for (const t of ['signals_v1', 'signal_events_v1', 'stage_transitions_v1', 'signal_feedback_v1', 'outcomes_v1']) await db.store.command(`TRUNCATE TABLE ${t}`)
})

const pqlRule = (extra: Record<string, unknown> = {}): Rule =>
  parseRule({
    id: 'q-pql',
    kind: 'pql',
    subject: 'account',
    where: [{ trait: 'plan', op: 'eq', value: 'free' }],
    when: { all: [{ metric: 'count', event: 'Message Sent', window: '30d', op: 'gte', value: 5 }] },
    outcome: 'q-customer',
    ...extra,
  })

async function outcome(doc: object) {
  await putOutcome(db.store, parseOutcome(doc), '', NOW)
}

/** An account seen (and its plan set) at `at`. */
const account = (id: string, plan: string, at: number) => group(`${id}-u`, id, { plan }, at)

async function fire(ruleId: string, accountId: string, at: number): Promise<Signal> {
  const signal: Signal = {
    id: newSignalId(),
    rule_id: ruleId,
    rule_version: 1,
    kind: 'pql',
    subject: { type: 'account', id: accountId },
    status: 'open',
    fired_at: new Date(at).toISOString(),
    resolved_at: null,
    score: null,
    reasons: [],
  }
  await recordSignalEvents(db.store, undefined, [{ type: 'signal.fired', signal }], at)
  return signal
}

let moveSeq = 0
async function stage(accountId: string, to: string, at: number) {
  await db.store.insert('stage_transitions_v1', [
    {
      subject_type: 'account',
      subject_id: accountId,
      id: `t${++moveSeq}`,
      at: chTime(at),
      from_stage: 'lead',
      to_stage: to,
      cause_type: 'api',
      cause: '',
      reason: 'test',
      recorded_at: chTime(at),
    },
  ])
}

// The period of the main history: fires from FROM to TO, every horizon elapsed by NOW.
const FROM = NOW - 120 * DAY
const TO = NOW - 60 * DAY

/**
 * 10 free accounts fire the PQL; 8 of them reach `customer` 10, 20, … 80 hours after their fire,
 * one 40 days after (outside the 30-day horizon), one never. Of 100 free accounts that never
 * fire, 5 reach `customer` within 30 days of the period's start, one 45 days after. 20 paying
 * accounts (not eligible) become customers too, and must not count.
 */
async function mainHistory() {
  await outcome({ id: 'q-customer', subject: 'account', reached: { stage: 'customer' } })
  const seen = FROM - 10 * DAY
  await db.put([
    ...Array.from({ length: 10 }, (_, i) => account(`f${i}`, 'free', seen)),
    ...Array.from({ length: 100 }, (_, i) => account(`n${i}`, 'free', seen)),
    ...Array.from({ length: 20 }, (_, i) => account(`x${i}`, 'pro', seen)),
  ])
  for (let i = 0; i < 10; i++) {
    const at = FROM + (i + 1) * DAY
    await fire('q-pql', `f${i}`, at)
    if (i < 8) await stage(`f${i}`, 'customer', at + 10 * (i + 1) * HOUR)
    if (i === 8) await stage(`f${i}`, 'customer', at + 40 * DAY)
  }
  for (let i = 0; i < 5; i++) await stage(`n${i}`, 'customer', FROM + 5 * DAY + i * HOUR)
  await stage('n5', 'customer', FROM + 45 * DAY)
  for (let i = 0; i < 20; i++) await stage(`x${i}`, 'customer', FROM + 2 * DAY)
}

describe('wilson', () => {
  it('matches the published 95% Wilson score intervals', () => {
    // Reference values: Wilson (1927) score interval as given by statsmodels proportion_confint(method="wilson").
    const a = wilson(8, 10)
    expect(a?.low).toBeCloseTo(0.490162, 5)
    expect(a?.high).toBeCloseTo(0.943318, 5)
    const b = wilson(5, 100)
    expect(b?.low).toBeCloseTo(0.021543, 5)
    expect(b?.high).toBeCloseTo(0.111752, 5)
    expect(wilson(0, 0)).toBeNull()
    expect(wilson(0, 7)?.low).toBe(0)
  })
})

describe('the quality report', () => {
  it('gives precision 0.8, base rate 0.05, lift 16, recall 8/13 and lead times to the hour', async () => {
    await mainHistory()
    const r = await qualityReport(db.store, pqlRule(), { from: FROM, to: TO, now: NOW })
    expect(r).toMatchObject({
      rule_id: 'q-pql',
      outcome: 'q-customer',
      horizon: '30d',
      eligible: 110,
      fired: 10,
      fired_reached: 8,
      pending: 0,
      precision: 0.8,
      base_rate: 0.05,
      lift: 16,
      recall: Number((8 / 13).toFixed(6)),
      lead_time: { median_s: 45 * 3600, p90_s: 73 * 3600 },
      useful_share: null,
    })
    expect(r.counts.fired).toEqual({ subjects: 10, decided: 10, reached: 8, pending: 0, pending_reached: 0 })
    expect(r.counts.not_fired).toEqual({ subjects: 100, decided: 100, reached: 5, pending: 0, pending_reached: 0 })
    expect(r.counts.outcomes).toBe(13)
    expect(r.precision_ci).toEqual(wilson(8, 10))
    expect(r.base_rate_ci).toEqual(wilson(5, 100))

    // A longer horizon takes in the fire reached after 40 days and the account after 45.
    const long = await qualityReport(db.store, pqlRule(), { from: FROM, to: TO, now: NOW, horizon: '50d' })
    expect([long.fired_reached, long.counts.not_fired.reached, long.horizon]).toEqual([9, 6, '50d'])
  })

  it('counts a subject whose horizon has not elapsed as pending, never as a failure', async () => {
    await outcome({ id: 'q-customer', subject: 'account', reached: { stage: 'customer' } })
    await db.put([account('old', 'free', NOW - 90 * DAY), account('recent', 'free', NOW - 90 * DAY), account('other', 'free', NOW - 90 * DAY)])
    await fire('q-pql', 'old', NOW - 45 * DAY)
    await stage('old', 'customer', NOW - 40 * DAY)
    // Fired 10 days before the end of the report: its 30 days are not over.
    await fire('q-pql', 'recent', NOW - 10 * DAY)
    const r = await qualityReport(db.store, pqlRule(), { from: NOW - 60 * DAY, to: NOW, now: NOW })
    expect([r.fired, r.pending, r.fired_reached, r.precision]).toEqual([2, 1, 1, 1])
    expect(r.counts.fired).toMatchObject({ decided: 1, pending: 1 })
    // Reaching the outcome early does not decide it either: it stays pending until its horizon ends.
    await stage('recent', 'customer', NOW - 5 * DAY)
    const again = await qualityReport(db.store, pqlRule(), { from: NOW - 60 * DAY, to: NOW, now: NOW })
    expect([again.pending, again.fired_reached, again.counts.fired.pending_reached]).toEqual([1, 1, 1])
  })

  it('judges by an outcome reached through a trait change', async () => {
    await outcome({ id: 'q-paid', subject: 'account', reached: { trait: 'plan', op: 'neq', value: 'free' } })
    const seen = FROM - 10 * DAY
    await db.put([account('a', 'free', seen), account('b', 'free', seen), account('c', 'free', seen), account('d', 'free', seen)])
    await fire('q-pql', 'a', FROM + DAY)
    await fire('q-pql', 'b', FROM + DAY)
    await db.put([
      // a upgrades 3 days after its fire; b stays free (a free → free row is no change);
      account('a', 'pro', FROM + 4 * DAY),
      account('b', 'free', FROM + 4 * DAY),
      // c (never fired) upgrades, d stays free.
      account('c', 'enterprise', FROM + 2 * DAY),
    ])
    const r = await qualityReport(db.store, pqlRule({ outcome: 'q-paid' }), { from: FROM, to: TO, now: NOW })
    expect([r.eligible, r.fired, r.fired_reached, r.counts.not_fired.reached, r.counts.not_fired.subjects]).toEqual([4, 2, 1, 1, 2])
    expect(r.lead_time.median_s).toBe(3 * 86_400)
  })

  it('judges by an event outcome with property filters, on the account and through its members', async () => {
    await outcome({ id: 'q-order', subject: 'account', reached: { event: 'Order Completed', where: [{ property: 'total', op: 'gte', value: 100 }] } })
    const seen = FROM - 10 * DAY
    await db.put(['a', 'b', 'c', 'd', 'e'].map((id) => account(id, 'free', seen)))
    for (const id of ['a', 'b', 'c', 'e']) await fire('q-pql', id, FROM + DAY)
    await db.put([
      // e: its member ordered before signing in; identify joins that anonymous history to the member.
      ev({ event: 'Order Completed', anonymousId: 'anon-e', properties: { total: 300 }, at: FROM + 2 * DAY }),
      identify('e-u', {}, FROM + 3 * DAY, 'anon-e'),
      // a: tagged with the account; b: untagged, from its member; c: too small an order.
      ev({ event: 'Order Completed', userId: 'a-u', accountId: 'a', properties: { total: 250 }, at: FROM + 2 * DAY }),
      ev({ event: 'Order Completed', userId: 'b-u', properties: { total: 100 }, at: FROM + 3 * DAY }),
      ev({ event: 'Order Completed', userId: 'c-u', accountId: 'c', properties: { total: 99 }, at: FROM + 2 * DAY }),
      ev({ event: 'Order Completed', userId: 'd-u', accountId: 'd', properties: { total: 500 }, at: FROM + 2 * DAY }),
    ])
    const r = await qualityReport(db.store, pqlRule({ outcome: 'q-order' }), { from: FROM, to: TO, now: NOW })
    expect([r.fired, r.fired_reached, r.counts.not_fired.subjects, r.counts.not_fired.reached]).toEqual([4, 3, 1, 1])
  })

  it('takes subjects as eligible from the moment their traits admit them in the period', async () => {
    await outcome({ id: 'q-customer', subject: 'account', reached: { stage: 'customer' } })
    await db.put([
      account('late', 'free', FROM + 10 * DAY),
      account('switched', 'pro', FROM - 10 * DAY),
      account('never', 'pro', FROM - 10 * DAY),
      account('after', 'free', TO + DAY),
    ])
    // switched becomes free 20 days into the period, and a customer 25 days later: within 30 days of becoming eligible.
    await db.put([account('switched', 'free', FROM + 20 * DAY)])
    await stage('switched', 'customer', FROM + 45 * DAY)
    // late is first seen 10 days in and a customer 35 days after the period starts: 25 days after it became eligible.
    await stage('late', 'customer', FROM + 35 * DAY)
    const r = await qualityReport(db.store, pqlRule(), { from: FROM, to: TO, now: NOW })
    expect([r.eligible, r.counts.not_fired.reached, r.base_rate]).toEqual([2, 2, 1])
  })

  it('reads a user rule against an account outcome through memberships', async () => {
    await outcome({ id: 'q-customer', subject: 'account', reached: { stage: 'customer' } })
    await db.put([group('u1', 'acc1', {}, FROM - DAY), group('u2', 'acc2', {}, FROM - DAY)])
    await recordSignalEvents(db.store, undefined, [
      {
        type: 'signal.fired',
        signal: { id: newSignalId(), rule_id: 'q-mql', rule_version: 1, kind: 'mql', subject: { type: 'user', id: 'u1' }, status: 'open', fired_at: new Date(FROM + DAY).toISOString(), resolved_at: null, score: 60, reasons: [] },
      },
    ])
    await stage('acc1', 'customer', FROM + 3 * DAY)
    const rule = parseRule({ id: 'q-mql', kind: 'mql', subject: 'user', score: { items: [{ event: 'Demo Requested', points: 50 }] }, threshold: 50, outcome: 'q-customer' })
    const r = await qualityReport(db.store, rule, { from: FROM, to: TO, now: NOW })
    expect([r.eligible, r.fired, r.fired_reached, r.counts.not_fired.reached]).toEqual([2, 1, 1, 0])
  })

  it('adds the share of fired signals judged useful (the latest verdict of each)', async () => {
    await mainHistory()
    const signals = (await db.store.query<{ id: string; subject_id: string }>("SELECT id, subject_id FROM signals_v1 WHERE rule_id = 'q-pql' ORDER BY subject_id"))
    const [s0, s1, s2] = signals as unknown as [{ id: string }, { id: string }, { id: string }]
    await recordFeedback(db.store, { signal_id: s0.id, verdict: 'useful' }, NOW - DAY)
    await recordFeedback(db.store, { signal_id: s1.id, verdict: 'useful' }, NOW - DAY)
    // Changed its mind: the later verdict counts.
    await recordFeedback(db.store, { signal_id: s1.id, verdict: 'not_useful', reason: 'already talking to sales' }, NOW - HOUR)
    await recordFeedback(db.store, { signal_id: s2.id, verdict: 'not_useful' }, NOW - DAY)
    const r = await qualityReport(db.store, pqlRule(), { from: FROM, to: TO, now: NOW })
    expect(r.counts.feedback).toEqual({ judged: 3, useful: 1 })
    expect(r.useful_share).toBe(Number((1 / 3).toFixed(6)))
  })

  it('treats injection-shaped names in outcomes as data', async () => {
    const evil = "x') OR 1=1 --"
    const key = "plan'); DROP TABLE events_v1; --"
    await outcome({ id: 'q-evil', subject: 'account', reached: { any: [{ event: evil, where: [{ property: "{p0:String}", op: 'eq', value: "'" }] }, { trait: key, op: 'eq', value: '{p1:String}' }, { stage: "customer' OR '1'='1" }] } })
    const seen = FROM - 10 * DAY
    await db.put(['a', 'b', 'c', 'd'].map((id) => account(id, 'free', seen)))
    for (const id of ['a', 'b', 'c', 'd']) await fire('q-pql', id, FROM + DAY)
    await db.put([
      ev({ event: evil, userId: 'a-u', accountId: 'a', properties: { '{p0:String}': "'" }, at: FROM + 2 * DAY }),
      ev({ event: 'Other', userId: 'd-u', accountId: 'd', at: FROM + 2 * DAY }),
      group('b-u', 'b', { [key]: '{p1:String}' }, FROM + 2 * DAY),
    ])
    await stage('c', "customer' OR '1'='1", FROM + 2 * DAY)
    const q = qualityQuery({ subject: 'account', where: [], outcome: parseOutcome({ id: 'q', subject: 'account', reached: { event: evil } }), fires: { rule_id: "r'--" }, from: FROM, to: TO, now: NOW, horizonMs: DAY })
    expect(q.sql).not.toContain(evil)
    expect(q.sql).not.toContain("r'--")
    const r = await qualityReport(db.store, pqlRule({ outcome: 'q-evil' }), { from: FROM, to: TO, now: NOW })
    expect([r.fired, r.fired_reached]).toEqual([4, 3])
    expect(Number((await db.store.query<{ n: number }>('SELECT count() AS n FROM events_v1'))[0]?.n)).toBeGreaterThan(0)
  })

  it('ships converted, churned and expanded; expanded is reached by a seat rise or a plan upgrade, not a fall', async () => {
    expect((await applyDefaultOutcomes(db.store, NOW)).sort()).toEqual(['churned', 'converted', 'expanded'])
    expect(await applyDefaultOutcomes(db.store, NOW)).toEqual([])
    const seen = FROM - 10 * DAY
    const acc = (id: string, traits: Record<string, unknown>, at: number) => group(`${id}-u`, id, traits, at)
    const ids = ['more-seats', 'fewer-seats', 'upgrade', 'downgrade', 'unknown-plan', 'first-seats']
    await db.put([
      acc('more-seats', { plan: 'pro', seats: 10 }, seen),
      acc('fewer-seats', { plan: 'pro', seats: 10 }, seen),
      acc('upgrade', { plan: 'pro' }, seen),
      acc('downgrade', { plan: 'enterprise' }, seen),
      acc('unknown-plan', { plan: 'pro' }, seen),
      acc('first-seats', { plan: 'pro' }, seen),
    ])
    for (const id of ids) await fire('q-exp', id, FROM + DAY)
    await db.put([
      acc('more-seats', { seats: 12 }, FROM + 2 * DAY),
      acc('fewer-seats', { seats: 8 }, FROM + 2 * DAY),
      acc('upgrade', { plan: 'enterprise' }, FROM + 2 * DAY),
      acc('downgrade', { plan: 'pro' }, FROM + 2 * DAY),
      acc('unknown-plan', { plan: 'platinum' }, FROM + 2 * DAY),
      acc('first-seats', { seats: 40 }, FROM + 2 * DAY),
    ])
    const rule = parseRule({ id: 'q-exp', kind: 'expansion', subject: 'account', when: { all: [{ metric: 'seat_usage', op: 'gte', value: 0.9 }] } })
    const r = await qualityReport(db.store, rule, { from: FROM, to: TO, now: NOW })
    expect([r.outcome, r.horizon, r.fired, r.fired_reached]).toEqual(['expanded', '60d', 6, 2])
  })

  it('refuses a rule without an outcome, or with one not stored', async () => {
    const custom = parseRule({ id: 'q-custom', kind: 'custom', subject: 'account', when: { all: [{ metric: 'count', window: '1d', op: 'gte', value: 1 }] } })
    await expect(qualityReport(db.store, custom, { from: FROM, to: TO, now: NOW })).rejects.toThrow(/names no outcome/)
    await expect(qualityReport(db.store, pqlRule({ outcome: 'nope' }), { from: FROM, to: TO, now: NOW })).rejects.toThrow(/no outcome nope/)
  })
})

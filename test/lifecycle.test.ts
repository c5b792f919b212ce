import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DEFAULT_LIFECYCLE, Lifecycle, lifecycleFromConfig } from '../src/lifecycle/lifecycle.js'
import { ConfigError, loadConfig } from '../src/config.js'
import { newSignalId, type Signal, type SignalKind } from '../src/signals.js'
import { DAY, NOW, ev, group, openRuleStore } from './rules-fixtures.js'

let db: Awaited<ReturnType<typeof openRuleStore>>
let lc: Lifecycle
beforeAll(async () => {
  db = await openRuleStore()
  lc = new Lifecycle(db.store, DEFAULT_LIFECYCLE)
  await buildHistory()
})
afterAll(async () => {
  await db.close()
})

const T0 = NOW - 30 * DAY
const iso = (ms: number) => new Date(ms).toISOString()

function signal(kind: SignalKind, type: 'account' | 'user', id: string, firedAt: number): Signal {
  return {
    id: newSignalId(),
    rule_id: `${kind}-rule`,
    rule_version: 1,
    kind,
    subject: { type, id },
    status: 'open',
    fired_at: iso(firedAt),
    resolved_at: null,
    score: null,
    reasons: [],
  }
}
const fire = (s: Signal) => lc.applySignals([{ type: 'signal.fired', signal: s }], Date.parse(s.fired_at))
const resolve = (s: Signal, at: number) =>
  lc.applySignals([{ type: 'signal.resolved', signal: { ...s, status: 'resolved', resolved_at: iso(at) } }], at)
const plan = async (account: string, value: string, at: number) => {
  await db.put([group(`${account}-u`, account, { plan: value }, at)])
  return lc.syncTraits({ account: [account], user: [] }, at)
}

/**
 * The constructed history (days after T0):
 *   acc-1  seen 0; its user's mql signal 2; pql 5; CRM sql 6; plan pro 10 → customer; churn_risk 20, resolved 22 → customer
 *   acc-2  seen 1; pql 3; a later mql signal moves nothing (forward only)
 *   acc-3  seen 2; plan free (no move): stays a lead
 *   acc-4  seen 2; plan pro 4 → customer; plan cancelled 8 → churned
 *   acc-5  seen 3; pql 4
 */
async function buildHistory() {
  await db.put([
    ev({ at: T0, event: 'Signed Up', userId: 'acc-1-u', accountId: 'acc-1' }),
    ev({ at: T0 + 1 * DAY, event: 'Signed Up', userId: 'acc-2-u', accountId: 'acc-2' }),
    ev({ at: T0 + 2 * DAY, event: 'Signed Up', userId: 'acc-3-u', accountId: 'acc-3' }),
    ev({ at: T0 + 2 * DAY, event: 'Signed Up', userId: 'acc-4-u', accountId: 'acc-4' }),
    ev({ at: T0 + 3 * DAY, event: 'Signed Up', userId: 'acc-5-u', accountId: 'acc-5' }),
  ])
  await fire(signal('mql', 'user', 'acc-1-u', T0 + 2 * DAY))
  await fire(signal('pql', 'account', 'acc-2', T0 + 3 * DAY))
  await plan('acc-3', 'free', T0 + 3 * DAY)
  await plan('acc-4', 'pro', T0 + 4 * DAY)
  await fire(signal('pql', 'account', 'acc-5', T0 + 4 * DAY))
  await fire(signal('mql', 'account', 'acc-2', T0 + 4 * DAY))
  await fire(signal('pql', 'account', 'acc-1', T0 + 5 * DAY))
  await lc.setStage('account', 'acc-1', 'sql', 'BANT qualified by the SDR', T0 + 6 * DAY)
  await plan('acc-4', 'cancelled', T0 + 8 * DAY)
  await plan('acc-1', 'pro', T0 + 10 * DAY)
  const churn = signal('churn_risk', 'account', 'acc-1', T0 + 20 * DAY)
  await fire(churn)
  await resolve(churn, T0 + 22 * DAY)
}

const path = async (type: 'account' | 'user', id: string) =>
  (await lc.history(type, id)).map((t) => [t.to, t.cause.type, (Date.parse(t.at) - T0) / DAY])

describe('lifecycle transitions', () => {
  it('records every move with its time and cause', async () => {
    expect(await path('account', 'acc-1')).toEqual([
      ['lead', 'first_seen', 0],
      ['mql', 'signal', 2],
      ['pql', 'signal', 5],
      ['sql', 'api', 6],
      ['customer', 'trait', 10],
      ['churn_risk', 'signal', 20],
      ['customer', 'signal_resolved', 22],
    ])
    expect(await path('user', 'acc-1-u')).toEqual([
      ['lead', 'first_seen', 0],
      ['mql', 'signal', 2],
    ])
    expect(await path('account', 'acc-2')).toEqual([
      ['lead', 'first_seen', 1],
      ['pql', 'signal', 3],
    ])
    expect(await path('account', 'acc-3')).toEqual([['lead', 'first_seen', 2]])
    expect(await path('account', 'acc-4')).toEqual([
      ['lead', 'first_seen', 2],
      ['customer', 'trait', 4],
      ['churned', 'trait', 8],
    ])
    const history = await lc.history('account', 'acc-1')
    expect(history[3]?.cause.reason).toBe('BANT qualified by the SDR')
    expect(history[4]?.cause.reason).toBe('plan became pro')
    expect(history[1]?.cause.reason).toMatch(/for user acc-1-u/)
  })

  it('gives the current stage, and moves nothing twice when traits are synced again', async () => {
    const before = await lc.current('account', ['acc-1', 'acc-2', 'acc-3', 'acc-4', 'acc-5', 'nobody'])
    expect(Object.fromEntries([...before].map(([id, s]) => [id, s.stage]))).toEqual({
      'acc-1': 'customer',
      'acc-2': 'pql',
      'acc-3': 'lead',
      'acc-4': 'churned',
      'acc-5': 'pql',
      nobody: 'lead',
    })
    expect(await lc.syncTraits(undefined, NOW)).toEqual([])
    expect((await lc.history('account', 'acc-4')).length).toBe(3)
  })

  it('rejects a stage not on the ladder, naming it', async () => {
    await expect(lc.setStage('account', 'acc-3', 'won', '', NOW)).rejects.toMatchObject({ name: 'StageError', code: 'UNKNOWN_STAGE', details: [{ path: 'stage' }] })
  })
})

describe('funnel', () => {
  it('counts entries, conversions, stalls and time in stage over the whole period', async () => {
    const f = await lc.funnel('account', T0, NOW)
    const by = Object.fromEntries(f.stages.map((s) => [s.stage, s]))
    const d = (days: number) => days * 86_400
    expect(by.lead).toEqual({ stage: 'lead', entered: 5, converted: 4, conversion_rate: 0.8, stalled: 1, time_in_stage: { median_seconds: d(2), p90_seconds: d(2), samples: 4 } })
    expect(by.mql).toEqual({ stage: 'mql', entered: 1, converted: 1, conversion_rate: 1, stalled: 0, time_in_stage: { median_seconds: d(3), p90_seconds: d(3), samples: 1 } })
    expect(by.pql).toEqual({ stage: 'pql', entered: 3, converted: 1, conversion_rate: 0.333, stalled: 2, time_in_stage: { median_seconds: d(1), p90_seconds: d(1), samples: 1 } })
    expect(by.sql).toEqual({ stage: 'sql', entered: 1, converted: 1, conversion_rate: 1, stalled: 0, time_in_stage: { median_seconds: d(4), p90_seconds: d(4), samples: 1 } })
    // customer: acc-4 for 4 days, acc-1 for 10 days (then again from day 22, still there).
    expect(by.customer).toEqual({ stage: 'customer', entered: 2, converted: null, conversion_rate: null, stalled: 1, time_in_stage: { median_seconds: d(7), p90_seconds: d(9.4), samples: 2 } })
    expect(by.churn_risk).toMatchObject({ entered: 1, converted: null, stalled: 0, time_in_stage: { median_seconds: d(2), samples: 1 } })
    expect(by.churned).toMatchObject({ entered: 1, stalled: 1, time_in_stage: { samples: 0, median_seconds: null } })
    expect(f.stall_stage).toBe('pql')
  })

  it('counts only the entries within the period (later moves still count as conversions)', async () => {
    const f = await lc.funnel('account', T0 + 4 * DAY, T0 + 9 * DAY)
    const entered = Object.fromEntries(f.stages.map((s) => [s.stage, s.entered]))
    expect(entered).toEqual({ lead: 0, mql: 0, pql: 2, sql: 1, customer: 1, churn_risk: 0, churned: 1 })
    const pql = f.stages.find((s) => s.stage === 'pql')
    // acc-1 (pql on day 5) reached sql on day 6, within the period; acc-5 did not.
    expect(pql).toMatchObject({ converted: 1, stalled: 1 })
    // the customer entry of acc-4 (day 4) ended on day 8, inside the period.
    expect(f.stages.find((s) => s.stage === 'customer')?.time_in_stage.median_seconds).toBe(4 * 86_400)
  })

  it('has a funnel of users too', async () => {
    const f = await lc.funnel('user', T0, NOW)
    expect(f.stages.find((s) => s.stage === 'mql')?.entered).toBe(1)
    expect(f.stages.find((s) => s.stage === 'lead')?.entered).toBe(5)
  })
})

describe('lifecycle configuration', () => {
  it('builds a custom ladder and names the variable of a bad setting', () => {
    const config = loadConfig({ STAGES: 'prospect,qualified,won', STAGES_AFTER: 'at_risk', STAGE_SIGNALS: 'pql:qualified,churn_risk:at_risk', STAGE_PLANS: '*:won,free:-' })
    expect(lifecycleFromConfig(config)).toEqual({
      stages: ['prospect', 'qualified', 'won'],
      after: ['at_risk'],
      signals: { pql: 'qualified', churn_risk: 'at_risk' },
      plans: { '*': 'won', free: null },
    })
    expect(lifecycleFromConfig(loadConfig({}))).toEqual(DEFAULT_LIFECYCLE)
    expect(() => lifecycleFromConfig(loadConfig({ STAGE_SIGNALS: 'pql:hot' }))).toThrow(/STAGE_SIGNALS: "pql:hot" names a stage not in STAGES/)
    expect(() => lifecycleFromConfig(loadConfig({ STAGE_SIGNALS: 'warm:mql' }))).toThrow(/STAGE_SIGNALS: "warm" is not a signal kind/)
    expect(() => lifecycleFromConfig(loadConfig({ STAGES_AFTER: 'lead' }))).toThrow(ConfigError)
    expect(() => loadConfig({ STAGES: 'Lead,MQL' })).toThrow(/STAGES/)
  })
})

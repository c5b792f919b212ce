import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DEFAULT_LIFECYCLE, type FunnelStage, Lifecycle } from '../src/lifecycle/lifecycle.js'
import { newSignalId, recordSignalEvents } from '../src/signals.js'
import { chTime } from '../src/time.js'
import { DAY, group, openRuleStore } from './rules-fixtures.js'

let db: Awaited<ReturnType<typeof openRuleStore>>
let lc: Lifecycle
beforeAll(async () => {
  db = await openRuleStore()
  lc = new Lifecycle(db.store, DEFAULT_LIFECYCLE)
  await history()
})
afterAll(async () => {
  await db.close()
})

const JAN = Date.UTC(2026, 0, 10)
const FEB = Date.UTC(2026, 1, 10)

/**
 * a1..a3 are seen on Jan 10 and fire the rule fs-pql; a1 and a2 become customers 2 days later.
 * b1..b3 are seen on Feb 10 and never fire it; b1 becomes a customer 4 days later.
 */
async function history() {
  await db.put([...['a1', 'a2', 'a3'].map((id) => group(`${id}-u`, id, {}, JAN)), ...['b1', 'b2', 'b3'].map((id) => group(`${id}-u`, id, {}, FEB))])
  for (const id of ['a1', 'a2', 'a3']) {
    const signal = { id: newSignalId(), rule_id: 'fs-pql', rule_version: 1, kind: 'pql' as const, subject: { type: 'account' as const, id }, status: 'open' as const, fired_at: new Date(JAN + DAY).toISOString(), resolved_at: null, score: null, reasons: [] }
    await recordSignalEvents(db.store, undefined, [{ type: 'signal.fired', signal }], JAN + DAY)
  }
  const move = (id: string, at: number) => ({ subject_type: 'account', subject_id: id, id: `m-${id}`, at: chTime(at), from_stage: 'lead', to_stage: 'customer', cause_type: 'api', cause: '', reason: 'won', recorded_at: chTime(at) })
  await db.store.insert('stage_transitions_v1', [move('a1', JAN + 2 * DAY), move('a2', JAN + 2 * DAY), move('b1', FEB + 4 * DAY)])
}

const stage = (stages: FunnelStage[], name: string) => stages.find((s) => s.stage === name)

describe('the funnel by signal and by month', () => {
  it('splits conversion and time in stage between subjects that fired the rule and those that did not', async () => {
    const f = await lc.funnel('account', Date.UTC(2026, 0, 1), Date.UTC(2026, 1, 28), { signal: 'fs-pql' })
    expect(stage(f.stages, 'lead')).toMatchObject({ entered: 6, converted: 3, conversion_rate: 0.5 })
    const fired = stage(f.signal?.fired.stages ?? [], 'lead')
    const notFired = stage(f.signal?.not_fired.stages ?? [], 'lead')
    expect(fired).toMatchObject({ entered: 3, converted: 2, conversion_rate: 0.667, stalled: 1, time_in_stage: { median_seconds: 2 * 86_400, samples: 2 } })
    expect(notFired).toMatchObject({ entered: 3, converted: 1, conversion_rate: 0.333, stalled: 2, time_in_stage: { median_seconds: 4 * 86_400, samples: 1 } })
    expect([stage(f.signal?.fired.stages ?? [], 'customer')?.entered, stage(f.signal?.not_fired.stages ?? [], 'customer')?.entered]).toEqual([2, 1])
    expect(f.signal?.rule_id).toBe('fs-pql')
    expect(f.cohorts).toBeUndefined()
  })

  it('gives the funnel of each month of entry, months without entries included', async () => {
    const f = await lc.funnel('account', Date.UTC(2025, 11, 15), Date.UTC(2026, 1, 28), { cohort: 'month', signal: 'fs-pql' })
    expect(f.cohorts?.map((c) => c.month)).toEqual(['2025-12', '2026-01', '2026-02'])
    const [dec, jan, feb] = f.cohorts ?? []
    expect(stage(dec?.stages ?? [], 'lead')?.entered).toBe(0)
    expect(stage(jan?.stages ?? [], 'lead')).toMatchObject({ entered: 3, converted: 2, conversion_rate: 0.667 })
    expect(stage(jan?.stages ?? [], 'customer')?.entered).toBe(2)
    expect(stage(feb?.stages ?? [], 'lead')).toMatchObject({ entered: 3, converted: 1, conversion_rate: 0.333 })
    // The January cohort split by signal: every entry of January fired.
    expect(stage(jan?.signal?.fired.stages ?? [], 'lead')?.entered).toBe(3)
    expect(stage(jan?.signal?.not_fired.stages ?? [], 'lead')?.entered).toBe(0)
    expect(stage(feb?.signal?.not_fired.stages ?? [], 'lead')?.entered).toBe(3)
  })
})

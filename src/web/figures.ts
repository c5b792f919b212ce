import { runRule } from '../../rules/run.js'
import { parseRule, type Rule } from '../../rules/schema.js'
import type { Store } from '../store/store.js'

/**
 * An account's champion and seat use, measured by the rules layer itself (a rule that is never
 * stored, run for one account), so the page shows exactly what `champion_quiet` and `seat_usage`
 * conditions see.
 */
const MEASURE: Rule = parseRule({
  id: 'workspace-account-figures',
  kind: 'custom',
  subject: 'account',
  when: {
    any: [
      { metric: 'champion_quiet', champion: 'top', window: '90d', op: 'gte', value: 0 },
      { metric: 'seat_usage', seats_trait: 'seats', window: '30d', op: 'gte', value: 0 },
    ],
  },
})

export type AccountFigures = { champion: string | null; quietDays: number | null; seatsUsed: number | null; seats: number | null }

const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : null)

export async function accountFigures(store: Store, id: string, now: number): Promise<AccountFigures> {
  const [match] = await runRule(store, MEASURE, { asOf: now, subjectIds: [id] })
  const [champion, seats] = match?.reasons ?? []
  return {
    champion: typeof champion?.detail?.champion === 'string' && champion.detail.champion ? champion.detail.champion : null,
    quietDays: num(champion?.measured),
    seatsUsed: num(seats?.detail?.seats_used),
    seats: num(seats?.detail?.seats),
  }
}

const ACTIVE_30D: Rule = parseRule({
  id: 'workspace-active-users',
  kind: 'custom',
  subject: 'account',
  when: { all: [{ metric: 'active_users', window: '30d', op: 'gte', value: 0 }] },
})

/** Distinct active users over the last 30 days of each account, as the rules count them (one query). */
export async function activeUsers30d(store: Store, ids: string[], now: number): Promise<Map<string, number>> {
  if (ids.length === 0) return new Map()
  const matches = await runRule(store, ACTIVE_30D, { asOf: now, subjectIds: ids })
  return new Map(matches.map((m) => [m.subjectId, num(m.reasons[0]?.measured) ?? 0]))
}

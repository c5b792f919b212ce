import type { Reason, SubjectType } from '../src/signals.js'
import type { Store } from '../src/store/store.js'
import { cooldownOf, decide, type EntryState } from './evaluator/decide.js'
import { loadStateStatus, planOf } from './plan.js'
import { runRule, type RuleMatch } from './run.js'
import type { Rule } from './schema.js'

export const MAX_MOMENTS = 2000
/** Moments evaluated at once; each is one query, independent of the others. */
const CONCURRENCY = 4

export type BacktestFire = { subject: { type: SubjectType; id: string }; at: string; score: number | null; reasons: Reason[] }
export type BacktestResolve = { subject: { type: SubjectType; id: string }; at: string; fired_at: string }

export type BacktestResult = {
  rule_id: string
  rule_version: number | null
  from: string
  to: string
  step_ms: number
  moments: number
  fired: BacktestFire[]
  resolved: BacktestResolve[]
  /** Subjects with a signal still open at `to`. */
  open_at_end: number
}

const iso = (ms: number) => new Date(ms).toISOString()

/** from, from + step, …, up to and including `to`. */
export function moments(from: number, to: number, step: number): number[] {
  const out: number[] = []
  for (let t = from; t <= to; t += step) out.push(t)
  return out
}

/**
 * What a rule would have fired and resolved had it been evaluated at each moment from `from` to
 * `to` every `step`, over the stored history, starting with no signal open. Nothing is stored. It
 * runs the evaluator's own query (runRule as of each moment) and its own entry/resolve/cooldown
 * decision, so the answer is what a loop of evaluations at the same moments would have produced.
 */
export async function backtest(
  store: Store,
  rule: Rule,
  opts: { from: number; to: number; step: number; version?: number | null; backend?: 'state' | 'events' },
): Promise<BacktestResult> {
  const times = moments(opts.from, opts.to, opts.step)
  // The per-day state answers any moment exactly when it holds what the rule reads; otherwise the raw events do.
  const backend = opts.backend ?? planOf(rule, await loadStateStatus(store)).backend
  const cooldown = cooldownOf(rule)
  const results: RuleMatch[][] = new Array(times.length)
  for (let i = 0; i < times.length; i += CONCURRENCY) {
    const batch = times.slice(i, i + CONCURRENCY)
    const runs = await Promise.all(batch.map((asOf) => runRule(store, rule, { asOf, backend })))
    runs.forEach((r, j) => (results[i + j] = r))
  }
  const state = new Map<string, EntryState>()
  const fired: BacktestFire[] = []
  const resolved: BacktestResolve[] = []
  times.forEach((now, i) => {
    const matched = new Map((results[i] ?? []).filter((m) => m.matched).map((m) => [m.subjectId, m]))
    for (const subjectId of new Set([...matched.keys(), ...state.keys()])) {
      const prev = state.get(subjectId)
      const match = matched.get(subjectId)
      const decision = decide(prev, match !== undefined, now, cooldown)
      const subject = { type: rule.subject, id: subjectId }
      if (decision === 'fire' && match) {
        state.set(subjectId, { id: `${subjectId}@${now}`, status: 'open', firedAt: now })
        fired.push({ subject, at: iso(now), score: match.score, reasons: match.reasons })
      } else if (decision === 'resolve' && prev) {
        state.set(subjectId, { ...prev, status: 'resolved' })
        resolved.push({ subject, at: iso(now), fired_at: iso(prev.firedAt) })
      }
    }
  })
  return {
    rule_id: rule.id,
    rule_version: opts.version ?? null,
    from: iso(opts.from),
    to: iso(opts.to),
    step_ms: opts.step,
    moments: times.length,
    fired,
    resolved,
    open_at_end: [...state.values()].filter((s) => s.status === 'open').length,
  }
}

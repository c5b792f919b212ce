import { z } from 'zod'
import type { Rule } from '../../rules/schema.js'
import { ApiError } from '../errors.js'
import type { Store } from '../store/store.js'
import { getOutcome } from './outcome-store.js'
import { type Outcome, ruleTarget } from './outcomes.js'
import { feedbackCounts, type FireSource, type GroupRow, qualityGroups } from './queries.js'

/**
 * The quality report of a rule (SPEC "Outcomes and signal quality"): of the subjects its `where`
 * admits in a period, those it fired for, and how often each group reached the rule's outcome
 * within the horizon. Subjects whose horizon has not elapsed by `now` are pending: counted apart,
 * in neither numerator nor denominator, whether or not they have reached the outcome yet (counting
 * early successes and not the failures still to come would flatter a rule).
 */

export const Interval = z.object({ low: z.number(), high: z.number() })
export type Interval = z.infer<typeof Interval>

const Group = z.object({ subjects: z.number().int(), decided: z.number().int(), reached: z.number().int(), pending: z.number().int(), pending_reached: z.number().int() })

/** GET /v1/rules/:id/quality, and `quality` in a backtest. */
export const QualityReport = z.object({
  rule_id: z.string(),
  outcome: z.string(),
  horizon: z.string(),
  from: z.iso.datetime(),
  to: z.iso.datetime(),
  /** Subjects the rule's `where` admitted at some moment of the period, fired or not. */
  eligible: z.number().int(),
  /** Eligible subjects the rule fired for in the period (each counted once, at its first fire). */
  fired: z.number().int(),
  /** Fired, horizon elapsed, outcome reached within it. */
  fired_reached: z.number().int(),
  /** Fired, horizon not elapsed yet: neither success nor failure. */
  pending: z.number().int(),
  /** fired_reached / (fired − pending) */
  precision: z.number().nullable(),
  precision_ci: Interval.nullable(),
  /** The same rate among eligible subjects never fired in the period. */
  base_rate: z.number().nullable(),
  base_rate_ci: Interval.nullable(),
  /** precision / base_rate */
  lift: z.number().nullable(),
  /** Of the decided subjects that reached the outcome, the share a fire preceded. */
  recall: z.number().nullable(),
  /** From the fire to the outcome, over fired_reached, in seconds. */
  lead_time: z.object({ median_s: z.number().nullable(), p90_s: z.number().nullable() }),
  /** Of the signals fired in the period that people judged, the share judged useful (the latest verdict of each). */
  useful_share: z.number().nullable(),
  /** The counts behind every ratio. */
  counts: z.object({
    fired: Group,
    not_fired: Group,
    /** recall's denominator: decided subjects that reached the outcome, fired or not. */
    outcomes: z.number().int(),
    feedback: z.object({ judged: z.number().int(), useful: z.number().int() }).nullable(),
  }),
})
export type QualityReport = z.infer<typeof QualityReport>

/** z for a two-sided 95% interval. */
const Z95 = 1.959963984540054

/** The Wilson score interval of k successes in n trials (null when n = 0). */
export function wilson(k: number, n: number, z = Z95): Interval | null {
  if (n === 0) return null
  const p = k / n
  const z2 = z * z
  const denom = 1 + z2 / n
  const center = (p + z2 / (2 * n)) / denom
  const margin = (z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / denom
  return { low: round(Math.max(0, center - margin)), high: round(Math.min(1, center + margin)) }
}

const round = (x: number) => Math.round(x * 1e6) / 1e6
const ratio = (a: number, b: number) => (b === 0 ? null : round(a / b))

export type QualityOptions = {
  from: number
  to: number
  now: number
  /** Overrides the rule's horizon (and its kind's default). */
  horizon?: string
  /** The would-be fires of a backtest instead of the rule's stored signals. */
  fires?: { subjects: string[]; at: number[] }
}

/** The outcome a rule is judged by, stored; a clear error when it names none or one not stored. */
export async function outcomeOfRule(store: Store, rule: Rule): Promise<Outcome> {
  const { outcome } = ruleTarget(rule)
  if (!outcome) {
    throw new ApiError({
      code: 'BAD_REQUEST',
      message: `rule ${rule.id} names no outcome, and kind ${rule.kind} has no default: add outcome: <id> to the rule`,
      details: [{ path: 'outcome', message: 'a custom rule names its outcome' }],
    })
  }
  const stored = await getOutcome(store, outcome)
  if (!stored || stored.deleted) {
    throw new ApiError({
      code: 'NOT_FOUND',
      message: `no outcome ${outcome} (rule ${rule.id} is judged by it): PUT /v1/outcomes/${outcome} first`,
    })
  }
  return stored.outcome
}

export async function qualityReport(store: Store, rule: Rule, opts: QualityOptions): Promise<QualityReport> {
  const target = ruleTarget(opts.horizon ? { ...rule, horizon: opts.horizon } : rule)
  const outcome = await outcomeOfRule(store, rule)
  const fires: FireSource = opts.fires ?? { rule_id: rule.id }
  const [groups, feedback] = await Promise.all([
    qualityGroups(store, {
      subject: rule.subject,
      where: rule.where ?? [],
      outcome,
      fires,
      from: opts.from,
      to: opts.to,
      now: opts.now,
      horizonMs: target.horizon_ms,
    }),
    opts.fires ? null : feedbackCounts(store, rule.id, rule.subject, opts.from, opts.to),
  ])
  const group = (g: GroupRow | undefined) => {
    const subjects = Number(g?.subjects ?? 0)
    const pending = Number(g?.pending ?? 0)
    return { subjects, decided: subjects - pending, reached: Number(g?.reached ?? 0), pending, pending_reached: Number(g?.pending_reached ?? 0) }
  }
  const f = group(groups.fired)
  const nf = group(groups.not_fired)
  const precision = ratio(f.reached, f.decided)
  const base_rate = ratio(nf.reached, nf.decided)
  const [median, p90] = f.reached ? (groups.fired?.lead ?? []) : []
  return {
    rule_id: rule.id,
    outcome: outcome.id,
    horizon: target.horizon,
    from: new Date(opts.from).toISOString(),
    to: new Date(opts.to).toISOString(),
    eligible: f.subjects + nf.subjects,
    fired: f.subjects,
    fired_reached: f.reached,
    pending: f.pending,
    precision,
    precision_ci: wilson(f.reached, f.decided),
    base_rate,
    base_rate_ci: wilson(nf.reached, nf.decided),
    lift: precision !== null && base_rate ? round(precision / base_rate) : null,
    recall: ratio(f.reached, f.reached + nf.reached),
    lead_time: { median_s: median === undefined || median === null ? null : round(Number(median)), p90_s: p90 === undefined || p90 === null ? null : round(Number(p90)) },
    useful_share: feedback ? ratio(feedback.useful, feedback.judged) : null,
    counts: { fired: f, not_fired: nf, outcomes: f.reached + nf.reached, feedback },
  }
}

/**
 * The quality of a backtest's would-be fires, judged like stored signals against the outcomes
 * that followed them in history. A rule with no outcome to judge it by still backtests: the
 * figures are then null, with the reason.
 */
export async function backtestQuality(
  store: Store,
  rule: Rule,
  result: { fired: { subject: { id: string }; at: string }[] },
  opts: Omit<QualityOptions, 'fires'>,
): Promise<{ quality: QualityReport | null; quality_unavailable?: string }> {
  const fires = { subjects: result.fired.map((f) => f.subject.id), at: result.fired.map((f) => Date.parse(f.at)) }
  try {
    return { quality: await qualityReport(store, rule, { ...opts, fires }) }
  } catch (err) {
    if (err instanceof ApiError && err.status < 500) return { quality: null, quality_unavailable: err.message }
    throw err
  }
}

/**
 * Rule → ClickHouse SQL. One rule compiles to one SELECT whose rows are
 * `{subject_id, matched: 0|1, score: number|null, figures: string}`, and to the templates of its
 * reasons (Reason from src/signals.ts without the figures). `figures` is a JSON array holding, for
 * each reason in turn, its measured value, whether it passed, then its detail values; rules/run.ts
 * fills the templates with them. (The constant text of the reasons stays out of the rows: a full
 * run of the MQL rule shipped 13.5 MB of it for 10,927 subjects.) Every value and every
 * event/property/trait name is a bound `{pN:Type}` parameter (rules/compile/sql.ts); the SQL text
 * holds only what the compiler writes.
 *
 * Contract with the evaluator (decided here; rules/evaluator.ts relies on it):
 * - With `subjectIds`: exactly one row per requested subject id, matched or not (a subject with no
 *   data reads as zero activity), so the evaluator fires and resolves exactly those subjects.
 * - Without `subjectIds` (a full run): only matched rows (matched = 1). A subject with an open
 *   signal that is absent from a full run has left the condition and is resolved. A full run
 *   considers every subject seen by `asOf` (accounts_v1 / users_v1).
 * - `shard` keeps the subjects with cityHash64(subject_id) % count = index, in both modes.
 * - Windows are half-open on the left: an event counts in a window `w` when
 *   asOf − w < timestamp ≤ asOf; events after `asOf` never count (backtests see only the past).
 * - Traits are the latest value at or before `asOf` (argMax by timestamp). A missing trait fails
 *   every filter except `exists: false`.
 * - Activity is track / page / screen only; identify, group and alias never count. Counts are of
 *   distinct messages (source, message_id), so a message stored twice still counts once.
 * - Which events are a subject's: rules/attribution.ts (the one definition, shared with the
 *   subjects API and the per-day state).
 *
 * The compiler in three steps (rules/compile/):
 * - planning (`parts.ts`): where each measurement is read and the partial aggregates ("parts") it
 *   needs; the reference reads whole days of a window from the daily rollup activity_daily_v1
 *   (migrations 005-006) and only the partial days at the edges from events_v1, so a 90-day
 *   window costs about as much as its number of distinct identity-days; property filters,
 *   numeric properties and decay read events_v1 for their whole window;
 * - leaves (`leaves.ts`): every condition, score item and trait filter as a reason with SQL for
 *   its measured value and for "it holds", over per-subject aggregates of parts;
 * - assembly (`query.ts`): the chain of named CTEs (its table there names each one and its
 *   columns) and the final SELECT.
 *
 * Why the query is shaped as it is (fast): events are first aggregated by their raw identity
 * (account id, user id, anonymous id) — the prefix of events_v1's sorting key — with one part per
 * measurement; only those few rows are then resolved to users and attributed to accounts, merged
 * per (subject, user), then per subject. No join ever runs per event. An incremental run
 * (`subjectIds`) gets its `scope` from rules/scope.ts: the raw ids to read and their resolution,
 * bound as parameters (the whole identities_v1 is resolved only by full runs), and whether the
 * rollup pays for so few subjects. Distinct messages are counted by events_v1.message_key
 * (migration 016).
 */
import type { Scope } from './scope.js'
import { Leaves } from './compile/leaves.js'
import { ScanPlan } from './compile/parts.js'
import { bySubjectCte, cte, finalSelect, type ReasonTemplate, referenceActivity, subjectsCte, traitsCte } from './compile/query.js'
import { Params } from './compile/sql.js'
import { type Edges, StateSource, stateActivity } from './compile/state.js'
import type { Rule } from './schema.js'

export type { ReasonTemplate } from './compile/query.js'

export type CompileOptions = {
  /** Evaluate as of this moment (epoch ms). */
  asOf: number
  /** Restrict to these subjects (incremental evaluation); needs `scope`. */
  subjectIds?: string[]
  /** What to read for `subjectIds`: rules/scope.ts, loadScope (found once per subject type). */
  scope?: Scope
  /** cityHash64(subject_id) % count = index. */
  shard?: { count: number; index: number }
  /** Read whole days from the daily rollup (default: true, or as the scope says); false reads events_v1 only. */
  rollups?: boolean
  /**
   * What the rules read: `events` (the reference: events_v1 and the rollup, attributed at query
   * time; the default) or `state` (the per-day state, rules/compile/state.ts; needs no scope).
   */
  backend?: 'events' | 'state'
  /** State backend: the rows a window edge cuts through, found beforehand (rules/run.ts), or found by the query itself. */
  edges?: Edges
}

/** `reasons[k]`: the templates of the k-th rule's reasons, in the order of its figures. */
export type CompiledRule = { sql: string; params: Record<string, unknown>; reasons: ReasonTemplate[][] }

export function compileRule(rule: Rule, opts: CompileOptions): CompiledRule {
  return compileRules([rule], opts)
}

/** Whether `compileRules` can put these rules in one query: one subject type, the same `sources`. */
export function fusable(a: Rule, b: Rule): boolean {
  return a.subject === b.subject && JSON.stringify(a.sources ?? null) === JSON.stringify(b.sources ?? null)
}

/**
 * Several rules of one subject type in one query: they share the scans of events_v1 and the
 * rollup, the identity resolution and the attribution to accounts, which are most of a rule's
 * cost. One row per subject with `matched<k>`, `score<k>`, `figures<k>` for the k-th rule; a full
 * run keeps the subjects that match at least one of them. One rule compiles to the columns
 * `matched`, `score`, `figures` (the contract at the top of this file).
 */
export function compileRules(rules: Rule[], opts: CompileOptions): CompiledRule {
  const first = rules[0]
  if (!first) throw new Error('compileRules: no rule')
  if (rules.some((r) => !fusable(first, r))) throw new Error('compileRules: rules of one query need the same subject type and sources')
  const p = new Params()
  const account = first.subject === 'account'
  let leaves: Leaves
  let activity: () => string[]
  if (opts.backend === 'state') {
    if (first.sources) throw new Error('compileRules: the state does not keep sources; rules with sources read events')
    const src = new StateSource(p, opts.asOf, first.subject)
    leaves = new Leaves(p, opts.asOf, src, first)
    activity = () => stateActivity(p, src, first, opts)
  } else {
    const useRollups = opts.rollups ?? (opts.subjectIds && opts.scope ? opts.scope.rollups : true)
    const plan = new ScanPlan(p, opts.asOf, rules, useRollups)
    leaves = new Leaves(p, opts.asOf, plan, first)
    activity = () => referenceActivity(p, plan, first, opts)
  }
  const compiled = rules.map((r) => leaves.addRule(r))
  const ctes = [
    subjectsCte(p, account, opts),
    ...activity(),
    ...leaves.ctes.map((c) => cte(c.name, c.sql)),
    ...bySubjectCte(leaves),
    ...traitsCte(p, leaves, account, opts),
  ]
  const { sql, reasons } = finalSelect(p, leaves, compiled, ctes, opts)
  return { sql, params: p.values, reasons }
}

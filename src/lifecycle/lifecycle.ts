import { ulid } from 'ulid'
import { type Config, ConfigError } from '../config.js'
import { SIGNAL_KINDS, type Signal, type SignalEventType, type SubjectType } from '../signals.js'
import type { Store } from '../store/store.js'
import { accountsOfUsers, firstSeen, subjectSeen } from '../subjects/queries.js'
import { chTime, isoFromCh, msFromCh } from '../time.js'
import { StageError } from './errors.js'
import { type FunnelRow, funnelRows, insertTransitions, latestTransitions, planChanges, traitMovesOf, transitionsOf, type TransitionRow } from './queries.js'

/**
 * Lifecycle stages. A configurable ladder (default `lead → mql → pql → sql → customer`, then
 * `churn_risk`, `churned`); subjects move forward when a signal of a mapped kind fires, when their
 * `plan` trait changes, and to any stage when a CRM says so. A stage after the main ladder that a
 * signal caused (churn_risk) reverts when that signal resolves. Every move is a row of
 * stage_transitions_v1 with its time and cause; a subject never moved is in the first stage since
 * it was first seen.
 */

export type LifecycleConfig = {
  /** The main ladder, in order; the first is where every subject starts. */
  stages: string[]
  /** Stages after the main ladder (reached from its end): churn_risk, churned. */
  after: string[]
  /** Signal kind → the stage its firing moves the subject to. */
  signals: Record<string, string>
  /** `plan` trait value → stage (`*`: any other value); a value mapped to null moves nothing. */
  plans: Record<string, string | null>
}

export const DEFAULT_LIFECYCLE: LifecycleConfig = {
  stages: ['lead', 'mql', 'pql', 'sql', 'customer'],
  after: ['churn_risk', 'churned'],
  signals: { mql: 'mql', pql: 'pql', churn_risk: 'churn_risk' },
  plans: { free: null, trial: null, cancelled: 'churned', canceled: 'churned', churned: 'churned', '*': 'customer' },
}

export type CauseType = 'first_seen' | 'signal' | 'signal_resolved' | 'trait' | 'api'

export type Transition = {
  id: string
  subject: { type: SubjectType; id: string }
  at: string
  from: string | null
  to: string
  cause: { type: CauseType; id: string | null; reason: string }
  /** Who made the move (a person, a CRM), when a person or system said so; null for automatic moves. */
  by: string | null
}

export type CurrentStage = { stage: string; since: string | null; transition: Transition | null }

const iso = (ms: number) => new Date(ms).toISOString()

function toTransition(r: TransitionRow): Transition {
  return {
    id: r.id,
    subject: { type: r.subject_type as SubjectType, id: r.subject_id },
    at: isoFromCh(r.at),
    from: r.from_stage || null,
    to: r.to_stage,
    cause: { type: r.cause_type as CauseType, id: r.cause || null, reason: r.reason },
    by: r.by || null,
  }
}

export type FunnelStage = {
  stage: string
  entered: number
  /** Of those that entered, how many reached a later stage by the end of the period. */
  converted: number | null
  conversion_rate: number | null
  /** Entered in the period and still there at its end. */
  stalled: number
  time_in_stage: { median_seconds: number | null; p90_seconds: number | null; samples: number }
}

/** Per stage, and the main-ladder stage (before the last) where most subjects that entered it are still stuck. */
export type FunnelPart = { stages: FunnelStage[]; stall_stage: string | null }

export type FunnelOptions = {
  /** Split subjects that fired this rule (by the end of the period) from those that did not. */
  signal?: string
  /** The funnel of each month of entry into a stage. */
  cohort?: 'month'
}

export type Funnel = FunnelPart & {
  subject_type: SubjectType
  from: string
  to: string
  /** With `signal`: the same figures for the subjects that fired the rule and for the others. */
  signal?: { rule_id: string; fired: FunnelPart; not_fired: FunnelPart }
  /** With `cohort=month`: the figures of the entries of each month (split by signal too, with `signal`). */
  cohorts?: (FunnelPart & { month: string; signal?: { fired: FunnelPart; not_fired: FunnelPart } })[]
}

export class Lifecycle {
  readonly config: LifecycleConfig
  readonly #order: string[]
  readonly #store: Store

  constructor(store: Store, config: LifecycleConfig = DEFAULT_LIFECYCLE) {
    this.#store = store
    this.config = config
    this.#order = [...config.stages, ...config.after]
  }

  get first(): string {
    return this.config.stages[0] as string
  }

  rank(stage: string): number {
    return this.#order.indexOf(stage)
  }

  /** The current stage of each given subject (subjects never moved: the first stage). */
  async current(type: SubjectType, ids: string[]): Promise<Map<string, CurrentStage>> {
    const out = new Map<string, CurrentStage>()
    if (ids.length === 0) return out
    const rows = await latestTransitions(this.#store, type, ids)
    for (const r of rows) {
      const t = toTransition(r)
      out.set(r.subject_id, { stage: t.to, since: t.at, transition: t })
    }
    const missing = ids.filter((id) => !out.has(id))
    if (missing.length) {
      const byId = await firstSeen(this.#store, type, missing)
      for (const id of missing) out.set(id, { stage: this.first, since: byId.get(id) ?? null, transition: null })
    }
    return out
  }

  /** Every transition of a subject, oldest first, starting with its entry into the first stage. */
  async history(type: SubjectType, id: string): Promise<Transition[]> {
    const [rows, seen] = await Promise.all([transitionsOf(this.#store, type, id), subjectSeen(this.#store, type, id)])
    const start: Transition[] = seen
      ? [
          {
            id: 'first_seen',
            subject: { type, id },
            at: seen.first_seen,
            from: null,
            to: this.first,
            cause: { type: 'first_seen', id: null, reason: 'first seen' },
            by: null,
          },
        ]
      : []
    return [...start, ...rows.map(toTransition)]
  }

  /** A move requested through the API (a CRM marking sales-accepted, qualified, won…), recording who asked for it. */
  async setStage(type: SubjectType, id: string, stage: string, reason: string, now: number, by = ''): Promise<Transition> {
    if (this.rank(stage) === -1) {
      throw new StageError(`unknown stage "${stage}"`, [{ path: 'stage', message: `must be one of ${this.#order.join(', ')}` }])
    }
    const cur = (await this.current(type, [id])).get(id) as CurrentStage
    const [t] = await this.#record([
      { type, id, stageId: `api:${ulid(now)}`, at: this.#after(cur, now), from: cur.stage, to: stage, causeType: 'api', cause: '', reason, by },
    ], now)
    return t as Transition
  }

  /** Move the subjects of fired signals forward; revert an after-ladder stage whose signal resolved. */
  async applySignals(changes: { type: SignalEventType; signal: Signal }[], now: number): Promise<Transition[]> {
    const relevant = changes.filter((c) => this.config.signals[c.signal.kind] !== undefined)
    if (relevant.length === 0) return []
    // A user's signal also moves the accounts the user belongs to.
    const userIds = [...new Set(relevant.filter((c) => c.signal.subject.type === 'user').map((c) => c.signal.subject.id))]
    const accountsOf = userIds.length ? await accountsOfUsers(this.#store, userIds) : new Map<string, string[]>()
    const targets = (s: Signal): { type: SubjectType; id: string }[] => [
      s.subject,
      ...(s.subject.type === 'user' ? (accountsOf.get(s.subject.id) ?? []).map((id) => ({ type: 'account' as const, id })) : []),
    ]
    const byType = { account: new Set<string>(), user: new Set<string>() }
    for (const c of relevant) for (const t of targets(c.signal)) byType[t.type].add(t.id)
    const current = {
      account: await this.current('account', [...byType.account]),
      user: await this.current('user', [...byType.user]),
    }
    const moves: Move[] = []
    for (const { type, signal } of relevant) {
      const stage = this.config.signals[signal.kind] as string
      for (const t of targets(signal)) {
        const cur = current[t.type].get(t.id) as CurrentStage
        let move: Move | undefined
        if (type === 'signal.fired' && this.rank(stage) > this.rank(cur.stage)) {
          move = {
            type: t.type,
            id: t.id,
            stageId: `signal:${signal.id}`,
            at: this.#after(cur, Date.parse(signal.fired_at)),
            from: cur.stage,
            to: stage,
            causeType: 'signal',
            cause: signal.id,
            reason: `${signal.rule_id} v${signal.rule_version} fired${t.id !== signal.subject.id ? ` for user ${signal.subject.id}` : ''}`,
          }
        } else if (
          type === 'signal.resolved' &&
          this.config.after.includes(stage) &&
          cur.stage === stage &&
          cur.transition?.cause.id === signal.id &&
          cur.transition.from
        ) {
          move = {
            type: t.type,
            id: t.id,
            stageId: `resolved:${signal.id}`,
            at: this.#after(cur, Date.parse(signal.resolved_at ?? iso(now))),
            from: cur.stage,
            to: cur.transition.from,
            causeType: 'signal_resolved',
            cause: signal.id,
            reason: `${signal.rule_id} v${signal.rule_version} resolved`,
          }
        }
        if (!move) continue
        moves.push(move)
        current[t.type].set(t.id, { stage: move.to, since: iso(move.at), transition: moveTransition(move) })
      }
    }
    return this.#record(moves, now)
  }

  /**
   * Moves from the `plan` trait: each change of a subject's plan (free → pro → cancelled) not yet
   * applied moves it forward to the stage its value maps to. Only the given subjects, or all.
   */
  async syncTraits(subjects: { account: string[]; user: string[] } | undefined, now: number): Promise<Transition[]> {
    const out: Transition[] = []
    for (const type of ['account', 'user'] as const) {
      const ids = subjects?.[type]
      if (ids && ids.length === 0) continue
      out.push(...(await this.#syncTraits(type, ids, now)))
    }
    return out
  }

  async #syncTraits(type: SubjectType, ids: string[] | undefined, now: number): Promise<Transition[]> {
    const changes = await planChanges(this.#store, type, ids)
    const candidates = changes
      .map((c) => ({ ...c, stage: this.#planStage(c.value), stageId: `trait:plan:${c.message_id}` }))
      .filter((c): c is typeof c & { stage: string } => c.stage !== null)
    if (candidates.length === 0) return []
    const subjectIds = [...new Set(candidates.map((c) => c.subject_id))]
    const applied = await traitMovesOf(this.#store, type, subjectIds)
    const pending = candidates.filter((c) => !applied.has(`${c.subject_id}|${c.stageId}`))
    if (pending.length === 0) return []
    const current = await this.current(type, [...new Set(pending.map((c) => c.subject_id))])
    const moves: Move[] = []
    for (const c of pending) {
      const cur = current.get(c.subject_id) as CurrentStage
      if (this.rank(c.stage) <= this.rank(cur.stage)) continue
      const move: Move = {
        type,
        id: c.subject_id,
        stageId: c.stageId,
        at: this.#after(cur, msFromCh(c.at)),
        from: cur.stage,
        to: c.stage,
        causeType: 'trait',
        cause: c.message_id,
        reason: `plan became ${safeJson(c.value)}`,
      }
      moves.push(move)
      current.set(c.subject_id, { stage: move.to, since: iso(move.at), transition: moveTransition(move) })
    }
    return this.#record(moves, now)
  }

  #planStage(json: string): string | null {
    const value = safeJson(json)
    if (value === '' || value === null || value === undefined) return null
    const key = String(value).toLowerCase()
    const stage = key in this.config.plans ? this.config.plans[key] : this.config.plans['*']
    return stage && this.rank(stage) !== -1 ? stage : null
  }

  /** Moves are ordered by time: a move never lands before the one it follows. */
  #after(cur: CurrentStage, at: number): number {
    const since = cur.since ? Date.parse(cur.since) : -Infinity
    return Math.max(at, since + 1)
  }

  async #record(moves: Move[], now: number): Promise<Transition[]> {
    if (moves.length === 0) return []
    await insertTransitions(
      this.#store,
      moves.map((m) => ({
        subject_type: m.type,
        subject_id: m.id,
        id: m.stageId,
        at: chTime(m.at),
        from_stage: m.from,
        to_stage: m.to,
        cause_type: m.causeType,
        cause: m.cause,
        reason: m.reason,
        by: m.by ?? '',
        recorded_at: chTime(now),
      })),
    )
    return moves.map(moveTransition)
  }

  /**
   * The funnel over a period: per stage, the subjects that entered it, how many of them reached a
   * later stage by the end, how many are still there, and the median / p90 time spent in it.
   */
  async funnel(type: SubjectType, from: number, to: number, opts: FunnelOptions = {}): Promise<Funnel> {
    const signal = opts.signal !== undefined
    const cohort = opts.cohort === 'month'
    const rows = await funnelRows(this.#store, { type, from, to, first: this.first, order: this.#order, signal: opts.signal, cohort: opts.cohort })
    const pick = (fired: number | null, month: string | null) =>
      this.#funnelPart(rows.filter((r) => (r.fired === null ? null : Number(r.fired)) === fired && (r.cohort === null ? null : r.cohort.slice(0, 7)) === month))
    const split = (month: string | null) => ({ fired: pick(1, month), not_fired: pick(0, month) })
    const out: Funnel = { subject_type: type, from: iso(from), to: iso(to), ...pick(null, null) }
    if (signal) out.signal = { rule_id: opts.signal as string, ...split(null) }
    if (cohort) {
      // Every month of the period, those without entries included, so a trend has no gaps.
      out.cohorts = monthsOf(from, to).map((month) => ({ month, ...pick(null, month), ...(signal ? { signal: split(month) } : {}) }))
    }
    return out
  }

  /** Per-stage figures of one group of funnel rows, in ladder order, and where most of them stall. */
  #funnelPart(rows: FunnelRow[]): FunnelPart {
    const byStage = new Map(rows.map((r) => [r.stage, r]))
    const last = this.config.stages[this.config.stages.length - 1]
    const stages: FunnelStage[] = this.#order.map((stage) => {
      const r = byStage.get(stage)
      const entered = Number(r?.entered ?? 0)
      const hasNext = this.config.stages.includes(stage) && stage !== last
      const converted = hasNext ? Number(r?.converted ?? 0) : null
      const samples = Number(r?.samples ?? 0)
      return {
        stage,
        entered,
        converted,
        conversion_rate: converted === null ? null : entered ? round(converted / entered) : null,
        stalled: Number(r?.stalled ?? 0),
        time_in_stage: {
          median_seconds: samples ? round(Number(r?.q[0])) : null,
          p90_seconds: samples ? round(Number(r?.q[1])) : null,
          samples,
        },
      }
    })
    let stall: FunnelStage | undefined
    for (const s of stages) {
      if (s.converted === null || s.stalled === 0) continue
      if (!stall || s.stalled > stall.stalled) stall = s
    }
    return { stages, stall_stage: stall?.stage ?? null }
  }
}


/** `YYYY-MM` of every UTC month from `from` to `to`. */
function monthsOf(from: number, to: number): string[] {
  const out: string[] = []
  const d = new Date(from)
  for (let y = d.getUTCFullYear(), m = d.getUTCMonth(); Date.UTC(y, m) <= to; m === 11 ? (y++, (m = 0)) : m++) {
    out.push(`${y}-${String(m + 1).padStart(2, '0')}`)
  }
  return out
}

type Move = {
  type: SubjectType
  id: string
  stageId: string
  at: number
  from: string
  to: string
  causeType: CauseType
  cause: string
  reason: string
  by?: string
}

function moveTransition(m: Move): Transition {
  return {
    id: m.stageId,
    subject: { type: m.type, id: m.id },
    at: iso(m.at),
    from: m.from || null,
    to: m.to,
    cause: { type: m.causeType, id: m.cause || null, reason: m.reason },
    by: m.by || null,
  }
}

const round = (n: number) => Math.round(n * 1000) / 1000

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s)
  } catch {
    return s
  }
}

/** Parse `kind:stage,kind:stage` (STAGE_SIGNALS) or `plan:stage,…` with `-` for "no move" (STAGE_PLANS). */
export function parsePairs(raw: string, allowNone: boolean): Record<string, string | null> {
  const out: Record<string, string | null> = {}
  for (const part of raw.split(',').map((s) => s.trim()).filter(Boolean)) {
    const i = part.lastIndexOf(':')
    if (i <= 0) throw new Error(`"${part}" must be name:stage`)
    const key = part.slice(0, i).trim().toLowerCase()
    const value = part.slice(i + 1).trim()
    if (value === '-' || value === '') {
      if (!allowNone) throw new Error(`"${part}" names no stage`)
      out[key] = null
    } else out[key] = value
  }
  return out
}

/**
 * The lifecycle settings of the environment (STAGES, STAGES_AFTER, STAGE_SIGNALS, STAGE_PLANS),
 * checked against each other: every stage named must be on the ladder.
 */
export function lifecycleFromConfig(config: Pick<Config, 'STAGES' | 'STAGES_AFTER' | 'STAGE_SIGNALS' | 'STAGE_PLANS'>): LifecycleConfig {
  const problems: string[] = []
  const all = [...config.STAGES, ...config.STAGES_AFTER]
  if (config.STAGES.length === 0) problems.push('STAGES: lists no stage')
  const dup = all.find((s, i) => all.indexOf(s) !== i)
  if (dup) problems.push(`STAGES/STAGES_AFTER: "${dup}" is listed twice`)
  const pairs = (name: 'STAGE_SIGNALS' | 'STAGE_PLANS', allowNone: boolean) => {
    try {
      const out = parsePairs(config[name], allowNone)
      for (const [k, stage] of Object.entries(out)) {
        if (stage !== null && !all.includes(stage)) problems.push(`${name}: "${k}:${stage}" names a stage not in STAGES or STAGES_AFTER`)
      }
      return out
    } catch (err) {
      problems.push(`${name}: ${err instanceof Error ? err.message : err}`)
      return {}
    }
  }
  const signals = pairs('STAGE_SIGNALS', false)
  for (const kind of Object.keys(signals)) {
    if (!(SIGNAL_KINDS as readonly string[]).includes(kind)) problems.push(`STAGE_SIGNALS: "${kind}" is not a signal kind (${SIGNAL_KINDS.join(', ')})`)
  }
  const plans = pairs('STAGE_PLANS', true)
  if (problems.length) throw new ConfigError(`invalid configuration:\n${problems.map((p) => `  ${p}`).join('\n')}`)
  return { stages: config.STAGES, after: config.STAGES_AFTER, signals: signals as Record<string, string>, plans }
}

import type { Logger } from 'pino'
import type { EventRow } from '../ingest/normalize.js'
import { newSignalId, recordSignalEvents, type Signal, type SignalBus, type SignalEventType } from '../src/signals.js'
import { openSignalsOfOtherRules, signalsById } from '../src/signals/queries.js'
import type { Shard } from '../src/store/shard.js'
import type { Store } from '../src/store/store.js'
import { fusable } from './compile.js'
import { loadStateStatus, planOf, type StateStatus } from './plan.js'
import { type Change, claim, type ClaimMode, firing, type Pending, resolution } from './evaluator/claims.js'
import { cooldownOf, decide, type EntryState } from './evaluator/decide.js'
import { loadEntryStates } from './evaluator/entry-states.js'
import { EvaluationSchedule } from './evaluator/schedule.js'
import {
  addTouches,
  emptyTouched,
  type EvaluateOptions,
  relevantSubjects,
  type Subjects,
  type Touched,
  touchedEvaluation,
  traitSubjects,
} from './evaluator/touched.js'
import { runRules, type RuleMatch } from './run.js'
import { loadScopes, type ScopePart } from './scope.js'
import type { Rule } from './schema.js'
import { listRules, SerialQueue, type StoredRule } from './store.js'

/**
 * The evaluator: runs the rules and turns their matches into signals. Its parts live in
 * rules/evaluator/: the fire / resolve decision (decide.ts, which the backtest uses too), the
 * claims that make each change happen once (claims.ts), which subjects a block touches
 * (touched.ts), when runs happen (schedule.ts) and the entry states read before deciding
 * (entry-states.ts). This file is the run itself.
 */

export { cooldownOf, decide, type Decision, type EntryState } from './evaluator/decide.js'
export type { ClaimMode } from './evaluator/claims.js'
export type { EvaluateOptions, Subjects, TouchedBy } from './evaluator/touched.js'
export { loadEntryStates } from './evaluator/entry-states.js'
export type { Shard }

export type EvaluationResult = {
  fired: Signal[]
  resolved: Signal[]
  /** Rules that could not be evaluated this time (the others still were). */
  errors: { rule_id: string; message: string }[]
}

/**
 * What follows an evaluation outside the rules (lifecycle stages, src/lifecycle/): the subjects'
 * traits are synced before the rules' changes are applied, so a plan that became paid before a
 * signal fired is the earlier move.
 */
export type EvaluationHooks = {
  syncTraits(subjects: Subjects | undefined, now: number): Promise<unknown>
  applySignals(changes: { type: SignalEventType; signal: Signal }[], now: number): Promise<unknown>
}

export type EvaluatorOptions = {
  now?: () => number
  logger?: Logger
  /** Full evaluation period; 0 turns the interval off. */
  intervalMs?: number
  /** How long touched subjects are collected before their incremental evaluation. */
  debounceMs?: number
  shard?: Shard
  lifecycle?: EvaluationHooks
  /** How fires and resolves are claimed (rules/evaluator/queries.ts); default `batch`. */
  claims?: ClaimMode
  /**
   * The per-day state (rules/state/keeper.ts): told of the enabled rules before each evaluation
   * (so it keeps what they read), it says what it holds. Without it the status is read from the
   * store (a process that does not write, such as the Worker's Cron).
   */
  state?: { sync(rules: readonly Rule[]): Promise<StateStatus> }
  /** `state` (default): each rule reads the per-day state when it can (rules/plan.ts); `events`: every rule reads the raw events. */
  backend?: Backend
}

type Backend = 'state' | 'events'

/** A rule's matches and entry states, found for its whole group (Evaluator #queryTogether). */
type Known = { matches: RuleMatch[]; states: Map<string, EntryState> }
/** A rule an evaluation runs, its subjects (undefined: all of them), and what it reads (rules/plan.ts). */
type Wanted = { stored: StoredRule; ids: string[] | undefined; backend: Backend }

/**
 * Turns rule matches into signals. Evaluations run one at a time in this process; across
 * processes (EVAL_SHARDS overlap, two instances on one store) every fire and resolve is claimed
 * in the store under a deterministic key first, so an entry fires once whoever evaluates it.
 */
export class Evaluator {
  readonly #store: Store
  readonly #bus: SignalBus | undefined
  readonly #now: () => number
  readonly #log: Logger | undefined
  readonly #opts: EvaluatorOptions
  readonly #queue = new SerialQueue()
  readonly #schedule: EvaluationSchedule

  constructor(store: Store, bus: SignalBus | undefined, opts: EvaluatorOptions = {}) {
    this.#store = store
    this.#bus = bus
    this.#now = opts.now ?? Date.now
    this.#log = opts.logger
    this.#opts = opts
    this.#schedule = new EvaluationSchedule({
      intervalMs: opts.intervalMs,
      debounceMs: opts.debounceMs,
      logger: opts.logger,
      runFull: async () => {
        const r = await this.evaluate()
        if (r.fired.length || r.resolved.length) this.#log?.info({ fired: r.fired.length, resolved: r.resolved.length }, 'evaluation')
      },
      runTouched: (touched) => this.#runTouched(touched),
    })
  }

  /** Start the periodic full evaluation (if an interval is set). */
  start(): this {
    this.#schedule.start()
    return this
  }

  /** Stop the timers, and wait for the evaluation under way (pending touches are dropped: the next full evaluation covers them). */
  async stop(): Promise<void> {
    await this.#schedule.stop()
    await this.#queue.run(async () => undefined)
  }

  /** Run every enabled rule now: for all subjects, or only the given ones (incremental). */
  evaluate(opts: EvaluateOptions = {}): Promise<EvaluationResult> {
    return this.#queue.run(() => this.#evaluate(opts))
  }

  /**
   * Hook for the Node ingestion writer: remember the ids these stored events touch, and what
   * touched them (event names; identify / group / alias as IDENTITY_CHANGE); they are evaluated
   * EVAL_DEBOUNCE_MS later (rules/evaluator/schedule.ts).
   */
  touch(events: readonly EventRow[]): void {
    this.#schedule.touch(events)
  }

  /**
   * Evaluate now the subjects these stored events touch (the Workers queue consumer, which has no
   * process to debounce in): the same subjects, found the same way, as `touch` would evaluate.
   */
  async evaluateTouched(events: readonly EventRow[]): Promise<EvaluationResult> {
    const run = await touchedEvaluation(this.#store, addTouches(emptyTouched(), events))
    return run ? this.evaluate(run) : { fired: [], resolved: [], errors: [] }
  }

  async #runTouched(touched: Touched) {
    const t0 = performance.now()
    const run = await touchedEvaluation(this.#store, touched)
    const n = run?.subjects ? run.subjects.account.length + run.subjects.user.length : run ? 'all' : 0
    this.#log?.debug({ ms: Math.round(performance.now() - t0), subjects: n }, 'touched subjects expanded')
    if (!run) return
    const started = performance.now()
    const r = await this.evaluate(run)
    const ms = Math.round(performance.now() - started)
    if (r.fired.length || r.resolved.length) {
      this.#log?.info({ fired: r.fired.length, resolved: r.resolved.length, subjects: n, ms }, 'incremental evaluation')
    } else {
      this.#log?.debug({ subjects: n, ms }, 'incremental evaluation')
    }
  }

  async #evaluate(opts: EvaluateOptions): Promise<EvaluationResult> {
    const now = this.#now()
    const result: EvaluationResult = { fired: [], resolved: [], errors: [] }
    const all = await listRules(this.#store)
    const rules = all.filter((r) => r.enabled && (!opts.ruleIds || opts.ruleIds.includes(r.id)))
    // Where the time goes (debug log): listing the rules, the trait sync, rule queries and entry
    // states (summed over the rules), each rule's claims (under its id), recording the changes.
    const phases: Record<string, number> = {}
    let mark = performance.now()
    const lap = (name: string) => {
      const t = performance.now()
      phases[name] = Math.round((phases[name] ?? 0) + t - mark)
      mark = t
    }
    const record = async (ruleId: string, work: () => Promise<Change[]>) => {
      try {
        const changes = await work()
        lap(ruleId)
        if (changes.length === 0) return
        await recordSignalEvents(this.#store, this.#bus, changes, now)
        for (const c of changes) (c.type === 'signal.fired' ? result.fired : result.resolved).push(c.signal)
        await this.#opts.lifecycle?.applySignals(changes, now)
        lap('record')
      } catch (err) {
        this.#log?.error({ err, rule: ruleId }, 'rule evaluation failed')
        result.errors.push({ rule_id: ruleId, message: err instanceof Error ? err.message : String(err) })
      }
    }
    lap('rules')
    // Traits first: a plan that became paid before a signal fired is the earlier move.
    try {
      await this.#opts.lifecycle?.syncTraits(traitSubjects(opts), now)
      lap('traits')
    } catch (err) {
      this.#log?.error({ err }, 'lifecycle trait sync failed')
      result.errors.push({ rule_id: '(lifecycle)', message: err instanceof Error ? err.message : String(err) })
    }
    // Each rule reads the per-day state when it holds what the rule reads (rules/plan.ts).
    const status = this.#opts.backend === 'events' ? undefined : await (this.#opts.state?.sync(rules.map((r) => r.rule)) ?? loadStateStatus(this.#store))
    lap('state')
    const wanted: Wanted[] = rules.map((stored) => ({ stored, ids: relevantSubjects(stored.rule, opts), backend: planOf(stored.rule, status).backend }))
    // An incremental run of the raw-event backend finds what to read for each subject type once
    // (rules/scope.ts), for every subject any rule of that type will evaluate, and shares it
    // between those rules. The state backend reads the subjects' own rows and needs none.
    const scopes = new Map<Rule['subject'], Promise<ScopePart[]>>()
    const scopeOf = (type: Rule['subject']) => {
      let parts = scopes.get(type)
      if (!parts) {
        const ids = new Set(wanted.flatMap((w) => (w.stored.rule.subject === type && w.backend === 'events' ? (w.ids ?? []) : [])))
        parts = loadScopes(this.#store, type, [...ids], now)
        scopes.set(type, parts)
      }
      return parts
    }
    // Rules that can share a query (rules/compile.ts, fusable) are evaluated group by group, in the
    // order of their first rule: one query for the group, then each rule's entry states and claims.
    const groups: Wanted[][] = []
    for (const w of wanted) {
      if (w.ids && w.ids.length === 0) continue
      const group = groups.find((g) => fusable((g[0] as Wanted).stored.rule, w.stored.rule) && (g[0] as Wanted).backend === w.backend)
      if (group) group.push(w)
      else groups.push([w])
    }
    for (const group of groups) {
      const together = group.length > 1 ? await this.#queryTogether(group, scopeOf, now) : undefined
      lap('query')
      for (const w of group) {
        const parts = w.ids && w.backend === 'events' ? await scopeOf(w.stored.rule.subject) : undefined
        await record(w.stored.id, async () => this.#evaluateRule(w, parts, now, lap, together?.get(w.stored.id)))
      }
    }
    // A full run also resolves the open signals of rules that were deleted since they fired (a
    // disabled rule's signals stay as they are: the rule is paused, not withdrawn).
    if (!opts.subjects && !opts.ruleIds) {
      const known = new Set(all.map((r) => r.id))
      await record('(deleted rules)', () => this.#resolveWithdrawn(known, now))
    }
    this.#log?.debug({ phases, subjects: opts.subjects ? opts.subjects.account.length + opts.subjects.user.length : 'all' }, 'evaluation phases')
    return result
  }

  async #resolveWithdrawn(known: Set<string>, now: number): Promise<Change[]> {
    const open = await openSignalsOfOtherRules(this.#store, [...known], this.#opts.shard)
    const pending = open.map((s) => resolution(s, now))
    return claim(this.#store, pending, now, this.#opts.claims ?? 'batch', this.#log)
  }

  /**
   * Rules of one subject type (and the same sources) read the same events, so one query answers
   * them together (compileRules in rules/compile.ts), and one more their entry states: rule id →
   * its matches (as runRule would return them) and states. An incremental run asks for the union
   * of the rules' subjects and gives each rule its own. If a query fails the map is empty: the
   * rules then run one by one, so a rule that fails does not hold up the others and its error is
   * reported under its id.
   */
  async #queryTogether(group: Wanted[], scopeOf: (type: Rule['subject']) => Promise<ScopePart[]>, now: number): Promise<Map<string, Known>> {
    const rules = group.map((w) => w.stored.rule)
    const type = (rules[0] as Rule).subject
    // Every rule of an evaluation has subject ids (an incremental run) or none does (a full run).
    const union = group.every((w) => !w.ids) ? undefined : [...new Set(group.flatMap((w) => w.ids ?? []))]
    try {
      const backend = (group[0] as Wanted).backend
      const matches = await this.#findMatches(group, union && backend === 'events' ? await scopeOf(type) : undefined, now)
      const states = await loadEntryStates(this.#store, rules.map((r) => r.id), type, union, this.#opts.shard)
      return new Map(
        group.map((w, k) => {
          const all = states.get(w.stored.id) ?? new Map<string, EntryState>()
          // A rule decides only for its own subjects: another rule's subjects are not resolved by it.
          const own = w.ids && new Set(w.ids)
          const mine = own ? new Map([...all].filter(([id]) => own.has(id))) : all
          return [w.stored.id, { matches: matches[k] ?? [], states: mine }]
        }),
      )
    } catch (err) {
      this.#log?.warn({ err, rules: rules.map((r) => r.id) }, 'evaluating rules together failed; evaluating them one by one')
      return new Map()
    }
  }

  /**
   * The matches of rules that can share a query (one rule is a group of one), for each rule as
   * runRule would return them: a full run, or in an incremental run each rule's own subjects,
   * found for the union of the group's subjects: with one query on the state, or with one query
   * per scope part (`parts`) on the raw events.
   */
  async #findMatches(group: Wanted[], parts: ScopePart[] | undefined, now: number): Promise<RuleMatch[][]> {
    const backend = (group[0] as Wanted).backend
    const opts = { asOf: now, shard: this.#opts.shard, backend }
    const rules = group.map((w) => w.stored.rule)
    if (group.every((w) => !w.ids)) return runRules(this.#store, rules, opts)
    const union = new Set(group.flatMap((w) => w.ids ?? []))
    const mine = group.map((w) => new Set(w.ids))
    let matches: RuleMatch[][] = group.map(() => [])
    for (const part of parts ?? [{ ids: [...union], scope: undefined }]) {
      const subjectIds = part.ids.filter((id) => union.has(id))
      if (!subjectIds.length) continue
      const results = await runRules(this.#store, rules, { ...opts, subjectIds, scope: part.scope })
      matches = matches.map((acc, k) => acc.concat((results[k] ?? []).filter((m) => mine[k]?.has(m.subjectId))))
    }
    return matches
  }

  /**
   * `wanted.ids`: an incremental run (the rule's subjects; `parts`, the scopes covering them on
   * the raw events). `known`: the rule's matches and entry states, already found by #queryTogether.
   */
  async #evaluateRule(wanted: Wanted, parts: ScopePart[] | undefined, now: number, lap?: (phase: string) => void, known?: Known): Promise<Change[]> {
    const { stored, ids, backend } = wanted
    const { rule } = stored
    const matches = known?.matches ?? (await this.#findMatches([wanted], parts, now))[0] ?? []
    lap?.('query')
    const bySubject = new Map<string, RuleMatch>()
    for (const m of matches) bySubject.set(m.subjectId, m)
    const state = known?.states ?? (await loadEntryStates(this.#store, [rule.id], rule.subject, ids, this.#opts.shard)).get(rule.id) ?? new Map()
    lap?.('state')
    const cooldown = cooldownOf(rule)
    const pending: Pending[] = []
    const toResolve: { subjectId: string; prev: EntryState }[] = []
    const subjects = new Set([...bySubject.keys(), ...state.keys()])
    for (const subjectId of subjects) {
      const match = bySubject.get(subjectId)
      const prev = state.get(subjectId)
      const decision = decide(prev, match?.matched === true, now, cooldown)
      if (decision === 'fire' && match) {
        const signal: Signal = {
          id: newSignalId(),
          rule_id: rule.id,
          rule_version: stored.version,
          kind: rule.kind,
          subject: { type: rule.subject, id: subjectId },
          status: 'open',
          fired_at: new Date(now).toISOString(),
          resolved_at: null,
          score: match.score ?? null,
          reasons: match.reasons,
        }
        pending.push(firing(signal, prev?.id))
      } else if (decision === 'resolve' && prev) {
        toResolve.push({ subjectId, prev })
      }
    }
    if (toResolve.length) {
      // A resolved signal carries what was measured as it resolved (why it cleared), not what it
      // fired with (the fired event in the log keeps that). A full run returns matched subjects
      // only, so the ones it resolves are measured again.
      const unmeasured = toResolve.filter((r) => !bySubject.has(r.subjectId)).map((r) => r.subjectId)
      if (unmeasured.length) {
        const [remeasured] = await runRules(this.#store, [rule], { asOf: now, subjectIds: unmeasured, shard: this.#opts.shard, backend })
        for (const m of remeasured ?? []) bySubject.set(m.subjectId, m)
      }
      const open = await signalsById(this.#store, toResolve.map((r) => r.prev.id))
      for (const s of open) {
        if (s.status !== 'open') continue
        const m = bySubject.get(s.subject.id)
        pending.push(resolution(s, now, m && { score: m.score ?? null, reasons: m.reasons }))
      }
    }
    return claim(this.#store, pending, now, this.#opts.claims ?? 'batch', this.#log)
  }
}

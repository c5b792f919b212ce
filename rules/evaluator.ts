import type { Logger } from 'pino'
import { ulid } from 'ulid'
import { type EventRow } from '../ingest/normalize.js'
import { chTime, msFromCh } from '../src/time.js'
import { newSignalId, recordSignalEvents, type Signal, type SignalBus, type SignalEventType } from '../src/signals.js'
import { latestSignals, openSignalsOfOtherRules, signalStatuses, signalsById } from '../src/signals/queries.js'
import type { Shard } from '../src/store/shard.js'
import { sha256Hex } from '../src/hash.js'
import type { Store } from '../src/store/store.js'
import { idChunks } from '../src/store/ids.js'
import { fusable } from './compile.js'
import { runRules, type RuleMatch } from './run.js'
import { loadScopes, type ScopePart } from './scope.js'
import { IDENTITY_CHANGE, ruleEvents, touches } from './relevance.js'
import { parseDuration, type Rule } from './schema.js'
import { listRules, SerialQueue, type StoredRule } from './store.js'

// ---------------------------------------------------------------------------------------------
// The entry/resolve/cooldown state machine, shared by the evaluator and the backtest so that a
// backtest answers exactly what a loop of evaluations at the same moments would have done.

/** What the store knows of a rule+subject: its latest signal. */
export type EntryState = { id: string; status: 'open' | 'resolved'; firedAt: number }

export type Decision = 'fire' | 'resolve' | null

/**
 * A signal fires when the subject matches and has no open signal, unless the previous fire of the
 * same rule+subject is less than `cooldownMs` ago; it resolves when the subject no longer matches.
 * A subject that re-enters during the cooldown fires once the cooldown has passed, if it still
 * matches then ("at most once per cooldown").
 */
export function decide(prev: EntryState | undefined, matched: boolean, now: number, cooldownMs: number): Decision {
  if (matched) {
    if (prev?.status === 'open') return null
    if (prev && now - prev.firedAt < cooldownMs) return null
    return 'fire'
  }
  return prev?.status === 'open' ? 'resolve' : null
}

export const cooldownOf = (rule: Rule): number => (rule.cooldown ? parseDuration(rule.cooldown) : 0)

// ---------------------------------------------------------------------------------------------

export type Subjects = { account: string[]; user: string[] }
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
  /**
   * How fires and resolves are claimed (see {@link claim}): `batch` (default) writes all the
   * claims of one rule evaluation in one insert and lets the first row per key win (insertion
   * order, exact on a single-node MergeTree); `per-key` inserts each claim alone under its key as
   * deduplication token (Replicated tables in cluster mode, where insertion order is not global).
   */
  claims?: ClaimMode
}

export type ClaimMode = 'batch' | 'per-key'

/** A claim older than this whose signal was never recorded belongs to an owner that died. */
const ORPHAN_MS = 60_000
// Claims are one insert each (the deduplication token is per insert); a server takes them in parallel.
const CLAIM_CONCURRENCY = 16
const MAX_INCREMENTAL_SUBJECTS = 5_000

type Change = { type: SignalEventType; signal: Signal }
/** A rule's matches and entry states, found for its whole group (Evaluator #queryTogether). */
type Known = { matches: RuleMatch[]; states: Map<string, EntryState> }
/** A rule an evaluation runs, and its subjects (undefined: all of them). */
type Wanted = { stored: StoredRule; ids: string[] | undefined }
type Pending = { key: string; change: Change; owner?: string }

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
  #interval: ReturnType<typeof setTimeout> | undefined
  #debounce: ReturnType<typeof setTimeout> | undefined
  #touched = emptyTouched()
  #stopped = false
  #background: Promise<unknown> = Promise.resolve()
  /** The loop that evaluates touched subjects, while it runs. */
  #draining: Promise<void> | undefined

  constructor(store: Store, bus: SignalBus | undefined, opts: EvaluatorOptions = {}) {
    this.#store = store
    this.#bus = bus
    this.#now = opts.now ?? Date.now
    this.#log = opts.logger
    this.#opts = opts
  }

  /** Start the periodic full evaluation (if an interval is set). */
  start(): this {
    this.#stopped = false
    this.#scheduleInterval()
    return this
  }

  /** Stop the timers, and wait for the evaluation under way (pending touches are dropped: the next full evaluation covers them). */
  async stop(): Promise<void> {
    this.#stopped = true
    clearTimeout(this.#interval)
    clearTimeout(this.#debounce)
    this.#interval = this.#debounce = undefined
    await this.#background
    await this.#draining
    await this.#queue.run(async () => undefined)
  }

  /** Run every enabled rule now: for all subjects, or only the given ones (incremental). */
  evaluate(opts: EvaluateOptions = {}): Promise<EvaluationResult> {
    return this.#queue.run(() => this.#evaluate(opts))
  }

  /**
   * Hook for the ingestion writer: remember the subjects these stored events touch, and what
   * touched them (event names; identify / group / alias as IDENTITY_CHANGE). They are evaluated
   * EVAL_DEBOUNCE_MS after the first touch; while an evaluation runs, new touches gather and are
   * evaluated as soon as it ends, so under steady load evaluations run back to back (one every
   * debounce period at most) and an event waits for at most the one under way.
   */
  touch(events: readonly EventRow[]): void {
    if (this.#stopped) return
    for (const e of events) {
      const what = e.type === 'track' || e.type === 'page' || e.type === 'screen' ? e.event : IDENTITY_CHANGE
      if (e.account_id) addTouch(this.#touched.account, e.account_id, what)
      if (e.user_id) addTouch(this.#touched.user, e.user_id, what)
      else if (e.anonymous_id) addTouch(this.#touched.anonymous, e.anonymous_id, what)
    }
    this.#scheduleTouched()
  }

  #scheduleTouched() {
    const delayMs = this.#opts.debounceMs
    if (delayMs === undefined || this.#debounce || this.#draining || this.#stopped || isEmpty(this.#touched)) return
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined
      this.#draining = this.#drainTouched()
        .catch((err) => this.#log?.error({ err }, 'incremental evaluation failed'))
        .finally(() => {
          this.#draining = undefined
          // Touches that arrived as the loop ended.
          this.#scheduleTouched()
        })
    }, delayMs)
    this.#debounce.unref?.()
  }

  async #drainTouched() {
    const spacing = this.#opts.debounceMs ?? 0
    while (!this.#stopped && !isEmpty(this.#touched)) {
      const started = performance.now()
      await this.#runTouched()
      // Runs start at least a debounce period apart, so a trickle of events is still batched.
      const rest = spacing - (performance.now() - started)
      if (rest > 0 && !isEmpty(this.#touched)) await new Promise((r) => setTimeout(r, rest).unref?.())
    }
  }

  #scheduleInterval() {
    const ms = this.#opts.intervalMs ?? 0
    if (!ms || this.#stopped) return
    this.#interval = setTimeout(() => {
      this.#background = this.evaluate()
        .then((r) => {
          if (r.fired.length || r.resolved.length) this.#log?.info({ fired: r.fired.length, resolved: r.resolved.length }, 'evaluation')
        })
        .catch((err) => this.#log?.error({ err }, 'evaluation failed'))
        .finally(() => this.#scheduleInterval())
    }, ms)
    this.#interval.unref?.()
  }

  async #runTouched() {
    const touched = this.#touched
    this.#touched = emptyTouched()
    const t0 = performance.now()
    const by = await this.#expandTouched(touched)
    const subjects = { account: [...by.account.keys()], user: [...by.user.keys()] }
    const n = subjects.account.length + subjects.user.length
    this.#log?.debug({ ms: Math.round(performance.now() - t0), accounts: subjects.account.length, users: subjects.user.length }, 'touched subjects expanded')
    if (n === 0) return
    const started = performance.now()
    // Past this many subjects a full run is cheaper than shipping the id lists.
    const r = await this.evaluate(n > MAX_INCREMENTAL_SUBJECTS ? {} : { subjects, touchedBy: by })
    const ms = Math.round(performance.now() - started)
    if (r.fired.length || r.resolved.length) {
      this.#log?.info({ fired: r.fired.length, resolved: r.resolved.length, subjects: n, ms }, 'incremental evaluation')
    } else {
      this.#log?.debug({ subjects: n, ms }, 'incremental evaluation')
    }
  }

  /**
   * Anonymous ids and aliased user ids → the users they were joined to (two hops, as the rules
   * follow them: anonymous → id → alias); users → their accounts. What touched an id touches
   * the subjects it leads to.
   */
  async #expandTouched(t: Touched): Promise<TouchedBy> {
    const users = new Map<string, Set<string>>()
    for (const [id, what] of t.user) users.set(id, new Set(what))
    const accounts = new Map<string, Set<string>>()
    for (const [id, what] of t.account) accounts.set(id, new Set(what))
    let frontier = new Map([...t.anonymous, ...t.user])
    for (let hop = 0; hop < 2 && frontier.size; hop++) {
      const next = new Map<string, Set<string>>()
      for (const ids of chunks([...frontier.keys()])) {
        const rows = await this.#store.query<{ previous_id: string; user_id: string }>(
          'SELECT DISTINCT previous_id, user_id FROM identities_v1 WHERE previous_id IN {ids:Array(String)}',
          { ids },
        )
        for (const r of rows) {
          const what = frontier.get(r.previous_id) as Set<string>
          const fresh = !users.has(r.user_id) || next.has(r.user_id)
          for (const w of what) {
            addTouch(users, r.user_id, w)
            if (fresh) addTouch(next, r.user_id, w)
          }
        }
      }
      frontier = next
    }
    for (const ids of chunks([...users.keys()])) {
      const rows = await this.#store.query<{ user_id: string; account_id: string }>(
        'SELECT DISTINCT user_id, account_id FROM memberships_v1 WHERE user_id IN {ids:Array(String)}',
        { ids },
      )
      for (const r of rows) for (const w of users.get(r.user_id) as Set<string>) addTouch(accounts, r.account_id, w)
    }
    return { account: accounts, user: users }
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
    // An incremental run finds what to read for each subject type once (rules/scope.ts), for
    // every subject any rule of that type will evaluate, and shares it between those rules.
    const wanted = rules.map((stored) => ({ stored, ids: relevantSubjects(stored.rule, opts) }))
    const scopes = new Map<Rule['subject'], Promise<ScopePart[]>>()
    const scopeOf = (type: Rule['subject']) => {
      let parts = scopes.get(type)
      if (!parts) {
        const ids = new Set(wanted.flatMap((w) => (w.stored.rule.subject === type ? (w.ids ?? []) : [])))
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
      const group = groups.find((g) => fusable((g[0] as Wanted).stored.rule, w.stored.rule))
      if (group) group.push(w)
      else groups.push([w])
    }
    for (const group of groups) {
      const together = group.length > 1 ? await this.#queryTogether(group, scopeOf, now) : undefined
      lap('query')
      for (const { stored, ids } of group) {
        await record(stored.id, async () => this.#evaluateRule(stored, ids, ids && (await scopeOf(stored.rule.subject)), now, lap, together?.get(stored.id)))
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
    const pending = open.map((s) => ({
      key: `resolve|${s.id}`,
      change: { type: 'signal.resolved' as const, signal: { ...s, status: 'resolved' as const, resolved_at: new Date(now).toISOString() } },
    }))
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
      const matches = await this.#findMatches(group, union && (await scopeOf(type)), now)
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
   * runRule would return them: a full run, or with `parts` (an incremental run) each rule's own
   * subjects, found with one query per scope part for the union of the group's subjects.
   */
  async #findMatches(group: Wanted[], parts: ScopePart[] | undefined, now: number): Promise<RuleMatch[][]> {
    const opts = { asOf: now, shard: this.#opts.shard }
    const rules = group.map((w) => w.stored.rule)
    if (!parts) return runRules(this.#store, rules, opts)
    const union = new Set(group.flatMap((w) => w.ids ?? []))
    const mine = group.map((w) => new Set(w.ids))
    let matches: RuleMatch[][] = group.map(() => [])
    for (const part of parts) {
      const subjectIds = part.ids.filter((id) => union.has(id))
      if (!subjectIds.length) continue
      const results = await runRules(this.#store, rules, { ...opts, subjectIds, scope: part.scope })
      matches = matches.map((acc, k) => acc.concat((results[k] ?? []).filter((m) => mine[k]?.has(m.subjectId))))
    }
    return matches
  }

  /**
   * `ids` and `parts`: an incremental run (the rule's subjects, and the scopes covering them).
   * `known`: the rule's matches and entry states, already found by #queryTogether.
   */
  async #evaluateRule(
    stored: StoredRule,
    ids: string[] | undefined,
    parts: ScopePart[] | undefined,
    now: number,
    lap?: (phase: string) => void,
    known?: Known,
  ): Promise<Change[]> {
    const { rule } = stored
    const matches = known?.matches ?? (await this.#findMatches([{ stored, ids }], ids && parts, now))[0] ?? []
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
        // The entry after the previous signal: the same for everyone who sees the same history.
        pending.push({ key: `fire|${rule.id}|${rule.subject}|${subjectId}|${prev?.id ?? ''}`, change: { type: 'signal.fired', signal } })
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
        const [remeasured] = await runRules(this.#store, [rule], { asOf: now, subjectIds: unmeasured, shard: this.#opts.shard })
        for (const m of remeasured ?? []) bySubject.set(m.subjectId, m)
      }
      const open = await signalsById(this.#store, toResolve.map((r) => r.prev.id))
      for (const s of open) {
        if (s.status !== 'open') continue
        const m = bySubject.get(s.subject.id)
        const measured = m ? { score: m.score ?? null, reasons: m.reasons } : {}
        const signal: Signal = { ...s, ...measured, status: 'resolved', resolved_at: new Date(now).toISOString() }
        pending.push({ key: `resolve|${s.id}`, change: { type: 'signal.resolved', signal } })
      }
    }
    return claim(this.#store, pending, now, this.#opts.claims ?? 'batch', this.#log)
  }
}

// ---------------------------------------------------------------------------------------------
// Touched subjects

/** What touched each id since the last incremental run: activity event names, or IDENTITY_CHANGE. */
type Touched = { account: Map<string, Set<string>>; user: Map<string, Set<string>>; anonymous: Map<string, Set<string>> }
/** The same for the subjects they lead to. */
export type TouchedBy = { account: Map<string, Set<string>>; user: Map<string, Set<string>> }

export type EvaluateOptions = {
  /** Only these subjects (an incremental run); absent = every subject. */
  subjects?: Subjects
  /** With `subjects`: what touched each of them; a rule then runs only for the subjects touched by what it reads. */
  touchedBy?: TouchedBy
  ruleIds?: string[]
}

const emptyTouched = (): Touched => ({ account: new Map(), user: new Map(), anonymous: new Map() })
const isEmpty = (t: Touched) => t.account.size === 0 && t.user.size === 0 && t.anonymous.size === 0

function addTouch(map: Map<string, Set<string>>, id: string, what: string) {
  const set = map.get(id)
  if (set) set.add(what)
  else map.set(id, new Set([what]))
}

/** The subjects a rule runs for: all (undefined), the given ones, or those of them touched by what it reads. */
function relevantSubjects(rule: Rule, opts: EvaluateOptions): string[] | undefined {
  const ids = opts.subjects?.[rule.subject]
  const by = opts.touchedBy?.[rule.subject]
  if (!ids || !by) return ids
  const wanted = ruleEvents(rule)
  return ids.filter((id) => {
    const what = by.get(id)
    return what === undefined || touches(what, wanted)
  })
}

/** Plan traits change only by identify / group: an incremental run syncs the subjects those touched. */
function traitSubjects(opts: EvaluateOptions): Subjects | undefined {
  const { subjects, touchedBy } = opts
  if (!subjects || !touchedBy) return subjects
  const changed = (type: 'account' | 'user') => subjects[type].filter((id) => touchedBy[type].get(id)?.has(IDENTITY_CHANGE) ?? true)
  return { account: changed('account'), user: changed('user') }
}

// ---------------------------------------------------------------------------------------------
// Store queries

const chunks = idChunks

/** Rule id → subject id → its latest signal, for some rules (one query) and all or some subjects. */
export async function loadEntryStates(
  store: Store,
  ruleIds: string[],
  subjectType: string,
  ids: string[] | undefined,
  shard?: Shard,
): Promise<Map<string, Map<string, EntryState>>> {
  const out = new Map(ruleIds.map((id) => [id, new Map<string, EntryState>()]))
  for (const l of await latestSignals(store, ruleIds, subjectType, ids, shard)) {
    out.get(l.ruleId)?.set(l.subjectId, { id: l.id, status: l.status, firedAt: l.firedAt })
  }
  return out
}

type ClaimRow = { claim_key: string; owner: string; signal_id: string; signal: string; claimed_at: string }

/**
 * Claim each change under its key and return the changes this caller owns; the other claimants
 * of a key read the same owner back and stand down. A claim whose owner died before recording its
 * signal (older than ORPHAN_MS, signal not stored) is completed here.
 *
 * `per-key`: one insert per claim with the key as deduplication token: ClickHouse drops a second
 * block with the same token atomically, so a key has a single row.
 *
 * `batch`: one insert for all the claims of an evaluation (one owner per attempt). Two claimants
 * whose batches overlap both store a row for the shared keys; the owner of a key is the claimant
 * whose row was stored FIRST. On a single-node MergeTree, an insert takes its block number and
 * becomes visible in one step under the table's parts lock (the same step that makes the
 * deduplication token atomic), so readers always see a prefix of the blocks in block order, and
 * a merge keeps equal keys in block order (ties go to the older part). Whoever reads its own row
 * first for a key therefore owns it for good: any later row sorts after it, and its claimant sees
 * both and stands down. Identical batches (same keys) are deduplicated by a token of their keys.
 * Cost: one insert and one read per evaluation instead of one insert per fire.
 */
async function claim(store: Store, pending: Pending[], now: number, mode: ClaimMode, log?: Logger): Promise<Change[]> {
  if (pending.length === 0) return []
  const keys = pending.map((p) => p.key)
  const existing = await readClaims(store, keys, mode)
  let fresh: Pending[]
  if (mode === 'batch') {
    const owner = ulid()
    fresh = pending.filter((p) => !existing.has(p.key)).map((p) => ({ ...p, owner }))
    fresh.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    if (fresh.length) {
      const token = `claims|${sha256Hex(fresh.map((p) => p.key).join('\n'))}`
      await store.insert('signal_claims_v1', fresh.map((p) => claimRow(p, now)), { insert_deduplication_token: token })
    }
  } else {
    fresh = pending.filter((p) => !existing.has(p.key)).map((p) => ({ ...p, owner: ulid() }))
    for (let i = 0; i < fresh.length; i += CLAIM_CONCURRENCY) {
      await Promise.all(
        fresh.slice(i, i + CLAIM_CONCURRENCY).map((p) => store.insert('signal_claims_v1', [claimRow(p, now)], { insert_deduplication_token: p.key })),
      )
    }
  }
  const owners = fresh.length ? await readClaims(store, fresh.map((p) => p.key), mode) : new Map<string, ClaimRow>()
  const mine = fresh.filter((p) => owners.get(p.key)?.owner === p.owner).map((p) => p.change)

  // Orphans: claimed long ago by someone who never recorded the signal.
  const stale = [...existing.values()].filter((c) => now - msFromCh(c.claimed_at) > ORPHAN_MS)
  if (stale.length) {
    const recorded = await signalStatuses(store, stale.map((c) => c.signal_id))
    for (const c of stale) {
      const change = JSON.parse(c.signal) as Change
      const wanted = change.type === 'signal.fired' ? 'open' : 'resolved'
      if (recorded.has(`${c.signal_id}|${wanted}`)) continue
      // A fired signal that was since resolved is recorded too; only a never-recorded one is adopted.
      if (change.type === 'signal.fired' && recorded.has(`${c.signal_id}|resolved`)) continue
      log?.warn({ claim: c.claim_key }, 'completing a signal claimed by an evaluator that stopped before recording it')
      mine.push(change)
    }
  }
  return mine
}

const claimRow = (p: Pending, now: number) => ({
  claim_key: p.key,
  owner: p.owner,
  signal_id: p.change.signal.id,
  signal: JSON.stringify(p.change),
  claimed_at: chTime(now),
})

/**
 * The claim that owns each key. `batch`: the first row stored (lowest block number, then position
 * in the part; see {@link claim}); `per-key`: the only row.
 */
async function readClaims(store: Store, keys: string[], mode: ClaimMode): Promise<Map<string, ClaimRow>> {
  const out = new Map<string, ClaimRow>()
  const sql =
    mode === 'batch'
      ? `SELECT claim_key, argMin(owner, pos) AS owner, argMin(signal_id, pos) AS signal_id, argMin(signal, pos) AS signal,
                argMin(claimed_at, pos) AS claimed_at
         FROM (SELECT claim_key, owner, signal_id, signal, claimed_at,
                      (toUInt64(splitByChar('_', _part)[2]), _part_offset) AS pos
               FROM signal_claims_v1 WHERE claim_key IN {keys:Array(String)})
         GROUP BY claim_key`
      : 'SELECT claim_key, owner, signal_id, signal, claimed_at FROM signal_claims_v1 WHERE claim_key IN {keys:Array(String)}'
  for (const part of chunks(keys)) {
    const rows = await store.query<ClaimRow>(sql, { keys: part })
    for (const r of rows) if (!out.has(r.claim_key)) out.set(r.claim_key, r)
  }
  return out
}

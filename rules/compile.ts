/**
 * Rule → ClickHouse SQL. One rule compiles to one SELECT whose rows are
 * `{subject_id, matched: 0|1, score: number|null, figures: string}`, and to the templates of its
 * reasons (Reason from src/signals.ts without the figures). `figures` is a JSON array holding, for
 * each reason in turn, its measured value, whether it passed, then its detail values; rules/run.ts
 * fills the templates with them. (The constant text of the reasons stays out of the rows: a full
 * run of the MQL rule shipped 13.5 MB of it for 10,927 subjects.) Every value and every
 * event/property/trait name is a bound `{pN:Type}` parameter (rules/compile/sql.ts); the SQL text
 * holds only what this file writes.
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
 * - Accounts see the events carrying their account id (group id, `context.groupId`) and the
 *   events of their members (memberships_v1) that carry none. Users see their own events and the
 *   anonymous (or aliased) history linked to them in identities_v1, up to two hops
 *   (anonymous → first user id → aliased id). Anonymous ids never linked to a user are not users.
 *
 * How the query is shaped (why it is fast): events are first aggregated by their raw identity
 * (account id, user id, anonymous id) — the prefix of events_v1's sorting key — with one partial
 * aggregate per condition; only those few rows are then resolved to users (identity links) and
 * attributed to accounts (memberships), merged per (subject, user), then per subject. No join
 * ever runs per event. Whole days inside a window are read from the daily rollup
 * activity_daily_v1 (migrations 005-006) and only the partial days at the window's edges from
 * events_v1, so a 90-day window costs about as much as its number of distinct identity-days.
 * Conditions that need the raw event (property filters, numeric properties, decay) read
 * events_v1 for their whole window. An incremental run (`subjectIds`) gets its `scope` from
 * rules/scope.ts: the raw ids to read and their resolution, bound as parameters (the whole
 * identities_v1 is resolved only by full runs), and whether the rollup pays for so few subjects.
 * Distinct messages are counted by events_v1.message_key (migration 016).
 */
import type { Reason } from '../src/signals.js'
import type { Scope } from './scope.js'
import { type Params as P, Params, describeSelector, documentPredicate, fmt, startOfDay, valuePredicate } from './compile/sql.js'
import { type Condition, type MetricCondition, type PropertyFilter, parseDuration, type Rule, type ScoreItem, type TraitFilter } from './schema.js'

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
}

/** A reason without its figures; `detail` names the detail values that follow them. */
export type ReasonTemplate = Omit<Reason, 'measured' | 'passed' | 'detail'> & { detail: string[] }
/** `reasons[k]`: the templates of the k-th rule's reasons, in the order of its figures. */
export type CompiledRule = { sql: string; params: Record<string, unknown>; reasons: ReasonTemplate[][] }

const DAY = 86_400_000
const DEFAULT_WINDOW = { days_since_last_seen: '365d', seat_usage: '30d', champion_quiet: '90d', score: '90d' } as const
const SYM = { gt: '>', gte: '>=', lt: '<', lte: '<=', eq: '=', neq: '!=' } as const
const TIME = "Nullable(DateTime64(3, 'UTC'))"

type Selector = { event?: string | string[]; where?: PropertyFilter[] }

/**
 * A partial aggregate computed per raw identity, then merged per (subject, user):
 * `sum` (counts), `max`/`min` (timestamps, values), `days` (sets of active days).
 */
type Kind = 'sum' | 'max' | 'min' | 'days'
type Part = { alias: string; kind: Kind; type: string; raw: string; roll?: string }
const MERGE: Record<Kind, (x: string) => string> = {
  sum: (x) => `sum(${x})`,
  max: (x) => `max(${x})`,
  min: (x) => `min(${x})`,
  days: (x) => `groupUniqArrayArray(${x})`,
}
const neutral = (p: Part) => (p.kind === 'sum' ? 'toFloat64(0)' : p.kind === 'days' ? 'CAST([] AS Array(Date))' : `CAST(NULL AS ${p.type})`)

type Leaf = {
  /** SQL of the measured value, over the final SELECT's columns. */
  measured: string
  /** SQL of "the condition holds". */
  pass: string
  reason: Omit<Reason, 'measured' | 'passed' | 'detail'>
  /** `measured` is JSON text already (a trait value) rather than a number. */
  measuredIsJson?: boolean
  /** Extra figures for the reason: key, SQL, how to render it. */
  detail?: [string, string, 'num' | 'str' | 'json'][]
  /** Evaluated but not reported on its own (conditions inside a score item). */
  hidden?: boolean
}

/**
 * The earliest moment some condition must read events_v1 for (property filters, numeric
 * properties, decayed score items): windows inside it gain nothing from the rollup.
 */
function rawFloor(rule: Rule, asOf: number): number {
  let floor = Number.POSITIVE_INFINITY
  const span = (c: MetricCondition) => {
    const w = c.window ? parseDuration(c.window) : parseDuration(DEFAULT_WINDOW[c.metric as keyof typeof DEFAULT_WINDOW] ?? '90d')
    return c.baseline ? Math.max(w, (c.baseline.offset ? parseDuration(c.baseline.offset) : w) + parseDuration(c.baseline.window)) : w
  }
  const walk = (c: Condition) => {
    if ('all' in c) c.all.forEach(walk)
    else if ('any' in c) c.any.forEach(walk)
    else if ('metric' in c && (c.where?.length || ['sum', 'avg', 'max', 'min'].includes(c.metric))) floor = Math.min(floor, asOf - span(c))
  }
  if (rule.when) walk(rule.when)
  for (const item of rule.score?.items ?? []) {
    if ('when' in item) walk(item.when)
    else if ('event' in item) floor = Math.min(floor, asOf - parseDuration(rule.score?.window ?? DEFAULT_WINDOW.score))
  }
  return floor
}

/** Reason.threshold takes scalars or lists of strings and numbers. */
const thresholdOf = (v: unknown): Reason['threshold'] =>
  v === undefined ? null : Array.isArray(v) ? v.map((x) => (typeof x === 'boolean' ? String(x) : (x as string | number))) : (v as Reason['threshold'])

class Compiler {
  readonly p: P = new Params()
  /** The rule being compiled (several rules of one subject type can share one query). */
  rule: Rule
  readonly account: boolean
  readonly useRollups: boolean
  readonly parts: Part[] = []
  /** Per-subject aggregates over `su`: alias → SQL. */
  readonly finals: [string, string][] = []
  readonly leaves: Leaf[] = []
  /** Trait key → column alias in `tr`. */
  readonly traits = new Map<string, string>()
  /** Extra CTEs and joins (champions). */
  readonly ctes: [string, string][] = []
  readonly aggJoins: string[] = []
  readonly finalJoins: string[] = []
  /** What the raw scan and the rollup scan must cover. */
  rawFrom = Number.POSITIVE_INFINITY
  readonly rawRanges: string[] = []
  rollFrom = Number.POSITIVE_INFINITY
  rollTo = Number.NEGATIVE_INFINITY
  /** Event names each scan needs (null: every activity event), to filter rows before aggregating. */
  rawEvents: Set<string> | null = new Set()
  rollEvents: Set<string> | null = new Set()
  /** events_v1 is read from here on anyway (raw-only conditions), so the rollup saves nothing after it. */
  readonly rawFloor: number
  #n = 0

  constructor(
    rules: Rule[],
    readonly opts: CompileOptions,
  ) {
    this.rule = rules[0] as Rule
    this.account = this.rule.subject === 'account'
    this.useRollups = opts.rollups ?? (opts.subjectIds && opts.scope ? opts.scope.rollups : true)
    this.rawFloor = Math.min(...rules.map((r) => rawFloor(r, opts.asOf)))
  }

  get asOf() {
    return this.opts.asOf
  }

  traitCol(key: string): string {
    let col = this.traits.get(key)
    if (!col) {
      col = `t${this.traits.size}`
      this.traits.set(key, col)
    }
    return `tr.${col}`
  }

  /**
   * Where a window (from, to] is read: whole days from the rollup when the selector allows it
   * (no property filter), the partial days at both edges — or the whole window — from events_v1.
   */
  plan(sel: Selector, from: number, to: number, rawOnly = false): { raw: string; roll?: string } {
    const firstWhole = startOfDay(from) + DAY
    const lastWhole = startOfDay(to)
    const p = this.p
    this.rawFrom = Math.min(this.rawFrom, from)
    const rawSel = this.selectorRaw(sel)
    const need = (set: Set<string> | null) => (sel.event === undefined || set === null ? null : new Set([...set, ...[sel.event].flat()]))
    this.rawEvents = need(this.rawEvents)
    if (!rawOnly && this.useRollups && !sel.where?.length && firstWhole < lastWhole && from < this.rawFloor) {
      this.rollEvents = need(this.rollEvents)
      const edges = `((timestamp > ${p.time(from)} AND timestamp < ${p.time(firstWhole)}) OR (timestamp >= ${p.time(lastWhole)} AND timestamp <= ${p.time(to)}))`
      this.rawRanges.push(edges)
      this.rollFrom = Math.min(this.rollFrom, firstWhole)
      this.rollTo = Math.max(this.rollTo, lastWhole)
      const days = `day >= ${p.date(firstWhole)} AND day < ${p.date(lastWhole)}`
      return { raw: [edges, ...rawSel].join(' AND '), roll: [days, ...this.selectorEvent(sel)].join(' AND ') }
    }
    const range = `timestamp > ${p.time(from)}${to === this.asOf ? '' : ` AND timestamp <= ${p.time(to)}`}`
    this.rawRanges.push(`(${range})`)
    return { raw: [range, ...rawSel].join(' AND ') }
  }

  selectorEvent(sel: Selector): string[] {
    if (typeof sel.event === 'string') return [`event = ${this.p.str(sel.event)}`]
    if (sel.event) return [`event IN ${this.p.bind(sel.event, 'Array(String)')}`]
    return []
  }

  selectorRaw(sel: Selector): string[] {
    return [
      ...this.selectorEvent(sel),
      ...(sel.where ?? []).map((f) => documentPredicate(this.p, 'properties', f.property, f)),
    ]
  }

  part(kind: Kind, type: string, raw: string, roll?: string): string {
    const alias = `x${this.parts.length}`
    // Both sides of the raw/rollup union must have the same type.
    const cast = (sql: string) => (kind === 'sum' && !sql.startsWith('toFloat64(') ? `toFloat64(${sql})` : sql)
    this.parts.push({ alias, kind, type, raw: cast(raw), roll: roll && cast(roll) })
    return alias
  }

  final(sql: string): string {
    const alias = `f${this.finals.length}`
    this.finals.push([alias, sql])
    return `agg.${alias}`
  }

  /** Distinct messages matching the selector in (from, to], per (subject, user). */
  count(sel: Selector, from: number, to: number): string {
    const w = this.plan(sel, from, to)
    return this.part(
      'sum',
      'Float64',
      `toFloat64(uniqExactIf(message_key, ${w.raw}))`,
      // The rollup is read FINAL: a message stored twice is one element of one row's state, so
      // summing each row's count is exact without merging the states of a whole window.
      w.roll && `toFloat64(sumIf(finalizeAggregation(messages), ${w.roll}))`,
    )
  }

  /** Non-zero when the user has matching activity in (from, to] (cheaper than counting). */
  presence(sel: Selector, from: number, to: number): string {
    const w = this.plan(sel, from, to)
    return this.part('sum', 'Float64', `toFloat64(countIf(${w.raw}))`, w.roll && `toFloat64(countIf(${w.roll}))`)
  }

  days(sel: Selector, from: number, to: number): string {
    const w = this.plan(sel, from, to)
    return this.part('days', 'Array(Date)', `groupUniqArrayIf(toDate(timestamp), ${w.raw})`, w.roll && `groupUniqArrayIf(day, ${w.roll})`)
  }

  lastSeen(sel: Selector, from: number, to: number): string {
    const w = this.plan(sel, from, to)
    return this.part('max', TIME, `maxOrNullIf(timestamp, ${w.raw})`, w.roll && `maxOrNullIf(last_seen, ${w.roll})`)
  }

  /** A numeric property's JSON value as Float64 (numbers or numeric strings), NULL otherwise. */
  property(name: string): string {
    return `JSONExtract(JSONExtractRaw(properties, ${this.p.str(name)}), 'Nullable(Float64)')`
  }

  traitLeaf(f: TraitFilter): Leaf {
    const col = this.traitCol(f.trait)
    return {
      measured: `if(${col} = '', 'null', ${col})`,
      measuredIsJson: true,
      pass: valuePredicate(this.p, col, f),
      reason: {
        condition: `trait ${f.trait} ${f.op}${f.value === undefined ? '' : ` ${fmt(f.value)}`}`,
        metric: 'trait',
        op: f.op,
        threshold: thresholdOf(f.value),
      },
    }
  }

  /** A metric's value over (from, to]: as is, or per day (for baseline comparisons). */
  metricValue(c: MetricCondition, from: number, to: number, perDay: boolean): string {
    const norm = (sql: string) => (perDay ? `(${sql} / ${this.p.num((to - from) / DAY)})` : sql)
    switch (c.metric) {
      case 'count':
        return norm(this.final(`sum(${this.count(c, from, to)})`))
      case 'active_users':
        // Per day: mean daily active users (distinct user-days / days), not distinct users / days.
        return perDay
          ? norm(this.final(`toFloat64(sum(length(${this.days(c, from, to)})))`))
          : this.final(`toFloat64(countIf(${this.presence(c, from, to)} > 0))`)
      case 'active_days':
        return norm(this.final(`toFloat64(length(groupUniqArrayArray(${this.days(c, from, to)})))`))
      case 'sum':
      case 'avg':
      case 'max':
      case 'min': {
        const w = this.plan(c, from, to, true)
        const v = this.property(c.property)
        if (c.metric === 'sum') return norm(this.final(`sum(${this.part('sum', 'Float64', `sumIf(ifNull(${v}, 0), ${w.raw})`)})`))
        if (c.metric === 'avg') {
          const s = this.part('sum', 'Float64', `sumIf(ifNull(${v}, 0), ${w.raw} AND ${v} IS NOT NULL)`)
          const n = this.part('sum', 'Float64', `toFloat64(countIf(${w.raw} AND ${v} IS NOT NULL))`)
          return this.final(`if(sum(${n}) > 0, sum(${s}) / sum(${n}), NULL)`)
        }
        // max / min are intensive already: a baseline compares them as they are.
        const x = this.part(c.metric, 'Nullable(Float64)', `${c.metric}OrNullIf(${v}, ${w.raw} AND ${v} IS NOT NULL)`)
        return this.final(`${c.metric}(${x})`)
      }
      default:
        throw new Error(`${c.metric} has no window value`)
    }
  }

  metricLeaf(c: MetricCondition): Leaf {
    const sel = describeSelector(c)
    const p = this.p
    if (c.op === 'drop_pct_gte' || c.op === 'rise_pct_gte') {
      const base = c.baseline!
      const w = parseDuration(c.window!)
      const offset = base.offset ? parseDuration(base.offset) : w
      const cur = this.metricValue(c, this.asOf - w, this.asOf, true)
      const prev = this.metricValue(c, this.asOf - offset - parseDuration(base.window), this.asOf - offset, true)
      const pct = c.op === 'drop_pct_gte' ? `(${prev} - ${cur}) / ${prev} * 100` : `(${cur} - ${prev}) / ${prev} * 100`
      const measured = `if(${prev} > 0, ${pct}, NULL)`
      const minBase = c.min_baseline !== undefined ? ` AND ${prev} >= ${p.num(c.min_baseline)}` : ''
      return {
        measured,
        pass: `ifNull(${measured} >= ${p.num(c.value)}${minBase}, 0)`,
        reason: {
          condition: `${c.metric}(${sel ? `${sel}, ` : ''}${c.window}) per day ${c.op === 'drop_pct_gte' ? 'dropped' : 'rose'} by >= ${c.value}% against the ${base.window} before the last ${base.offset ?? c.window}${c.min_baseline !== undefined ? ` (baseline >= ${c.min_baseline} per day)` : ''}`,
          metric: c.metric,
          op: c.op,
          threshold: c.value,
        },
        detail: [
          ['current_per_day', cur, 'num'],
          ['baseline_per_day', prev, 'num'],
        ],
      }
    }
    const sym = SYM[c.op as keyof typeof SYM]
    const compare = (m: string) => `ifNull(${m} ${sym} ${p.num(c.value)}, 0)`
    const reason = (condition: string) => ({ condition, metric: c.metric, op: c.op, threshold: c.value })
    switch (c.metric) {
      case 'days_since_last_seen': {
        const lookback = parseDuration(c.window ?? DEFAULT_WINDOW.days_since_last_seen)
        const last = this.final(`max(${this.lastSeen(c, this.asOf - lookback, this.asOf)})`)
        // No activity within the lookback reads as the whole lookback (a lower bound), so a churn
        // rule keeps holding for a subject that stays silent longer than its lookback.
        const measured = `if(${last} IS NULL, ${p.num(lookback / DAY)}, (${p.int(this.asOf)} - toUnixTimestamp64Milli(${last})) / ${DAY})`
        return { measured, pass: compare(measured), reason: reason(`days since last seen${sel ? ` (${sel})` : ''} ${sym} ${c.value}`) }
      }
      case 'seat_usage': {
        const seats = `JSONExtract(${this.traitCol(c.seats_trait ?? 'seats')}, 'Nullable(Float64)')`
        const window = c.window ?? DEFAULT_WINDOW.seat_usage
        const used = c.used_trait
          ? `JSONExtract(${this.traitCol(c.used_trait)}, 'Nullable(Float64)')`
          : this.final(`toFloat64(countIf(${this.presence(c, this.asOf - parseDuration(window), this.asOf)} > 0))`)
        const measured = `if(ifNull(${seats}, 0) > 0, ${used} / ${seats}, NULL)`
        return {
          measured,
          pass: compare(measured),
          reason: reason(
            `seats used (${c.used_trait ? `trait ${c.used_trait}` : `active users${sel ? ` of ${sel}` : ''} over ${window}`}) / trait ${c.seats_trait ?? 'seats'} ${sym} ${c.value}`,
          ),
          detail: [
            ['seats_used', used, 'num'],
            ['seats', seats, 'num'],
          ],
        }
      }
      case 'champion_quiet':
        return this.championLeaf(c)
      default: {
        const w = parseDuration(c.window!)
        const measured = this.metricValue(c, this.asOf - w, this.asOf, false)
        const what = 'property' in c ? `${c.property} of ${sel || 'events'}, ` : sel ? `${sel}, ` : ''
        return { measured, pass: compare(measured), reason: reason(`${c.metric}(${what}${c.window}) ${sym} ${c.value}`) }
      }
    }
  }

  /**
   * The champion: the account's most active user over the window (`top`: most messages, ties to
   * the latest seen), or its members with a trait (the most recently active of them). Measured:
   * days since the champion was last active; a champion silent for the whole window reads as the
   * window. No champion at all (no activity, or no member with the trait): null, not matched.
   */
  championLeaf(c: Extract<MetricCondition, { metric: 'champion_quiet' }>): Leaf {
    const p = this.p
    const window = parseDuration(c.window ?? DEFAULT_WINDOW.champion_quiet)
    const from = this.asOf - window
    const last = this.lastSeen({}, from, this.asOf)
    let champion: string
    let lastSeen: string
    let known: string
    if (c.champion === 'top') {
      const n = this.count(c, from, this.asOf)
      champion = this.final(`argMaxIf(su.user_key, (${n}, ifNull(toUnixTimestamp64Milli(${last}), 0)), ${n} > 0)`)
      lastSeen = this.final(`argMaxIf(${last}, (${n}, ifNull(toUnixTimestamp64Milli(${last}), 0)), ${n} > 0)`)
      known = `${champion} != ''`
    } else {
      const f = c.champion
      const cte = `champ${this.#n++}`
      this.ctes.push([
        cte,
        `SELECT m.account_id AS account_id, m.user_id AS user_id
    FROM (SELECT DISTINCT account_id, user_id FROM memberships_v1) AS m
    INNER JOIN (
      SELECT user_id FROM (
        SELECT user_id, argMax(value, (timestamp, message_id)) AS v FROM user_traits_v1
        WHERE key = ${p.str(f.trait)} AND timestamp <= ${p.time(this.asOf)} GROUP BY user_id)
      WHERE ${valuePredicate(p, 'v', f)}
    ) AS t ON t.user_id = m.user_id`,
      ])
      this.aggJoins.push(`LEFT ANY JOIN (SELECT account_id, user_id, 1 AS is_champion FROM ${cte}) AS ${cte}_j ON ${cte}_j.account_id = su.subject_id AND ${cte}_j.user_id = su.user_key`)
      lastSeen = this.final(`maxIf(${last}, ${cte}_j.is_champion = 1)`)
      const active = this.final(`argMaxIf(su.user_key, ifNull(toUnixTimestamp64Milli(${last}), 0), ${cte}_j.is_champion = 1)`)
      this.finalJoins.push(`LEFT JOIN (SELECT account_id, min(user_id) AS any_champion FROM ${cte} GROUP BY account_id) AS ${cte}_n ON ${cte}_n.account_id = u.subject_id`)
      champion = `if(${active} != '', ${active}, ${cte}_n.any_champion)`
      known = `${cte}_n.any_champion != ''`
    }
    const quiet = `if(${lastSeen} IS NOT NULL, (${p.int(this.asOf)} - toUnixTimestamp64Milli(${lastSeen})) / ${DAY}, ${p.num(window / DAY)})`
    const measured = `if(${known}, ${quiet}, NULL)`
    const sym = SYM[c.op as keyof typeof SYM]
    const sel = describeSelector(c)
    const who =
      c.champion === 'top'
        ? `the most active user${sel ? ` by ${sel}` : ''} over ${c.window ?? DEFAULT_WINDOW.champion_quiet}`
        : `users with trait ${c.champion.trait} ${c.champion.op}${c.champion.value === undefined ? '' : ` ${fmt(c.champion.value)}`}`
    return {
      measured,
      pass: `ifNull(${measured} ${sym} ${p.num(c.value)}, 0)`,
      reason: { condition: `champion (${who}) quiet for ${sym} ${c.value} days`, metric: 'champion_quiet', op: c.op, threshold: c.value },
      detail: [['champion', champion, 'str']],
    }
  }

  /** A condition tree → SQL of "it holds"; each leaf condition becomes one reason. */
  condition(c: Condition): string {
    if ('all' in c) return `(${c.all.map((x) => this.condition(x)).join(' AND ')})`
    if ('any' in c) return `(${c.any.map((x) => this.condition(x)).join(' OR ')})`
    return this.leaf('metric' in c ? this.metricLeaf(c) : this.traitLeaf(c))
  }

  leaf(l: Leaf): string {
    this.leaves.push(l)
    return `p${this.leaves.length - 1}`
  }

  scoreItem(item: ScoreItem, window: number, halfLife: number | undefined): Leaf {
    const p = this.p
    if ('when' in item) {
      const start = this.leaves.length
      const holds = this.condition(item.when)
      const inner = this.leaves.slice(start)
      for (const l of inner) l.hidden = true
      return {
        measured: `if(${holds}, ${p.num(item.points)}, 0)`,
        pass: holds,
        reason: { condition: `${item.points} points when ${inner.map((l) => l.reason.condition).join(' and ')}`, metric: 'points', op: 'points', threshold: item.points },
        detail: inner.length === 1 ? [['measured', `m${start}`, inner[0]?.measuredIsJson ? 'json' : 'num']] : undefined,
      }
    }
    if ('trait' in item) {
      const t = this.traitLeaf(item)
      return {
        measured: `if(${t.pass}, ${p.num(item.points)}, 0)`,
        pass: t.pass,
        reason: { condition: `${item.points} points when ${t.reason.condition}`, metric: 'points', op: 'points', threshold: item.points },
        detail: [['trait_value', t.measured, 'json']],
      }
    }
    // Decay needs each event's time, so event items read events_v1 for their whole window.
    const w = this.plan(item, this.asOf - window, this.asOf, true)
    const weight = halfLife ? `exp2((toUnixTimestamp64Milli(timestamp) - ${p.int(this.asOf)}) / ${p.num(halfLife)})` : '1'
    const n = this.final(`sum(${this.part('sum', 'Float64', `toFloat64(countIf(${w.raw}))`)})`)
    const decayed = this.final(`sum(${this.part('sum', 'Float64', `sumIf(${weight}, ${w.raw})`)})`)
    const points = `${decayed} * ${p.num(item.points)}`
    const measured = item.max !== undefined ? `least(${points}, ${p.num(item.max)})` : points
    return {
      measured,
      pass: `${n} > 0`,
      reason: {
        condition: `${item.points} points per ${describeSelector(item)}${item.max !== undefined ? `, at most ${item.max}` : ''}${halfLife ? `, halving every ${this.rule.score?.half_life}` : ''}`,
        metric: 'points',
        op: 'points',
        threshold: item.max ?? null,
      },
      detail: [['events', n, 'num']],
    }
  }
}

/** A reason's figures as JSON array elements: measured, passed, then the detail values. */
function figuresSql(leaf: Leaf, i: number): string[] {
  const num = (sql: string) => `ifNull(toJSONString(round(${sql}, 4)), 'null')`
  const parts = [leaf.measuredIsJson ? `m${i}` : num(`m${i}`), `if(p${i}, 'true', 'false')`]
  leaf.detail?.forEach(([, , type], j) => {
    const col = `d${i}_${j}`
    parts.push(type === 'json' ? col : type === 'str' ? `toJSONString(toString(${col}))` : num(col))
  })
  return parts
}

const templateOf = (leaf: Leaf): ReasonTemplate => ({ ...leaf.reason, detail: (leaf.detail ?? []).map(([key]) => key) })

const cte = (name: string, sql: string) => `${name} AS (\n  ${sql.trim()}\n)`

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
  const c = new Compiler(rules, opts)
  const p = c.p
  const account = c.account
  const rule = first

  // 1. Leaves, rule by rule: trait filters, then the conditions or the score items.
  const compiled = rules.map((r) => {
    c.rule = r
    const from = c.leaves.length
    const conjuncts = (r.where ?? []).map((f) => c.leaf(c.traitLeaf(f)))
    let score = 'CAST(NULL AS Nullable(Float64))'
    if (r.score) {
      const window = parseDuration(r.score.window ?? DEFAULT_WINDOW.score)
      const halfLife = r.score.half_life ? parseDuration(r.score.half_life) : undefined
      const items = r.score.items.map((item) => c.leaf(c.scoreItem(item, window, halfLife)).replace('p', 'm'))
      score = `round(${items.join(' + ')}, 4)`
      conjuncts.push(
        c.leaf({
          measured: score,
          pass: `${score} >= ${p.num(r.threshold!)}`,
          reason: { condition: `score >= ${r.threshold}`, metric: 'score', op: 'gte', threshold: r.threshold! },
        }),
      )
    } else {
      conjuncts.push(c.condition(r.when!))
    }
    return { conjuncts, score, from, to: c.leaves.length }
  })

  // 2. The subjects in scope.
  const ids = opts.subjectIds
  const idsSql = ids ? p.bind(ids, 'Array(String)') : ''
  const shardOf = (col: string) => (opts.shard ? `cityHash64(${col}) % ${p.bind(opts.shard.count, 'UInt64')} = ${p.bind(opts.shard.index, 'UInt64')}` : '')
  const asOf = p.time(c.asOf)
  const ctes: string[] = []
  ctes.push(
    cte(
      'u0',
      ids
        ? `SELECT DISTINCT arrayJoin(${idsSql}) AS subject_id`
        : account
          ? `SELECT DISTINCT account_id AS subject_id FROM accounts_v1 WHERE account_id != '' AND first_seen <= ${asOf}`
          : `SELECT DISTINCT user_id AS subject_id FROM users_v1 WHERE user_id != '' AND first_seen <= ${asOf}`,
    ),
  )

  // 3. Activity: per raw identity → resolved and attributed → per (subject, user) → per subject.
  if (c.parts.length) {
    const scopeOf = ids ? opts.scope : undefined
    if (ids && !scopeOf) throw new Error('compileRule: subjectIds needs a scope (rules/scope.ts, loadScope)')
    ctes.push(
      cte(
        'links',
        scopeOf
          ? // Incremental: the resolution of the ids this query can meet, found by loadScope.
            `SELECT previous_id, user_id FROM (SELECT ${p.bind(scopeOf.links.from, 'Array(String)')} AS previous_id, ${p.bind(scopeOf.links.to, 'Array(String)')} AS user_id)
  ARRAY JOIN previous_id, user_id`
          : // A previous id (anonymous, or an earlier user id) → the user it became; a second hop
            // follows anonymous → first user id → aliased id. The earliest link of an id wins.
            `SELECT l1.previous_id AS previous_id, if(l2.target != '', l2.target, l1.target) AS user_id
  FROM (SELECT previous_id, argMin(user_id, first_seen) AS target FROM identities_v1 WHERE previous_id != user_id GROUP BY previous_id) AS l1
  LEFT ANY JOIN (SELECT previous_id, argMin(user_id, first_seen) AS target FROM identities_v1 WHERE previous_id != user_id GROUP BY previous_id) AS l2
    ON l2.previous_id = l1.target`,
      ),
    )
    const keyCols = account ? ['account_id', 'user_id', 'anonymous_id'] : ['user_id', 'anonymous_id']
    const keys = keyCols.join(', ')
    const scope: string[] = []
    if (rule.sources) scope.push(`source IN ${p.bind(rule.sources, 'Array(String)')}`)
    if (scopeOf) {
      // Incremental: read only what can belong to the requested subjects. Bound as a constant
      // set, the keys let the sorting key (account_id, user_id, …) prune granules.
      const k = p.bind(scopeOf.keys, 'Array(String)')
      const byKey = `(user_id IN ${k} OR (user_id = '' AND anonymous_id IN ${k}))`
      scope.push(account ? `(account_id IN ${idsSql} OR (account_id = '' AND ${byKey}))` : byKey)
    }
    const rolled = c.parts.some((x) => x.roll)
    const events = (set: Set<string> | null) => (set ? [`event IN ${p.bind([...set].sort(), 'Array(String)')}`] : [])
    const rawWhere = [
      `type IN ('track', 'page', 'screen')`,
      `timestamp > ${p.time(c.rawFrom)}`,
      `timestamp <= ${asOf}`,
      `(${[...new Set(c.rawRanges)].join(' OR ')})`,
      ...events(c.rawEvents),
      ...scope,
    ]
    const raw = `SELECT ${keys},\n    ${c.parts.map((x) => `${x.raw} AS ${x.alias}`).join(',\n    ')}\n  FROM events_v1\n  WHERE ${rawWhere.join('\n    AND ')}\n  GROUP BY ${keys}`
    if (rolled) {
      const rollWhere = [`day >= ${p.date(c.rollFrom)}`, `day < ${p.date(c.rollTo)}`, ...events(c.rollEvents), ...scope]
      const roll = `SELECT ${keys},\n    ${c.parts.map((x) => `${x.roll ?? neutral(x)} AS ${x.alias}`).join(',\n    ')}\n  FROM activity_daily_v1 FINAL\n  WHERE ${rollWhere.join('\n    AND ')}\n  GROUP BY ${keys}`
      // A raw identity may appear once from each side; (subject, user) merging below sums them.
      ctes.push(cte('raw1', raw), cte('roll1', roll), cte('k1', 'SELECT * FROM raw1 UNION ALL SELECT * FROM roll1'))
    } else {
      ctes.push(cte('k1', raw))
    }
    const partCols = c.parts.map((x) => x.alias).join(', ')
    const resolved = `SELECT ${account ? 'k.account_id AS account_id, ' : ''}if(l.user_id != '', l.user_id, if(k.user_id != '', k.user_id, k.anonymous_id)) AS user_key,
      (k.user_id != '' OR l.user_id != '') AS known, ${c.parts.map((x) => `k.${x.alias} AS ${x.alias}`).join(', ')}
    FROM k1 AS k LEFT ANY JOIN links AS l ON l.previous_id = if(k.user_id != '', k.user_id, k.anonymous_id)`
    const subjectFilter = [ids ? `subject_id IN ${idsSql}` : '', shardOf('subject_id')].filter(Boolean)
    ctes.push(
      cte(
        'r1',
        account
          ? // An event with an account id belongs to that account; one without, to its user's accounts.
            `SELECT subject_id, user_key, ${partCols} FROM (
    SELECT r.user_key AS user_key, ${c.parts.map((x) => `r.${x.alias} AS ${x.alias}`).join(', ')}, if(r.account_id != '', [r.account_id], m.accounts) AS accounts
    FROM (${resolved}) AS r
    LEFT ANY JOIN (SELECT user_id, groupUniqArray(account_id) AS accounts FROM memberships_v1${ids ? ` WHERE account_id IN ${idsSql}` : ''} GROUP BY user_id) AS m ON m.user_id = r.user_key
  ) ARRAY JOIN accounts AS subject_id${subjectFilter.length ? `\n  WHERE ${subjectFilter.join(' AND ')}` : ''}`
          : `SELECT user_key AS subject_id, user_key, ${partCols} FROM (${resolved})\n  WHERE known${subjectFilter.map((f) => ` AND ${f}`).join('')}`,
      ),
    )
    ctes.push(cte('su', `SELECT subject_id, user_key, ${c.parts.map((x) => `${MERGE[x.kind](x.alias)} AS ${x.alias}`).join(', ')}\n  FROM r1 GROUP BY subject_id, user_key`))
  }
  ctes.push(...c.ctes.map(([n, s]) => cte(n, s)))
  if (c.finals.length) {
    ctes.push(
      cte(
        'agg',
        `SELECT su.subject_id AS subject_id,\n    ${c.finals.map(([a, s]) => `${s.replace(/\b(x\d+)\b/g, 'su.$1')} AS ${a}`).join(',\n    ')}
  FROM su${c.aggJoins.map((j) => `\n  ${j}`).join('')}
  GROUP BY su.subject_id`,
      ),
    )
  }

  // 4. Current traits (as of asOf), one column per key.
  if (c.traits.size) {
    const [table, idCol] = account ? ['account_traits_v1', 'account_id'] : ['user_traits_v1', 'user_id']
    ctes.push(
      cte(
        'tr',
        `SELECT subject_id, ${[...c.traits].map(([k, col]) => `anyIf(value, key = ${p.str(k)}) AS ${col}`).join(', ')}
  FROM (
    SELECT ${idCol} AS subject_id, key, argMax(value, (timestamp, message_id)) AS value FROM ${table}
    WHERE key IN ${p.bind([...c.traits.keys()], 'Array(String)')} AND timestamp <= ${asOf}${ids ? ` AND ${idCol} IN ${idsSql}` : ''}
    GROUP BY subject_id, key)
  GROUP BY subject_id`,
      ),
    )
  }

  const joins = [
    ...(c.finals.length ? ['LEFT JOIN agg ON agg.subject_id = u.subject_id'] : []),
    ...(c.traits.size ? ['LEFT JOIN tr ON tr.subject_id = u.subject_id'] : []),
    ...c.finalJoins,
  ]
  const cols = c.leaves.flatMap((l, i) => [
    `${l.measured} AS m${i}`,
    `${l.pass} AS p${i}`,
    ...(l.hidden ? [] : (l.detail ?? []).map(([, sql], j) => `${sql} AS d${i}_${j}`)),
  ])
  const shard = shardOf('u.subject_id')
  // One rule: matched / score / figures; several: matched0 / score0 / figures0, matched1, …
  const suffix = (k: number) => (rules.length === 1 ? '' : String(k))
  const reported = compiled.map(({ from, to }) => c.leaves.map((l, i) => [l, i] as const).filter(([l, i]) => !l.hidden && i >= from && i < to))
  const outer = compiled.map((_, k) => {
    const s = suffix(k)
    const json = `concat('[', ${(reported[k] ?? []).flatMap(([l, i]) => figuresSql(l, i)).join(", ',', ")}, ']')`
    // A full run of several rules returns the subjects matching any of them; the others' figures
    // for a subject are not read (runRules keeps each rule's matches only), so not built.
    return `toUInt8(matched_${s}) AS matched${s}, score_${s} AS score${s},\n  ${ids || rules.length === 1 ? json : `if(matched_${s}, ${json}, '[]')`} AS figures${s}`
  })
  const inner = compiled.map(({ conjuncts, score }, k) => `${conjuncts.join(' AND ')} AS matched_${suffix(k)},\n    ${score} AS score_${suffix(k)}`)
  // A full run keeps the matched subjects before their figures are built (most subjects match nothing).
  const keep = [shard, ids ? '' : `(${compiled.map((_, k) => `matched_${suffix(k)}`).join(' OR ')})`].filter(Boolean)
  const sql = `WITH
${ctes.join(',\n')}
SELECT subject_id, ${outer.join(',\n  ')}
FROM (
  SELECT u.subject_id AS subject_id,
    ${cols.join(',\n    ')},
    ${inner.join(',\n    ')}
  FROM u0 AS u${joins.map((j) => `\n  ${j}`).join('')}${keep.length ? `\n  WHERE ${keep.join(' AND ')}` : ''}
)
ORDER BY subject_id
SETTINGS join_use_nulls = 0`
  return { sql, params: p.values, reasons: reported.map((leaves) => leaves.map(([l]) => templateOf(l))) }
}

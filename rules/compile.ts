/**
 * Rule → ClickHouse SQL. One rule compiles to one SELECT whose rows are
 * `{subject_id, matched: 0|1, score: number|null, reasons: string}` (reasons: JSON array of Reason,
 * src/signals.ts). Every value and every event/property/trait name travels as a `{pN:Type}` query
 * parameter; the SQL text holds only identifiers and constants written here.
 *
 * Contract with the evaluator (decided here, relied on by rules/evaluator.ts):
 * - With `subjectIds`: exactly one row per requested subject id, matched or not (a subject with no
 *   data reads as zero activity), so the evaluator can fire and resolve for exactly those subjects.
 * - Without `subjectIds` (a full run): only matched rows (matched = 1). A subject with an open
 *   signal that is absent from a full run's rows has left the condition and is resolved.
 *   A full run considers every subject seen by `asOf` (accounts_v1 / users_v1) in scope.
 * - `shard` keeps subjects with cityHash64(subject_id) % count = index, in both modes.
 * - Windows are half-open on the left: an event counts in a window `w` when
 *   asOf − w < timestamp ≤ asOf. Events after `asOf` never count (backtests see the past only).
 * - Traits are the latest value at or before `asOf` (argMax by timestamp). A missing trait fails
 *   every filter except `exists: false`.
 * - Activity is track / page / screen only; identify, group and alias never count.
 * - Accounts see events carrying their account id (group id, `context.groupId`) and the events of
 *   their members (memberships_v1) that carry no account id. Users see their own events and the
 *   anonymous (or aliased) history linked to them in identities_v1 (two hops: anon → id → alias).
 *   Anonymous ids never linked to a user are not user subjects.
 */
import type { Reason } from '../src/signals.js'
import { type Condition, type MetricCondition, type PropertyFilter, parseDuration, type Rule, type ScoreItem, type TraitFilter } from './schema.js'
import { chTime } from '../ingest/normalize.js'

export type CompileOptions = {
  /** Evaluate as of this moment (epoch ms). */
  asOf: number
  /** Restrict to these subjects (incremental evaluation). */
  subjectIds?: string[]
  /** cityHash64(subject_id) % count = index. */
  shard?: { count: number; index: number }
}

export type CompiledRule = { sql: string; params: Record<string, unknown> }

const DAY = 86_400_000
const ACTIVITY_TYPES = `('track', 'page', 'screen')`
const DEFAULT_LOOKBACK = { days_since_last_seen: '365d', seat_usage: '30d', champion_quiet: '90d', score: '90d' } as const

/** Bound parameters: every value the SQL uses goes through `bind`. */
class Params {
  readonly values: Record<string, unknown> = {}
  #n = 0
  bind(value: unknown, type: string): string {
    const name = `p${this.#n++}`
    this.values[name] = value
    return `{${name}:${type}}`
  }
  str = (v: string) => this.bind(v, 'String')
  num = (v: number) => this.bind(v, 'Float64')
  time = (ms: number) => this.bind(chTime(ms), "DateTime64(3, 'UTC')")
}

const q = (s: string) => JSON.stringify(s)
const fmt = (v: unknown) => (Array.isArray(v) ? `[${v.map((x) => q(String(x))).join(', ')}]` : typeof v === 'string' ? q(v) : String(v))

/** A value's JSON text (`raw`, '' when absent) tested against an operator, in SQL. */
function valuePredicate(p: Params, raw: string, f: { op: PropertyFilter['op']; value?: unknown }): string {
  const present = `(${raw} != '' AND ${raw} != 'null')`
  // Numbers may arrive as JSON numbers or numeric strings ("42"); both compare numerically.
  const num = `JSONExtract(${raw}, 'Nullable(Float64)')`
  const str = `JSONExtractString(${raw})`
  const eq = (v: unknown) =>
    typeof v === 'number' ? `${num} = ${p.num(v)}` : typeof v === 'boolean' ? `${raw} = ${p.str(String(v))}` : `${str} = ${p.str(String(v))}`
  const v = f.value
  switch (f.op) {
    case 'exists':
      return v === false ? `NOT ${present}` : present
    case 'eq':
      return `(${present} AND ${eq(v)})`
    case 'neq':
      return `(${present} AND NOT (${eq(v)}))`
    case 'gt':
    case 'gte':
    case 'lt':
    case 'lte': {
      const sym = { gt: '>', gte: '>=', lt: '<', lte: '<=' }[f.op]
      return `ifNull(${num} ${sym} ${p.num(v as number)}, 0)`
    }
    case 'in': {
      const list = v as (string | number | boolean)[]
      const nums = list.filter((x): x is number => typeof x === 'number')
      const strs = list.filter((x) => typeof x !== 'number').map(String)
      const parts: string[] = []
      if (strs.length) parts.push(`${str} IN ${p.bind(strs, 'Array(String)')}`)
      if (nums.length) parts.push(`ifNull(${num} IN ${p.bind(nums, 'Array(Float64)')}, 0)`)
      return `(${present} AND (${parts.join(' OR ')}))`
    }
    case 'contains': {
      // Case-insensitive substring of a string value, or an element of an array value.
      const needles = Array.isArray(v) ? (v as string[]) : [v as string]
      const arr = p.bind(needles, 'Array(String)')
      return `(${present} AND if(JSONType(${raw}) = 'Array', hasAny(JSONExtract(${raw}, 'Array(String)'), ${arr}), multiSearchAnyCaseInsensitiveUTF8(${str}, ${arr})))`
    }
  }
}

/** Reason.threshold takes scalars or lists of strings and numbers. */
const thresholdOf = (v: unknown): Reason['threshold'] =>
  v === undefined ? null : Array.isArray(v) ? v.map((x) => (typeof x === 'boolean' ? String(x) : (x as string | number))) : (v as Reason['threshold'])

const SYM = { gt: '>', gte: '>=', lt: '<', lte: '<=', eq: '=', neq: '!=' } as const

type Leaf = {
  /** SQL of the measured value (over the columns of the final SELECT's FROM). */
  measured: string
  /** SQL of "the condition holds" (UInt8). */
  pass: string
  /** Static parts of the reason, bound as JSON text. */
  reason: Omit<Reason, 'measured' | 'passed' | 'detail'>
  /** Whether `measured` is already JSON text (traits) rather than a number. */
  measuredIsJson?: boolean
  /** Extra detail: JSON key → SQL expression (number or string). */
  detail?: [string, string, 'num' | 'str' | 'json'][]
  /** Evaluated but not reported on its own (the conditions inside a score item). */
  hidden?: boolean
}

/**
 * Compiles one rule. The events the rule reads pass through one scan of events_v1 (`ev`), grouped
 * once per subject (`agg`); each condition adds its own aggregate columns to that one GROUP BY, so
 * a rule with five conditions still reads the table once.
 */
class Compiler {
  readonly p = new Params()
  readonly asOf: number
  /** Aggregates over `ev` grouped by subject: alias → SQL. */
  readonly aggs: [string, string][] = []
  /** Extra CTEs (champions). */
  readonly ctes: [string, string][] = []
  readonly joins: string[] = []
  /** Trait keys to pivot: key → column alias. */
  readonly traits = new Map<string, string>()
  /** The earliest moment any condition looks at. */
  scanFrom: number
  usesEvents = false
  leaves: Leaf[] = []
  #n = 0

  constructor(
    readonly rule: Rule,
    readonly opts: CompileOptions,
  ) {
    this.asOf = opts.asOf
    this.scanFrom = opts.asOf
  }

  id(prefix: string) {
    return `${prefix}${this.#n++}`
  }

  get asOfSql() {
    return this.p.time(this.asOf)
  }

  traitCol(key: string): string {
    let col = this.traits.get(key)
    if (!col) {
      col = `t${this.traits.size}`
      this.traits.set(key, col)
    }
    return `tr.${col}`
  }

  /** SQL of "this event row is within (from, asOf] and matches the selector". */
  eventCond(sel: { event?: string | string[]; where?: PropertyFilter[] }, fromMs: number, toMs = this.asOf): string {
    this.usesEvents = true
    this.scanFrom = Math.min(this.scanFrom, fromMs)
    const parts = [`ts > ${this.p.time(fromMs)}`]
    if (toMs !== this.asOf) parts.push(`ts <= ${this.p.time(toMs)}`)
    if (typeof sel.event === 'string') parts.push(`event = ${this.p.str(sel.event)}`)
    else if (sel.event) parts.push(`event IN ${this.p.bind(sel.event, 'Array(String)')}`)
    for (const f of sel.where ?? []) parts.push(valuePredicate(this.p, `JSONExtractRaw(properties, ${this.p.str(f.property)})`, f))
    return parts.join(' AND ')
  }

  agg(sql: string): string {
    const alias = this.id('a')
    this.aggs.push([alias, sql])
    return `agg.${alias}`
  }

  traitLeaf(f: TraitFilter): Leaf {
    const col = this.traitCol(f.trait)
    return {
      measured: `if(${col} = '', 'null', ${col})`,
      measuredIsJson: true,
      pass: valuePredicate(this.p, col, f),
      reason: { condition: `trait ${f.trait} ${f.op}${f.value === undefined ? '' : ` ${fmt(f.value)}`}`, metric: 'trait', op: f.op, threshold: thresholdOf(f.value) },
    }
  }

  /** The measured value of a metric over (from, to], as SQL over `agg`. */
  metricValue(c: MetricCondition, fromMs: number, toMs: number, perDay: boolean): string {
    const cond = this.eventCond(c, fromMs, toMs)
    const days = (toMs - fromMs) / DAY
    const norm = (sql: string) => (perDay ? `(${sql} / ${this.p.num(days)})` : sql)
    switch (c.metric) {
      case 'count':
        return norm(`toFloat64(${this.agg(`countIf(${cond})`)})`)
      case 'active_users':
        // Per day: the mean daily active users (distinct user-days / days), not distinct users / days.
        return perDay ? norm(`toFloat64(${this.agg(`uniqExactIf((user_key, toDate(ts)), ${cond})`)})`) : `toFloat64(${this.agg(`uniqExactIf(user_key, ${cond})`)})`
      case 'active_days':
        return norm(`toFloat64(${this.agg(`uniqExactIf(toDate(ts), ${cond})`)})`)
      case 'sum':
      case 'avg':
      case 'max':
      case 'min': {
        const v = `JSONExtract(JSONExtractRaw(properties, ${this.p.str(c.property)}), 'Nullable(Float64)')`
        if (c.metric === 'sum') return norm(`toFloat64(${this.agg(`sumIf(ifNull(${v}, 0), ${cond})`)})`)
        // avg / max / min are already intensive: a baseline compares them as they are.
        return this.agg(`${c.metric}OrNullIf(${v}, ${cond} AND ${v} IS NOT NULL)`)
      }
      default:
        throw new Error(`metric ${c.metric} has no window value`)
    }
  }

  metricLeaf(c: MetricCondition): Leaf {
    const sel = describeSelector(c)
    if (c.op === 'drop_pct_gte' || c.op === 'rise_pct_gte') {
      const base = c.baseline!
      const w = parseDuration(c.window!)
      const offset = base.offset ? parseDuration(base.offset) : w
      const bw = parseDuration(base.window)
      const cur = this.metricValue(c, this.asOf - w, this.asOf, true)
      const prev = this.metricValue(c, this.asOf - offset - bw, this.asOf - offset, true)
      const pct = c.op === 'drop_pct_gte' ? `(${prev} - ${cur}) / ${prev} * 100` : `(${cur} - ${prev}) / ${prev} * 100`
      const measured = `if(${prev} > 0, ${pct}, NULL)`
      const minBase = c.min_baseline !== undefined ? ` AND ${prev} >= ${this.p.num(c.min_baseline)}` : ''
      return {
        measured,
        pass: `ifNull(${measured} >= ${this.p.num(c.value)}${minBase}, 0)`,
        reason: {
          condition: `${c.metric}(${sel}${c.window}) ${c.op === 'drop_pct_gte' ? 'dropped' : 'rose'} by ≥ ${c.value}% per day vs the ${base.window} before the last ${base.offset ?? c.window}${c.min_baseline !== undefined ? ` (baseline ≥ ${c.min_baseline}/day)` : ''}`,
          metric: c.metric,
          op: c.op,
          threshold: c.value,
        },
        detail: [
          ['current_per_day', cur, 'num'],
          ['baseline_per_day', prev, 'num'],
          ...(c.min_baseline !== undefined ? ([['min_baseline', this.p.num(c.min_baseline), 'num']] as [string, string, 'num'][]) : []),
        ],
      }
    }
    const sym = SYM[c.op as keyof typeof SYM]
    const compare = (measured: string) => `ifNull(${measured} ${sym} ${this.p.num(c.value)}, 0)`
    const reason = (condition: string) => ({ condition, metric: c.metric, op: c.op, threshold: c.value })
    switch (c.metric) {
      case 'days_since_last_seen': {
        const lookback = parseDuration(c.window ?? DEFAULT_LOOKBACK.days_since_last_seen)
        const last = this.agg(`maxOrNullIf(ts, ${this.eventCond(c, this.asOf - lookback)})`)
        // No activity within the lookback reads as the whole lookback (a lower bound), so a churn
        // rule keeps holding for a subject that stays silent longer than its lookback.
        const measured = `if(${last} IS NULL, ${this.p.num(lookback / DAY)}, (${this.p.bind(this.asOf, 'Int64')} - toUnixTimestamp64Milli(${last})) / ${DAY})`
        return { measured, pass: compare(measured), reason: reason(`days since last seen${sel ? ` (${sel.slice(0, -2)})` : ''} ${sym} ${c.value}`) }
      }
      case 'seat_usage': {
        const seats = `JSONExtract(${this.traitCol(c.seats_trait ?? 'seats')}, 'Nullable(Float64)')`
        const window = c.window ?? DEFAULT_LOOKBACK.seat_usage
        const used = c.used_trait
          ? `JSONExtract(${this.traitCol(c.used_trait)}, 'Nullable(Float64)')`
          : `toFloat64(${this.agg(`uniqExactIf(user_key, ${this.eventCond(c, this.asOf - parseDuration(window))})`)})`
        const measured = `if(ifNull(${seats}, 0) > 0, ${used} / ${seats}, NULL)`
        return {
          measured,
          pass: compare(measured),
          reason: reason(`seat usage (${c.used_trait ? `trait ${c.used_trait}` : `active users ${window}`} / trait ${c.seats_trait ?? 'seats'}) ${sym} ${c.value}`),
          detail: [
            ['seats_used', used, 'num'],
            ['seats', seats, 'num'],
          ],
        }
      }
      case 'champion_quiet':
        return this.championLeaf(c as Extract<MetricCondition, { metric: 'champion_quiet' }>)
      default: {
        const w = parseDuration(c.window!)
        const measured = this.metricValue(c, this.asOf - w, this.asOf, false)
        const what = 'property' in c ? `${c.property} of ${sel || 'events, '}` : sel
        return { measured, pass: compare(measured), reason: reason(`${c.metric}(${what}${c.window}) ${sym} ${c.value}`) }
      }
    }
  }

  /**
   * The champion: the account's most active user over the window (`top`), or its members with a
   * trait. Measured: days since the champion (the most recent of several) was last active.
   */
  championLeaf(c: Extract<MetricCondition, { metric: 'champion_quiet' }>): Leaf {
    const window = parseDuration(c.window ?? DEFAULT_LOOKBACK.champion_quiet)
    const from = this.asOf - window
    const all = this.eventCond({}, from)
    const cte = this.id('champ')
    if (c.champion === 'top') {
      const sel = this.eventCond(c, from)
      this.ctes.push([
        cte,
        `SELECT subject_id, argMax(user_key, (n, last)) AS champion, argMax(last, (n, last)) AS last
        FROM (SELECT subject_id, user_key, countIf(${sel}) AS n, maxIf(ts, ${all}) AS last FROM ev WHERE user_key != '' GROUP BY subject_id, user_key HAVING n > 0)
        GROUP BY subject_id`,
      ])
    } else {
      const f = c.champion
      this.ctes.push([
        cte,
        `SELECT c.account_id AS subject_id, argMax(c.user_id, u.last) AS champion, max(u.last) AS last
        FROM (
          SELECT m.account_id AS account_id, m.user_id AS user_id
          FROM (SELECT DISTINCT account_id, user_id FROM memberships_v1) AS m
          INNER JOIN (
            SELECT user_id FROM (SELECT user_id, argMax(value, (timestamp, message_id)) AS v FROM user_traits_v1
              WHERE key = ${this.p.str(f.trait)} AND timestamp <= ${this.asOfSql} GROUP BY user_id)
            WHERE ${valuePredicate(this.p, 'v', f)}
          ) AS t ON t.user_id = m.user_id
        ) AS c
        LEFT JOIN (SELECT subject_id, user_key, maxIf(ts, ${all}) AS last FROM ev GROUP BY subject_id, user_key) AS u
          ON u.subject_id = c.account_id AND u.user_key = c.user_id
        GROUP BY c.account_id`,
      ])
    }
    this.joins.push(`LEFT JOIN ${cte} ON ${cte}.subject_id = u.subject_id`)
    const last = `${cte}.last`
    const known = `${cte}.champion != ''`
    const quietDays = `if(toUnixTimestamp64Milli(${last}) > toUnixTimestamp64Milli(${this.p.time(from)}), (${this.p.bind(this.asOf, 'Int64')} - toUnixTimestamp64Milli(${last})) / ${DAY}, ${this.p.num(window / DAY)})`
    const measured = `if(${known}, ${quietDays}, NULL)`
    const sym = SYM[c.op as keyof typeof SYM]
    const who = c.champion === 'top' ? `top user${describeSelector(c) ? ` by ${describeSelector(c).slice(0, -2)}` : ''} over ${c.window ?? DEFAULT_LOOKBACK.champion_quiet}` : `users with trait ${c.champion.trait} ${c.champion.op} ${fmt(c.champion.value)}`
    return {
      measured,
      pass: `ifNull(${measured} ${sym} ${this.p.num(c.value)}, 0)`,
      reason: { condition: `champion (${who}) quiet for ${sym} ${c.value} days`, metric: 'champion_quiet', op: c.op, threshold: c.value },
      detail: [['champion', `${cte}.champion`, 'str']],
    }
  }

  /** A condition tree → SQL of "it holds", collecting one leaf (one reason) per condition. */
  condition(c: Condition): string {
    if ('all' in c) return `(${c.all.map((x) => this.condition(x)).join(' AND ')})`
    if ('any' in c) return `(${c.any.map((x) => this.condition(x)).join(' OR ')})`
    const leaf = 'metric' in c ? this.metricLeaf(c) : this.traitLeaf(c)
    this.leaves.push(leaf)
    return `p${this.leaves.length - 1}`
  }

  scoreItem(item: ScoreItem, window: number, halfLife: number | undefined): Leaf {
    if ('when' in item) {
      const start = this.leaves.length
      const holds = this.condition(item.when)
      const inner = this.leaves.slice(start).map((l) => l.reason.condition)
      return {
        measured: `if(${holds}, ${this.p.num(item.points)}, 0)`,
        pass: holds,
        reason: { condition: `${item.points} points when ${inner.join(' and ')}`, metric: 'points', op: 'points', threshold: item.points },
      }
    }
    if ('trait' in item) {
      const t = this.traitLeaf(item)
      return {
        measured: `if(${t.pass}, ${this.p.num(item.points)}, 0)`,
        pass: t.pass,
        reason: { condition: `${item.points} points when ${t.reason.condition}`, metric: 'points', op: 'points', threshold: item.points },
        detail: [['trait_value', t.measured, 'json']],
      }
    }
    const cond = this.eventCond(item, this.asOf - window)
    const weight = halfLife
      ? `exp2(-(${this.p.bind(this.asOf, 'Int64')} - toUnixTimestamp64Milli(ts)) / ${this.p.num(halfLife)})`
      : '1'
    const n = this.agg(`countIf(${cond})`)
    const decayed = this.agg(`sumIf(${weight}, ${cond})`)
    const raw = `${decayed} * ${this.p.num(item.points)}`
    const measured = item.max !== undefined ? `least(${raw}, ${this.p.num(item.max)})` : raw
    return {
      measured,
      pass: `${n} > 0`,
      reason: {
        condition: `${item.points} points per ${describeSelector(item).slice(0, -2)}${item.max !== undefined ? `, at most ${item.max}` : ''}${halfLife ? `, halving every ${this.rule.score?.half_life}` : ''}`,
        metric: 'points',
        op: 'points',
        threshold: item.max ?? null,
      },
      detail: [['events', `toFloat64(${n})`, 'num']],
    }
  }
}

/** `Message Sent where plan eq "pro", ` — a selector as people read it (with a trailing ", "). */
function describeSelector(s: { event?: string | string[]; where?: PropertyFilter[] }): string {
  const ev = s.event === undefined ? '' : Array.isArray(s.event) ? s.event.join(' | ') : s.event
  const where = (s.where ?? []).map((f) => `${f.property} ${f.op}${f.value === undefined ? '' : ` ${fmt(f.value)}`}`).join(' and ')
  const text = [ev || (where ? 'events' : ''), where ? `where ${where}` : ''].filter(Boolean).join(' ')
  return text ? `${text}, ` : ''
}

function reasonSql(c: Compiler, leaf: Leaf, i: number, measuredCol: string): string {
  const head = JSON.stringify({ condition: leaf.reason.condition, metric: leaf.reason.metric, op: leaf.reason.op, threshold: leaf.reason.threshold })
  const parts = [c.p.str(`${head.slice(0, -1)},"measured":`)]
  parts.push(leaf.measuredIsJson ? measuredCol : `ifNull(toJSONString(round(${measuredCol}, 4)), 'null')`)
  parts.push(`if(p${i}, ',"passed":true', ',"passed":false')`)
  if (leaf.detail?.length) {
    leaf.detail.forEach(([key, sql, type], j) => {
      parts.push(c.p.str(`${j === 0 ? ',"detail":{' : ','}${JSON.stringify(key)}:`))
      parts.push(type === 'json' ? sql : type === 'str' ? `toJSONString(${sql})` : `ifNull(toJSONString(round(${sql}, 4)), 'null')`)
    })
    parts.push(`'}'`)
  }
  parts.push(`'}'`)
  return `concat(${parts.join(', ')})`
}

export function compileRule(rule: Rule, opts: CompileOptions): CompiledRule {
  const c = new Compiler(rule, opts)
  const p = c.p
  const account = rule.subject === 'account'

  // 1. Conditions (or score items) → leaves, aggregates, trait columns.
  const whereLeaves = (rule.where ?? []).map((f) => {
    c.leaves.push(c.traitLeaf(f))
    return `p${c.leaves.length - 1}`
  })
  let holds: string
  let score = 'CAST(NULL, \'Nullable(Float64)\')'
  if (rule.score) {
    const window = parseDuration(rule.score.window ?? DEFAULT_LOOKBACK.score)
    const halfLife = rule.score.half_life ? parseDuration(rule.score.half_life) : undefined
    const itemCols: string[] = []
    for (const item of rule.score.items) {
      const start = c.leaves.length
      const leaf = c.scoreItem(item, window, halfLife)
      // Leaves of a condition item are evaluated but not reported; the item's own reason is.
      for (const inner of c.leaves.slice(start)) inner.hidden = true
      c.leaves.push(leaf)
      itemCols.push(`m${c.leaves.length - 1}`)
    }
    score = `round(${itemCols.join(' + ')}, 4)`
    c.leaves.push({
      measured: score,
      pass: `${score} >= ${p.num(rule.threshold!)}`,
      reason: { condition: `score >= ${rule.threshold}`, metric: 'score', op: 'gte', threshold: rule.threshold! },
    })
    holds = `p${c.leaves.length - 1}`
  } else {
    holds = c.condition(rule.when!)
  }
  const matched = [...whereLeaves, holds].join(' AND ')

  // 2. The subjects in scope.
  const ids = opts.subjectIds
  const idsSql = ids ? p.bind(ids, 'Array(String)') : ''
  const shard = opts.shard ? `cityHash64(subject_id) % ${p.bind(opts.shard.count, 'UInt64')} = ${p.bind(opts.shard.index, 'UInt64')}` : ''
  const asOf = c.asOfSql
  const ctes: [string, string][] = []
  const universe = ids
    ? `SELECT DISTINCT arrayJoin(${idsSql}) AS subject_id`
    : account
      ? `SELECT DISTINCT account_id AS subject_id FROM accounts_v1 WHERE account_id != '' AND first_seen <= ${asOf}`
      : `SELECT DISTINCT user_id AS subject_id FROM users_v1 WHERE user_id != '' AND first_seen <= ${asOf}`
  ctes.push(['u0', universe])

  // 3. The events: one scan of events_v1 for the widest window, identity-resolved and attributed.
  if (c.usesEvents) {
    ctes.push([
      'links',
      // A previous id (anonymous or aliased) → its user; a second hop follows anon → id → alias.
      `SELECT l1.previous_id AS previous_id, if(l2.target != '', l2.target, l1.target) AS user_id
      FROM (SELECT previous_id, argMin(user_id, first_seen) AS target FROM identities_v1 WHERE previous_id != user_id GROUP BY previous_id) AS l1
      LEFT ANY JOIN (SELECT previous_id, argMin(user_id, first_seen) AS target FROM identities_v1 WHERE previous_id != user_id GROUP BY previous_id) AS l2
        ON l2.previous_id = l1.target`,
    ])
    const filters = [`e.type IN ${ACTIVITY_TYPES}`, `e.timestamp > ${p.time(c.scanFrom)}`, `e.timestamp <= ${asOf}`]
    if (rule.sources) filters.push(`e.source IN ${p.bind(rule.sources, 'Array(String)')}`)
    const key = `if(e.user_id != '', e.user_id, e.anonymous_id)`
    if (ids) {
      // Incremental: read only the events that can belong to the requested subjects.
      ctes.push([
        'scope_users',
        account
          ? `SELECT DISTINCT user_id FROM memberships_v1 WHERE account_id IN ${idsSql}`
          : `SELECT arrayJoin(${idsSql}) AS user_id`,
      ])
      ctes.push(['scope_keys', `SELECT user_id AS k FROM scope_users UNION DISTINCT SELECT previous_id AS k FROM links WHERE user_id IN (SELECT user_id FROM scope_users)`])
      filters.push(
        account
          ? `(e.account_id IN ${idsSql} OR (e.account_id = '' AND ${key} IN (SELECT k FROM scope_keys)))`
          : `${key} IN (SELECT k FROM scope_keys)`,
      )
    }
    const resolved = `SELECT if(l.user_id != '', l.user_id, ${key}) AS user_key, (e.user_id != '' OR l.user_id != '') AS known,
        e.account_id AS account_id, e.event AS event, e.timestamp AS ts, e.properties AS properties
      FROM events_v1 AS e LEFT ANY JOIN links AS l ON l.previous_id = ${key}
      WHERE ${filters.join(' AND ')}`
    ctes.push([
      'ev',
      account
        ? `SELECT subject_id, user_key, event, ts, properties FROM (
            SELECT r.*, if(r.account_id != '', [r.account_id], m.accounts) AS accounts
            FROM (${resolved}) AS r
            LEFT ANY JOIN (SELECT user_id, groupUniqArray(account_id) AS accounts FROM memberships_v1 GROUP BY user_id) AS m ON m.user_id = r.user_key
          ) ARRAY JOIN accounts AS subject_id${ids || shard ? ` WHERE ${[ids ? `subject_id IN ${idsSql}` : '', shard].filter(Boolean).join(' AND ')}` : ''}`
        : `SELECT user_key AS subject_id, user_key, event, ts, properties FROM (${resolved}) WHERE known${ids ? ` AND subject_id IN ${idsSql}` : ''}${shard ? ` AND ${shard}` : ''}`,
    ])
    if (c.aggs.length) ctes.push(['agg', `SELECT subject_id, ${c.aggs.map(([a, s]) => `${s} AS ${a}`).join(',\n    ')} FROM ev GROUP BY subject_id`])
  }
  ctes.push(...c.ctes)

  // 4. Current traits, pivoted to one column per key.
  if (c.traits.size) {
    const [table, idCol] = account ? ['account_traits_v1', 'account_id'] : ['user_traits_v1', 'user_id']
    const scope = ids ? ` AND ${idCol} IN ${idsSql}` : ''
    ctes.push([
      'tr',
      `SELECT subject_id, ${[...c.traits].map(([k, col]) => `anyIf(value, key = ${p.str(k)}) AS ${col}`).join(', ')}
      FROM (SELECT ${idCol} AS subject_id, key, argMax(value, (timestamp, message_id)) AS value FROM ${table}
        WHERE key IN ${p.bind([...c.traits.keys()], 'Array(String)')} AND timestamp <= ${asOf}${scope} GROUP BY subject_id, key)
      GROUP BY subject_id`,
    ])
  }

  const joins = [
    ...(c.usesEvents && c.aggs.length ? ['LEFT JOIN agg ON agg.subject_id = u.subject_id'] : []),
    ...(c.traits.size ? ['LEFT JOIN tr ON tr.subject_id = u.subject_id'] : []),
    ...c.joins,
  ]
  const cols = c.leaves.flatMap((l, i) => [`${l.measured} AS m${i}`, `${l.pass} AS p${i}`])
  const inner = `SELECT u.subject_id AS subject_id,\n    ${cols.join(',\n    ')},\n    ${matched} AS matched_,\n    ${score} AS score_
  FROM u0 AS u
  ${joins.join('\n  ')}${shard ? `\n  WHERE ${shard.replace('subject_id', 'u.subject_id')}` : ''}`
  const shown = c.leaves.flatMap((l, i) => (l.hidden ? [] : [reasonSql(c, l, i, `m${i}`)]))
  const reasons = `concat('[', ${shown.join(", ',', ")}, ']')`
  const sql = `WITH
${ctes.map(([n, s]) => `${n} AS (\n  ${s}\n)`).join(',\n')}
SELECT subject_id, toUInt8(matched_) AS matched, score_ AS score, ${reasons} AS reasons
FROM (
  ${inner}
)${ids ? '' : '\nWHERE matched = 1'}
ORDER BY subject_id`
  return { sql, params: p.values }
}

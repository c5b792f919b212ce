import type { Reason } from '../../src/signals.js'
import { DAY, DEFAULT_WINDOW, type PartSource, type Selector } from './parts.js'
import { type Params, describeSelector, fmt, valuePredicate } from './sql.js'
import { type Condition, type MetricCondition, parseDuration, type Rule, type ScoreItem, type TraitFilter } from '../schema.js'

/**
 * Leaves: every condition of a rule (a trait filter, a metric condition, a score item) becomes
 * one reported reason, with SQL for its measured value and for "it holds". Measured values are
 * written over the per-subject row of the final SELECT (rules/compile/query.ts): `by_subject.final_<n>`
 * (aggregates of parts, see {@link Leaves.final}) and `traits.trait_<n>` (the subject's traits).
 */

const SYM = { gt: '>', gte: '>=', lt: '<', lte: '<=', eq: '=', neq: '!=' } as const

export type ReasonHead = Omit<Reason, 'measured' | 'passed' | 'detail'>

export type Leaf = {
  /** SQL of the measured value, over the final SELECT's columns. */
  measured: string
  /** SQL of "the condition holds". */
  pass: string
  reason: ReasonHead
  /** `measured` is JSON text already (a trait value) rather than a number. */
  measuredIsJson?: boolean
  /** Extra figures for the reason: key, SQL, how to render it. */
  detail?: [string, string, 'num' | 'str' | 'json'][]
  /** Evaluated but not reported on its own (conditions inside a score item). */
  hidden?: boolean
}

/** The final SELECT's columns of leaf `i`: its measured value, whether it passed, its detail values. */
export const measuredCol = (i: number) => `measured_${i}`
export const passedCol = (i: number) => `passed_${i}`
export const detailCol = (i: number, j: number) => `detail_${i}_${j}`

/** Reason.threshold takes scalars or lists of strings and numbers. */
const thresholdOf = (v: unknown): Reason['threshold'] =>
  v === undefined ? null : Array.isArray(v) ? v.map((x) => (typeof x === 'boolean' ? String(x) : (x as string | number))) : (v as Reason['threshold'])

/** A champion restricted by a trait: its CTE (the members with the trait) and how it joins. */
export type ChampionCte = { name: string; sql: string }

/**
 * The leaves of the rules of one query. Shared by several rules of one subject type: parts,
 * finals and trait columns are deduplicated only by their bound parameters, and each rule's
 * leaves are a contiguous range of `leaves`.
 */
export class Leaves {
  /** The rule whose leaves are being built. */
  rule: Rule
  /** Per-subject aggregates over `by_subject_user`: column name → SQL. */
  readonly finals: [string, string][] = []
  readonly leaves: Leaf[] = []
  /** Trait key → its column in `traits`. */
  readonly traits = new Map<string, string>()
  /** Champions with a trait: CTEs, joins of `by_subject_user` rows to them, and joins of the final rows. */
  readonly ctes: ChampionCte[] = []
  readonly aggJoins: string[] = []
  readonly finalJoins: string[] = []

  constructor(
    readonly p: Params,
    readonly asOf: number,
    readonly parts: PartSource,
    first: Rule,
  ) {
    this.rule = first
  }

  traitCol(key: string): string {
    let col = this.traits.get(key)
    if (!col) {
      col = `trait_${this.traits.size}`
      this.traits.set(key, col)
    }
    return `traits.${col}`
  }

  /** A per-subject aggregate of parts (an aggregate over the subject's `by_subject_user` rows). */
  final(sql: string): string {
    const name = `final_${this.finals.length}`
    this.finals.push([name, sql])
    return `by_subject.${name}`
  }

  /** Add a leaf; returns its index (its columns: {@link measuredCol}, {@link passedCol}). */
  leaf(l: Leaf): number {
    this.leaves.push(l)
    return this.leaves.length - 1
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
    const src = this.parts
    switch (c.metric) {
      case 'count':
        return norm(this.final(`sum(${src.count(c, from, to)})`))
      case 'active_users':
        // Per day: mean daily active users (distinct user-days / days), not distinct users / days.
        return perDay
          ? norm(this.final(`toFloat64(sum(length(${src.days(c, from, to)})))`))
          : this.final(`toFloat64(countIf(${src.presence(c, from, to)} > 0))`)
      case 'active_days':
        return norm(this.final(`toFloat64(length(groupUniqArrayArray(${src.days(c, from, to)})))`))
      case 'sum':
        return norm(this.final(`sum(${src.property('sum', c, c.property, from, to)})`))
      case 'avg': {
        const s = src.property('sum', c, c.property, from, to)
        const n = src.property('count', c, c.property, from, to)
        return this.final(`if(sum(${n}) > 0, sum(${s}) / sum(${n}), NULL)`)
      }
      case 'max':
      case 'min':
        // max / min are intensive already: a baseline compares them as they are.
        return this.final(`${c.metric}(${src.property(c.metric, c, c.property, from, to)})`)
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
        const last = this.final(`max(${this.parts.lastSeen(c, this.asOf - lookback, this.asOf)})`)
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
          : this.final(`toFloat64(countIf(${this.parts.presence(c, this.asOf - parseDuration(window), this.asOf)} > 0))`)
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
    const last = this.parts.lastSeen({}, from, this.asOf)
    let champion: string
    let lastSeen: string
    let known: string
    if (c.champion === 'top') {
      const n = this.parts.count(c, from, this.asOf)
      champion = this.final(`argMaxIf(by_subject_user.user_key, (${n}, ifNull(toUnixTimestamp64Milli(${last}), 0)), ${n} > 0)`)
      lastSeen = this.final(`argMaxIf(${last}, (${n}, ifNull(toUnixTimestamp64Milli(${last}), 0)), ${n} > 0)`)
      known = `${champion} != ''`
    } else {
      const f = c.champion
      const name = `champions_${this.ctes.length}`
      this.ctes.push({
        name,
        sql: `SELECT member.account_id AS account_id, member.user_id AS user_id
    FROM (SELECT DISTINCT account_id, user_id FROM memberships_v1) AS member
    INNER JOIN (
      SELECT user_id FROM (
        SELECT user_id, argMax(value, (timestamp, message_id)) AS v FROM user_traits_v1
        WHERE key = ${p.str(f.trait)} AND timestamp <= ${p.time(this.asOf)} GROUP BY user_id)
      WHERE ${valuePredicate(p, 'v', f)}
    ) AS with_trait ON with_trait.user_id = member.user_id`,
      })
      // Which of a subject's users are champions, and one champion of each account (for an account whose champions were never active).
      const isChampion = `${name}_member`
      const anyChampion = `${name}_any`
      this.aggJoins.push(
        `LEFT ANY JOIN (SELECT account_id, user_id, 1 AS is_champion FROM ${name}) AS ${isChampion} ON ${isChampion}.account_id = by_subject_user.subject_id AND ${isChampion}.user_id = by_subject_user.user_key`,
      )
      lastSeen = this.final(`maxIf(${last}, ${isChampion}.is_champion = 1)`)
      const active = this.final(`argMaxIf(by_subject_user.user_key, ifNull(toUnixTimestamp64Milli(${last}), 0), ${isChampion}.is_champion = 1)`)
      this.finalJoins.push(`LEFT JOIN (SELECT account_id, min(user_id) AS any_champion FROM ${name} GROUP BY account_id) AS ${anyChampion} ON ${anyChampion}.account_id = subject.subject_id`)
      champion = `if(${active} != '', ${active}, ${anyChampion}.any_champion)`
      known = `${anyChampion}.any_champion != ''`
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
    return passedCol(this.leaf('metric' in c ? this.metricLeaf(c) : this.traitLeaf(c)))
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
        detail: inner.length === 1 ? [['measured', measuredCol(start), inner[0]?.measuredIsJson ? 'json' : 'num']] : undefined,
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
    const sel: Selector = item
    const n = this.final(`sum(${this.parts.rows(sel, this.asOf - window, this.asOf)})`)
    const decayed = this.final(`sum(${this.parts.decayed(sel, this.asOf - window, this.asOf, halfLife)})`)
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

  /**
   * One rule's leaves: its trait filters, then its conditions or its score items and threshold.
   * Returns the SQL of its conjuncts (all must hold), its score, and its range of leaves.
   */
  addRule(r: Rule): { conjuncts: string[]; score: string; from: number; to: number } {
    this.rule = r
    const p = this.p
    const from = this.leaves.length
    const conjuncts = (r.where ?? []).map((f) => passedCol(this.leaf(this.traitLeaf(f))))
    let score = 'CAST(NULL AS Nullable(Float64))'
    if (r.score) {
      const window = parseDuration(r.score.window ?? DEFAULT_WINDOW.score)
      const halfLife = r.score.half_life ? parseDuration(r.score.half_life) : undefined
      const items = r.score.items.map((item) => measuredCol(this.leaf(this.scoreItem(item, window, halfLife))))
      score = `round(${items.join(' + ')}, 4)`
      conjuncts.push(
        passedCol(
          this.leaf({
            measured: score,
            pass: `${score} >= ${p.num(r.threshold!)}`,
            reason: { condition: `score >= ${r.threshold}`, metric: 'score', op: 'gte', threshold: r.threshold! },
          }),
        ),
      )
    } else {
      conjuncts.push(this.condition(r.when!))
    }
    return { conjuncts, score, from, to: this.leaves.length }
  }
}

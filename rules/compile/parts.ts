import { type Params, documentPredicate, startOfDay } from './sql.js'
import { type Condition, type MetricCondition, type PropertyFilter, parseDuration, type Rule } from '../schema.js'

/**
 * Planning: where each measurement of a rule is read, and the partial aggregates ("parts") it
 * needs. A part is computed per raw identity (account id, user id, anonymous id) by the scans,
 * then merged per (subject, user) and per subject (rules/compile/query.ts). The leaves
 * (rules/compile/leaves.ts) ask a {@link PartSource} for parts and never see how they are read.
 */

export const DAY = 86_400_000
export const TIME = "Nullable(DateTime64(3, 'UTC'))"
export const DEFAULT_WINDOW = { days_since_last_seen: '365d', seat_usage: '30d', champion_quiet: '90d', score: '90d' } as const

export type Selector = { event?: string | string[]; where?: PropertyFilter[] }

/** How a part's values merge: `sum` (counts), `max` / `min` (times, values), `days` (sets of active days). */
export type Kind = 'sum' | 'max' | 'min' | 'days'

/**
 * A part: its column `name` (`part_<n>`), its merge kind and type, and its SQL over each scan's
 * rows: `raw` over events_v1, `roll` over the daily rollup (absent: the part reads events only).
 */
export type Part = { name: string; kind: Kind; type: string; raw: string; roll?: string }

export const MERGE: Record<Kind, (x: string) => string> = {
  sum: (x) => `sum(${x})`,
  max: (x) => `max(${x})`,
  min: (x) => `min(${x})`,
  days: (x) => `groupUniqArrayArray(${x})`,
}

/** A part's value where a scan has nothing for it (the other side of the raw / rollup union). */
export const neutral = (p: Pick<Part, 'kind' | 'type'>) =>
  p.kind === 'sum' ? 'toFloat64(0)' : p.kind === 'days' ? 'CAST([] AS Array(Date))' : `CAST(NULL AS ${p.type})`

/** The measurements a leaf can ask for, each over a window (from, to]; each returns a part reference. */
export interface PartSource {
  /** Distinct messages matching the selector. */
  count(sel: Selector, from: number, to: number): string
  /** Non-zero when the user has matching activity (cheaper than counting). */
  presence(sel: Selector, from: number, to: number): string
  /** The set of UTC days with matching activity. */
  days(sel: Selector, from: number, to: number): string
  /** The latest matching event's time, or NULL. */
  lastSeen(sel: Selector, from: number, to: number): string
  /** `sum` / non-null count / `max` / `min` of a numeric property over matching events. */
  property(agg: 'sum' | 'count' | 'max' | 'min', sel: Selector, property: string, from: number, to: number): string
  /** Matching events (rows, for a score item's `events` detail). */
  rows(sel: Selector, from: number, to: number): string
  /** Σ 2^((t − asOf) / halfLife) over matching events (1 per event without a half-life). */
  decayed(sel: Selector, from: number, to: number, halfLife: number | undefined): string
}

/**
 * The earliest moment some condition must read events_v1 for (property filters, numeric
 * properties, decayed score items): windows inside it gain nothing from the rollup.
 */
export function rawFloor(rule: Rule, asOf: number): number {
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

/** The event-name filter of a selector, as SQL conditions on a row with an `event` column. */
export function selectorEvent(p: Params, sel: Selector): string[] {
  if (typeof sel.event === 'string') return [`event = ${p.str(sel.event)}`]
  if (sel.event) return [`event IN ${p.bind(sel.event, 'Array(String)')}`]
  return []
}

/** The whole selector (event names and property filters) on an events_v1 row. */
export function selectorRaw(p: Params, sel: Selector): string[] {
  return [...selectorEvent(p, sel), ...(sel.where ?? []).map((f) => documentPredicate(p, 'properties', f.property, f))]
}

/** A numeric property's JSON value as Float64 (numbers or numeric strings), NULL otherwise. */
export const numericProperty = (p: Params, name: string) => `JSONExtract(JSONExtractRaw(properties, ${p.str(name)}), 'Nullable(Float64)')`

/** A decayed event's weight relative to `ref` (SQL of epoch ms): 2^((t − ref) / halfLife), on an events row. */
export const decayWeightAt = (p: Params, ref: string, halfLife: number | undefined) =>
  halfLife ? `exp2((toUnixTimestamp64Milli(timestamp) - ${ref}) / ${p.num(halfLife)})` : '1'

/** A decayed event's weight as of `asOf`: 2^((t − asOf) / halfLife). */
export const decayWeight = (p: Params, asOf: number, halfLife: number | undefined) => decayWeightAt(p, p.int(asOf), halfLife)

/**
 * The reference source: events_v1 for property filters, numeric properties, decay and the partial
 * days at a window's edges; the daily rollup activity_daily_v1 for the whole days of the other
 * windows (when `rollups`). It records what each scan must cover, for the query to filter rows
 * before aggregating them.
 */
export class ScanPlan implements PartSource {
  readonly parts: Part[] = []
  /** What the raw scan must cover: from this moment, within these ranges. */
  rawFrom = Number.POSITIVE_INFINITY
  readonly rawRanges: string[] = []
  /** Which days the rollup scan must cover. */
  rollFrom = Number.POSITIVE_INFINITY
  rollTo = Number.NEGATIVE_INFINITY
  /** Event names each scan needs (null: every activity event). */
  rawEvents: Set<string> | null = new Set()
  rollEvents: Set<string> | null = new Set()
  /** events_v1 is read from here on anyway (raw-only conditions), so the rollup saves nothing after it. */
  readonly rawFloor: number

  constructor(
    readonly p: Params,
    readonly asOf: number,
    rules: Rule[],
    readonly useRollups: boolean,
  ) {
    this.rawFloor = Math.min(...rules.map((r) => rawFloor(r, asOf)))
  }

  /**
   * Where a window (from, to] is read: whole days from the rollup when the selector allows it
   * (no property filter), the partial days at both edges — or the whole window — from events_v1.
   * Returns the condition on each scan's rows.
   */
  window(sel: Selector, from: number, to: number, rawOnly = false): { raw: string; roll?: string } {
    const firstWhole = startOfDay(from) + DAY
    const lastWhole = startOfDay(to)
    const p = this.p
    this.rawFrom = Math.min(this.rawFrom, from)
    const rawSel = selectorRaw(p, sel)
    const need = (set: Set<string> | null) => (sel.event === undefined || set === null ? null : new Set([...set, ...[sel.event].flat()]))
    this.rawEvents = need(this.rawEvents)
    if (!rawOnly && this.useRollups && !sel.where?.length && firstWhole < lastWhole && from < this.rawFloor) {
      this.rollEvents = need(this.rollEvents)
      const edges = `((timestamp > ${p.time(from)} AND timestamp < ${p.time(firstWhole)}) OR (timestamp >= ${p.time(lastWhole)} AND timestamp <= ${p.time(to)}))`
      this.rawRanges.push(edges)
      this.rollFrom = Math.min(this.rollFrom, firstWhole)
      this.rollTo = Math.max(this.rollTo, lastWhole)
      const days = `day >= ${p.date(firstWhole)} AND day < ${p.date(lastWhole)}`
      return { raw: [edges, ...rawSel].join(' AND '), roll: [days, ...selectorEvent(p, sel)].join(' AND ') }
    }
    const range = `timestamp > ${p.time(from)}${to === this.asOf ? '' : ` AND timestamp <= ${p.time(to)}`}`
    this.rawRanges.push(`(${range})`)
    return { raw: [range, ...rawSel].join(' AND ') }
  }

  /** A new part; returns its reference in the per-(subject, user) rows (`by_subject_user.part_<n>`). */
  part(kind: Kind, type: string, raw: string, roll?: string): string {
    const name = `part_${this.parts.length}`
    // Both sides of the raw / rollup union must have the same type.
    const cast = (sql: string) => (kind === 'sum' && !sql.startsWith('toFloat64(') ? `toFloat64(${sql})` : sql)
    this.parts.push({ name, kind, type, raw: cast(raw), roll: roll && cast(roll) })
    return `by_subject_user.${name}`
  }

  count(sel: Selector, from: number, to: number): string {
    const w = this.window(sel, from, to)
    return this.part(
      'sum',
      'Float64',
      `toFloat64(uniqExactIf(message_key, ${w.raw}))`,
      // The rollup is read FINAL: a message stored twice is one element of one row's state, so
      // summing each row's count is exact without merging the states of a whole window.
      w.roll && `toFloat64(sumIf(finalizeAggregation(messages), ${w.roll}))`,
    )
  }

  presence(sel: Selector, from: number, to: number): string {
    const w = this.window(sel, from, to)
    return this.part('sum', 'Float64', `toFloat64(countIf(${w.raw}))`, w.roll && `toFloat64(countIf(${w.roll}))`)
  }

  days(sel: Selector, from: number, to: number): string {
    const w = this.window(sel, from, to)
    return this.part('days', 'Array(Date)', `groupUniqArrayIf(toDate(timestamp), ${w.raw})`, w.roll && `groupUniqArrayIf(day, ${w.roll})`)
  }

  lastSeen(sel: Selector, from: number, to: number): string {
    const w = this.window(sel, from, to)
    return this.part('max', TIME, `maxOrNullIf(timestamp, ${w.raw})`, w.roll && `maxOrNullIf(last_seen, ${w.roll})`)
  }

  property(agg: 'sum' | 'count' | 'max' | 'min', sel: Selector, property: string, from: number, to: number): string {
    const w = this.window(sel, from, to, true)
    const v = numericProperty(this.p, property)
    switch (agg) {
      case 'sum':
        return this.part('sum', 'Float64', `sumIf(ifNull(${v}, 0), ${w.raw} AND ${v} IS NOT NULL)`)
      case 'count':
        return this.part('sum', 'Float64', `toFloat64(countIf(${w.raw} AND ${v} IS NOT NULL))`)
      default:
        return this.part(agg, 'Nullable(Float64)', `${agg}OrNullIf(${v}, ${w.raw} AND ${v} IS NOT NULL)`)
    }
  }

  rows(sel: Selector, from: number, to: number): string {
    const w = this.window(sel, from, to, true)
    return this.part('sum', 'Float64', `toFloat64(countIf(${w.raw}))`)
  }

  decayed(sel: Selector, from: number, to: number, halfLife: number | undefined): string {
    // Decay needs each event's time, so decayed items read events_v1 for their whole window.
    const w = this.window(sel, from, to, true)
    return this.part('sum', 'Float64', `sumIf(${decayWeight(this.p, this.asOf, halfLife)}, ${w.raw})`)
  }
}

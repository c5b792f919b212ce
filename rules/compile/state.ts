import { rawIdentity } from '../attribution.js'
import type { Rule } from '../schema.js'
import { type Measure, type MeasureDef, measure, uniqueMeasures } from '../state/measures.js'
import { cte, type QueryOptions, shardFilter } from './query.js'
import { Leaves } from './leaves.js'
import { DAY, decayWeight, type Kind, MERGE, numericProperty, type PartSource, type Selector, selectorRaw, TIME } from './parts.js'
import { Params, startOfDay } from './sql.js'

/**
 * The second backend: rule measurements read from the per-day state (state_daily_v1, migration
 * 023) instead of raw events. A window (from, to] is read as
 *
 * - the state rows of its days whose events all fall inside it (`first_seen > from` and
 *   `last_seen <= to`): every row of a whole day, and rows of the edge days the edge does not cut;
 * - for the rows an edge cuts through, their events of that day from events_v1, found by the
 *   sorting key — (tag, raw id) is a prefix of (account_id, user_id), and the anonymous ones are
 *   (tag, '') — and attributed as the row is: no identity table is read.
 *
 * So `now − w < t ≤ now` stays exact to the millisecond. Only live rows are read (`n > 0`:
 * re-attribution cancels rows to n = 0). The state's columns are kept by rules/state/write.ts;
 * which measures a rule needs beyond messages per event name are collected here
 * (`measures`), so the writer keeps exactly what the reader reads.
 *
 * A part has two sides, `state` over the `row` columns of state_rows and `edge` over the edge
 * events, each aggregated per (subject, user) and merged by kind like the reference's parts.
 */

type StatePart = { name: string; kind: Kind; type: string; state: string; edge: string }
type Window = { from: number; to: number }

export class StateSource implements PartSource {
  readonly parts: StatePart[] = []
  /** The measures the parts read, beyond n, events and event_last. */
  readonly measures = new Map<number, Measure>()
  readonly windows = new Map<string, Window & { name: string }>()

  constructor(
    readonly p: Params,
    readonly asOf: number,
    readonly subject: Rule['subject'],
  ) {}

  #measure(d: Omit<MeasureDef, 'subject'>): Measure {
    const m = measure({ subject: this.subject, ...d })
    this.measures.set(m.key, m)
    return m
  }

  #key(m: Measure) {
    return this.p.bind(m.key, 'UInt32')
  }

  /** The SQL of "the row's events all fall in (from, to]", on state rows. */
  whole(w: Window) {
    const p = this.p
    return `day >= ${p.date(startOfDay(w.from))} AND day <= ${p.date(startOfDay(w.to))} AND first_seen > ${p.time(w.from)} AND last_seen <= ${p.time(w.to)}`
  }

  /** The SQL of "an edge of (from, to] cuts through the row", on rows whose columns carry this prefix. */
  straddles(w: Window, prefix = '') {
    const p = this.p
    return `(${prefix}day >= ${p.date(startOfDay(w.from))} AND ${prefix}day <= ${p.date(startOfDay(w.to))} AND NOT (${prefix}first_seen > ${p.time(w.from)} AND ${prefix}last_seen <= ${p.time(w.to)}) AND ${prefix}last_seen > ${p.time(w.from)} AND ${prefix}first_seen <= ${p.time(w.to)})`
  }

  /** The SQL of "an edge event counts in (from, to]": its row straddles the window and the event is inside it. */
  edgeIn(w: Window) {
    const p = this.p
    return `${this.straddles(w, 'row_')} AND timestamp > ${p.time(w.from)} AND timestamp <= ${p.time(w.to)}`
  }

  /** A window, named once per query: its conditions are computed once per row (`whole_<k>`, `edge_<k>`). */
  #window(from: number, to: number): Window & { name: string } {
    const key = `${from}:${to}`
    let w = this.windows.get(key)
    if (!w) {
      w = { from, to, name: `w${this.windows.size}` }
      this.windows.set(key, w)
    }
    return w
  }

  #whole(w: Window & { name: string }) {
    return `whole_${w.name}`
  }

  /** The edge events of (from, to] matching the selector. */
  #edge(sel: Selector, w: Window & { name: string }, extra: string[] = []) {
    return [`edge_${w.name}`, ...selectorRaw(this.p, sel), ...extra].join(' AND ')
  }

  /** A state row's messages matching the selector. */
  #rowCount(sel: Selector): string {
    const p = this.p
    if (sel.where?.length) return `sums[${this.#key(this.#measure({ kind: 'count', event: sel.event, where: sel.where }))}]`
    if (sel.event === undefined) return 'n'
    if (typeof sel.event === 'string') return `events[${p.str(sel.event)}]`
    return `arraySum(arrayMap(e -> events[e], ${p.bind(sel.event, 'Array(String)')}))`
  }

  /** A state row's last matching event, as Nullable DateTime64 (read only where its count is positive). */
  #rowLast(sel: Selector): string {
    const p = this.p
    const ms = (sql: string) => `fromUnixTimestamp64Milli(toInt64(${sql}), 'UTC')`
    if (sel.where?.length) return ms(`maxes[${this.#key(this.#measure({ kind: 'last', event: sel.event, where: sel.where }))}]`)
    if (sel.event === undefined) return 'last_seen'
    if (typeof sel.event === 'string') return ms(`event_last[${p.str(sel.event)}]`)
    return ms(`arrayMax(arrayMap(e -> event_last[e], ${p.bind(sel.event, 'Array(String)')}))`)
  }

  #part(kind: Kind, type: string, state: string, edge: string): string {
    const name = `part_${this.parts.length}`
    const cast = (sql: string) => (kind === 'sum' && !sql.startsWith('toFloat64(') ? `toFloat64(${sql})` : sql)
    this.parts.push({ name, kind, type, state: cast(state), edge: cast(edge) })
    return `by_subject_user.${name}`
  }

  count(sel: Selector, from: number, to: number): string {
    const w = this.#window(from, to)
    return this.#part('sum', 'Float64', `sumIf(${this.#rowCount(sel)}, ${this.#whole(w)})`, `uniqExactIf(message_key, ${this.#edge(sel, w)})`)
  }

  presence(sel: Selector, from: number, to: number): string {
    const w = this.#window(from, to)
    return this.#part('sum', 'Float64', `sumIf(${this.#rowCount(sel)}, ${this.#whole(w)})`, `countIf(${this.#edge(sel, w)})`)
  }

  days(sel: Selector, from: number, to: number): string {
    const w = this.#window(from, to)
    return this.#part(
      'days',
      'Array(Date)',
      `groupUniqArrayIf(day, ${this.#whole(w)} AND ${this.#rowCount(sel)} > 0)`,
      `groupUniqArrayIf(toDate(timestamp), ${this.#edge(sel, w)})`,
    )
  }

  lastSeen(sel: Selector, from: number, to: number): string {
    const w = this.#window(from, to)
    return this.#part('max', TIME, `maxOrNullIf(${this.#rowLast(sel)}, ${this.#whole(w)} AND ${this.#rowCount(sel)} > 0)`, `maxOrNullIf(timestamp, ${this.#edge(sel, w)})`)
  }

  property(agg: 'sum' | 'count' | 'max' | 'min', sel: Selector, property: string, from: number, to: number): string {
    const w = this.#window(from, to)
    const v = numericProperty(this.p, property)
    const edge = this.#edge(sel, w, [`${v} IS NOT NULL`])
    const def = { event: sel.event, where: sel.where, property }
    const nonnull = `sums[${this.#key(this.#measure({ kind: 'nonnull', ...def }))}]`
    switch (agg) {
      case 'sum':
        return this.#part('sum', 'Float64', `sumIf(sums[${this.#key(this.#measure({ kind: 'sum', ...def }))}], ${this.#whole(w)})`, `sumIf(ifNull(${v}, 0), ${edge})`)
      case 'count':
        return this.#part('sum', 'Float64', `sumIf(${nonnull}, ${this.#whole(w)})`, `countIf(${edge})`)
      default: {
        const col = agg === 'max' ? 'maxes' : 'mins'
        const value = `${col}[${this.#key(this.#measure({ kind: agg, ...def }))}]`
        return this.#part(agg, 'Nullable(Float64)', `${agg}OrNullIf(${value}, ${this.#whole(w)} AND ${nonnull} > 0)`, `${agg}OrNullIf(${v}, ${edge})`)
      }
    }
  }

  rows(sel: Selector, from: number, to: number): string {
    const w = this.#window(from, to)
    return this.#part('sum', 'Float64', `sumIf(${this.#rowCount(sel)}, ${this.#whole(w)})`, `countIf(${this.#edge(sel, w)})`)
  }

  decayed(sel: Selector, from: number, to: number, halfLife: number | undefined): string {
    if (!halfLife) return this.rows(sel, from, to)
    const w = this.#window(from, to)
    const p = this.p
    const m = this.#measure({ kind: 'decay', event: sel.event, where: sel.where, halfLife })
    // The stored sum is relative to the end of the row's day: scale it to asOf.
    const scale = `exp2(((toInt64(toUInt32(day)) + 1) * 86400000 - ${p.int(this.asOf)}) / ${p.num(halfLife)})`
    return this.#part('sum', 'Float64', `sumIf(sums[${this.#key(m)}] * ${scale}, ${this.#whole(w)})`, `sumIf(${decayWeight(p, this.asOf, halfLife)}, ${this.#edge(sel, w)})`)
  }
}

/** A state row an edge of a window cuts through: its events of that day are read from events_v1. */
export type EdgeRow = { subject_id: string; user_key: string; raw_id: string; day: string; first_seen: string; last_seen: string; tags: string[] }

/**
 * The edge rows of a query, known before it runs (`rows`, found by the query `edgeRowsQuery`
 * returns: an incremental run has a few), or found inside it (`inline`, for runs with too many to
 * bind).
 */
export type Edges = { rows: EdgeRow[] } | 'inline'

type Shape = {
  windows: (Window & { name: string })[]
  filters: string[]
  rowsRange: string
  edgeRange: string
  edgeDays: number[]
  straddle: string
}

function shape(p: Params, src: StateSource, rule: Rule, opts: QueryOptions): Shape {
  const windows = [...src.windows.values()]
  const first = Math.min(...windows.map((w) => startOfDay(w.from)))
  const last = Math.max(...windows.map((w) => startOfDay(w.to)))
  const edgeDays = [...new Set(windows.flatMap((w) => [startOfDay(w.from), startOfDay(w.to)]))].sort((a, b) => a - b)
  const filters = [`subject_type = ${p.str(rule.subject)}`]
  if (opts.subjectIds) filters.push(`subject_id IN ${p.bind(opts.subjectIds, 'Array(String)')}`)
  const shard = shardFilter(p, opts, 'subject_id')
  if (shard) filters.push(shard)
  return {
    windows,
    filters,
    rowsRange: `day >= ${p.date(first)} AND day <= ${p.date(last)}`,
    edgeRange: `day IN ${p.bind(edgeDays.map((d) => new Date(d).toISOString().slice(0, 10)), 'Array(Date)')}`,
    edgeDays,
    straddle: windows.map((w) => src.straddles(w)).join(' OR '),
  }
}

// FINAL merges a row's pieces (deltas, cancellations) before liveness and edges are decided.
const read = (filters: string[], days: string) => `SELECT * FROM state_daily_v1 FINAL WHERE ${[...filters, days].join(' AND ')}`

const edgeRowsSql = (sh: Shape) =>
  `SELECT subject_id, user_key, raw_id, day, first_seen, last_seen, tags FROM (${read(sh.filters, sh.edgeRange)})\n  WHERE n > 0 AND (${sh.straddle})`

/** The query that finds a compiled state query's edge rows (run before it, to bind them). */
export function edgeRowsQuery(rules: Rule[], opts: QueryOptions): { sql: string; params: Record<string, unknown> } | undefined {
  const p = new Params()
  const first = rules[0] as Rule
  const src = new StateSource(p, opts.asOf, first.subject)
  const leaves = new Leaves(p, opts.asOf, src, first)
  for (const r of rules) leaves.addRule(r)
  if (!src.parts.length) return undefined
  return { sql: edgeRowsSql(shape(p, src, first, opts)), params: p.values }
}

/**
 * The state backend's activity CTEs, ending in `by_subject_user` (rules/compile/query.ts): the
 * subjects' live state rows in the windows' days, the events of the rows an edge cuts through
 * (`edge_rows`, bound or found inline; none: no events are read at all), both aggregated per
 * (subject, user) and merged.
 */
export function stateActivity(p: Params, src: StateSource, rule: Rule, opts: QueryOptions & { edges?: Edges }): string[] {
  const parts = src.parts
  if (!parts.length) return []
  const sh = shape(p, src, rule, opts)
  const edges = opts.edges ?? 'inline'
  const wholeCols = sh.windows.map((w) => `${src.whole(w)} AS whole_${w.name}`).join(', ')
  const state = `SELECT subject_id, user_key,\n    ${parts.map((x) => `${x.state} AS ${x.name}`).join(',\n    ')}
    FROM (SELECT *, ${wholeCols} FROM (${read(sh.filters, sh.rowsRange)}) WHERE n > 0)
    GROUP BY subject_id, user_key`
  const merged = (sides: string[]) =>
    cte('by_subject_user', `SELECT subject_id, user_key, ${parts.map((x) => `${MERGE[x.kind](x.name)} AS ${x.name}`).join(', ')}
  FROM (
    ${sides.join('\n    UNION ALL\n    ')}
  )
  GROUP BY subject_id, user_key`)
  if (edges !== 'inline' && edges.rows.length === 0) return [merged([state])]
  const ctes: string[] = []
  // Where the edge rows' events are in events_v1's sorting key: (tag, raw id), or (tag, '') for anonymous ids.
  let where: string
  if (edges === 'inline') {
    ctes.push(cte('edge_rows', edgeRowsSql(sh)))
    where = `(account_id, user_id) IN (SELECT tag, user_id FROM edge_rows ARRAY JOIN tags AS tag ARRAY JOIN [raw_id, ''] AS user_id)`
  } else {
    const col = <K extends keyof EdgeRow>(k: K, type: string) => p.bind(edges.rows.map((r) => r[k]), type)
    ctes.push(
      cte(
        'edge_rows',
        `SELECT subject_id, user_key, raw_id, toDate(days) AS day, toDateTime64(firsts, 3, 'UTC') AS first_seen, toDateTime64(lasts, 3, 'UTC') AS last_seen, tags
  FROM (SELECT ${col('subject_id', 'Array(String)')} AS subject_id, ${col('user_key', 'Array(String)')} AS user_key, ${col('raw_id', 'Array(String)')} AS raw_id,
    ${col('day', 'Array(String)')} AS days, ${col('first_seen', 'Array(String)')} AS firsts, ${col('last_seen', 'Array(String)')} AS lasts, ${col('tags', 'Array(Array(String))')} AS tags)
  ARRAY JOIN subject_id, user_key, raw_id, days, firsts, lasts, tags`,
      ),
    )
    // Two constant sets (a superset of the pairs, narrowed by the join): the sorting key prunes with them.
    where = `account_id IN ${p.bind([...new Set(edges.rows.flatMap((r) => r.tags))], 'Array(String)')} AND user_id IN ${p.bind([...new Set(['', ...edges.rows.map((r) => r.raw_id)])], 'Array(String)')}`
  }
  // An edge day's events, by the sorting key of events_v1: each day as a time range.
  const edgeTimes = sh.edgeDays.map((d) => `(timestamp >= ${p.time(d)} AND timestamp < ${p.time(d + DAY)})`).join(' OR ')
  const edgeCols = sh.windows.map((w) => `${src.edgeIn(w)} AS edge_${w.name}`).join(', ')
  ctes.push(
    cte(
      'edge_events',
      `SELECT edge_row.subject_id AS subject_id, edge_row.user_key AS user_key, edge_row.day AS row_day, edge_row.first_seen AS row_first_seen,
      edge_row.last_seen AS row_last_seen, event.timestamp AS timestamp, event.event AS event, event.properties AS properties, event.message_key AS message_key
  FROM (
    SELECT user_id, anonymous_id, account_id, event, timestamp, properties, message_key FROM events_v1
    WHERE type IN ('track', 'page', 'screen') AND (${edgeTimes}) AND ${where}
  ) AS event
  INNER JOIN edge_rows AS edge_row ON edge_row.raw_id = ${rawIdentity('event')} AND edge_row.day = toDate(event.timestamp)
  WHERE has(edge_row.tags, event.account_id)`,
    ),
  )
  const edge = `SELECT subject_id, user_key,\n    ${parts.map((x) => `${x.edge} AS ${x.name}`).join(',\n    ')}
    FROM (SELECT *, ${edgeCols} FROM edge_events)
    GROUP BY subject_id, user_key`
  return [...ctes, merged([state, edge])]
}

/**
 * The measures the state must keep for these rules (beyond messages and last times per event
 * name): what their state queries read. Rules with `sources` are read from events (the state
 * does not keep sources) and need none.
 */
export function stateMeasures(rules: Rule[]): Measure[] {
  const out: Measure[] = []
  for (const rule of rules) {
    if (rule.sources) continue
    const p = new Params()
    const src = new StateSource(p, 0, rule.subject)
    new Leaves(p, 0, src, rule).addRule(rule)
    out.push(...src.measures.values())
  }
  return uniqueMeasures(out)
}

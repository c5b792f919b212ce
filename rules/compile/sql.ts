import { chTime, utcDate } from '../../src/time.js'
import type { PropertyFilter } from '../schema.js'

/**
 * Bound parameters. Every value and every name a rule brings (event, property, trait, source,
 * subject ids) goes through `bind` and reaches ClickHouse as `{pN:Type}`; the SQL text only holds
 * identifiers and constants written in this compiler.
 */
export class Params {
  readonly values: Record<string, unknown> = {}
  readonly #seen = new Map<string, string>()
  #n = 0
  /** The same value of the same type binds once, so repeated conditions read the same. */
  bind(value: unknown, type: string): string {
    const key = `${type}\u0000${JSON.stringify(value)}`
    let name = this.#seen.get(key)
    if (!name) {
      name = `p${this.#n++}`
      this.values[name] = value
      this.#seen.set(key, name)
    }
    return `{${name}:${type}}`
  }
  str = (v: string) => this.bind(v, 'String')
  num = (v: number) => this.bind(v, 'Float64')
  int = (v: number) => this.bind(v, 'Int64')
  time = (ms: number) => this.bind(chTime(ms), "DateTime64(3, 'UTC')")
  date = (ms: number) => this.bind(utcDate(ms), 'Date')
}

/** The most needles ClickHouse's multiSearchAny* functions take in one call. */
const MULTI_SEARCH_MAX = 255

/**
 * A JSON value (`raw`: its JSON text, '' when absent) tested against a filter operator, as SQL.
 * Numbers compare numerically whether sent as JSON numbers or numeric strings ("42"); strings
 * compare exactly, except `contains`, which is case-insensitive (and, on an array, means "has an
 * element"). Absent and null fail every operator but `exists: false`.
 */
export function valuePredicate(p: Params, raw: string, f: { op: PropertyFilter['op']; value?: unknown }): string {
  const present = `(${raw} != '' AND ${raw} != 'null')`
  const num = `JSONExtract(${raw}, 'Nullable(Float64)')`
  const str = `JSONExtractString(${raw})`
  const eq = (v: unknown) =>
    typeof v === 'number' ? `ifNull(${num} = ${p.num(v)}, 0)` : typeof v === 'boolean' ? `${raw} = ${p.str(String(v))}` : `${str} = ${p.str(String(v))}`
  const v = f.value
  switch (f.op) {
    case 'exists':
      return v === false ? `NOT ${present}` : present
    case 'eq':
      return `(${present} AND ${eq(v)})`
    case 'neq':
      return `(${present} AND NOT ${eq(v)})`
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
      const list = (Array.isArray(v) ? v : [v]).map(String)
      // multiSearchAny takes at most MULTI_SEARCH_MAX needles: a longer list is searched in slices.
      const search: string[] = []
      for (let i = 0; i < list.length; i += MULTI_SEARCH_MAX) {
        search.push(`multiSearchAnyCaseInsensitiveUTF8(${str}, ${p.bind(list.slice(i, i + MULTI_SEARCH_MAX), 'Array(String)')})`)
      }
      const inArray = `hasAny(JSONExtract(${raw}, 'Array(String)'), ${p.bind(list, 'Array(String)')})`
      return `(${present} AND if(JSONType(${raw}) = 'Array', ${inArray}, ${search.join(' OR ')}))`
    }
  }
}

/** The values an `eq` / `in` filter accepts (none for other operators). */
const equalityValues = (f: { op: PropertyFilter['op']; value?: unknown }): unknown[] => (f.op === 'eq' ? [f.value] : f.op === 'in' ? (f.value as unknown[]) : [])

/**
 * A cheap necessary condition for `valuePredicate` on a value inside the JSON document `doc`
 * (a text column), or '' when there is none: for `eq` / `in` on strings and booleans, the
 * document's text contains the value as JSON writes it, or contains an escape. Without any
 * backslash a JSON text holds every string literally, so a value that is not there cannot
 * match; a value that needs escaping brings a backslash. Put before the predicate, it spares
 * parsing the JSON of most rows (parsing was over half of the default MQL rule's time).
 */
export function textPrefilter(p: Params, doc: string, f: { op: PropertyFilter['op']; value?: unknown }): string {
  const values = equalityValues(f)
  if (values.length === 0 || values.some((v) => typeof v !== 'string' && typeof v !== 'boolean')) return ''
  // A longer list goes without the prefilter (it is only a shortcut).
  if (values.length > MULTI_SEARCH_MAX) return ''
  const needles = values.map((v) => JSON.stringify(String(v)).slice(1, -1))
  return `(multiSearchAny(${doc}, ${p.bind(needles, 'Array(String)')}) OR position(${doc}, '\\\\') > 0)`
}

/**
 * `valuePredicate` on the value of `key` inside the JSON document `doc` (a text column). Equality
 * with non-empty strings reads the value in one parse (JSONExtractString is '' for a missing,
 * null or non-string value, which no such filter equals); everything else extracts the raw value
 * first. Either way behind `textPrefilter` where it applies.
 */
export function documentPredicate(p: Params, doc: string, key: string, f: { op: PropertyFilter['op']; value?: unknown }): string {
  const strings = equalityValues(f)
  const direct = strings.length > 0 && strings.every((v) => typeof v === 'string' && v !== '')
  const k = p.str(key)
  const test = direct
    ? f.op === 'eq'
      ? `JSONExtractString(${doc}, ${k}) = ${p.str(f.value as string)}`
      : `JSONExtractString(${doc}, ${k}) IN ${p.bind(strings, 'Array(String)')}`
    : valuePredicate(p, `JSONExtractRaw(${doc}, ${k})`, f)
  const cheap = textPrefilter(p, doc, f)
  return cheap ? `(${cheap} AND ${test})` : test
}

/** A value as people read it in a reason: strings quoted, lists bracketed. */
export function fmt(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(fmt).join(', ')}]`
  return typeof v === 'string' ? JSON.stringify(v) : String(v)
}

/** `Message Sent where plan eq "pro"` — an event selector as people read it ('' for all activity). */
export function describeSelector(s: { event?: string | string[]; where?: PropertyFilter[] }): string {
  const ev = s.event === undefined ? '' : Array.isArray(s.event) ? s.event.join(' | ') : s.event
  const where = (s.where ?? []).map((f) => `${f.property} ${f.op}${f.value === undefined ? '' : ` ${fmt(f.value)}`}`).join(' and ')
  return [ev || (where ? 'events' : ''), where ? `where ${where}` : ''].filter(Boolean).join(' ')
}

export const startOfDay = (ms: number) => Math.floor(ms / 86_400_000) * 86_400_000

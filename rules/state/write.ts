import type { EventRow } from '../../ingest/normalize.js'
import type { Store } from '../../src/store/store.js'
import { accountsOf, identityLinks, isKnown, rawIdentity, userKey } from '../attribution.js'
import { decayWeightAt, numericProperty, selectorRaw } from '../compile/parts.js'
import { Params } from '../compile/sql.js'
import { MAP_OF, type Measure } from './measures.js'

/**
 * The write path of the per-day state (state_daily_v1, migration 023). Everything here is one
 * `INSERT … SELECT` that ClickHouse runs: the attribution (rules/attribution.ts, the rules' own
 * definition) and the aggregation per (subject, user, day, raw identity) happen in the engine.
 *
 * - `writeBlock`: a block's activity events, just stored in events_v1, passed as TabSeparated text.
 * - `restate`: the rows of some raw ids cancelled (negated sums read from the state) and written
 *   again from events_v1 with the current identity links and memberships, in one insert: how
 *   history is re-attributed when identify / alias / group change who an id belongs to, how a
 *   new measure is backfilled, and how a rebuild works (rules/state/rebuild.ts).
 *
 * Exact under the writer's dedup: the state sees each stored message once, with the block that
 * stored it. It must run in order with the blocks (the writer's commit chain): a block's rows
 * landing between a restate's read and its write would be cancelled with the rest.
 */

/** The activity columns a block's text carries, in order. */
const BLOCK_COLUMNS = "user_id String, anonymous_id String, account_id String, event String, timestamp DateTime64(3, 'UTC'), properties String"

const TSV_ESCAPE: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r', '\0': '\\0' }
const tsv = (s: string) => (/[\\\t\n\r\0]/.test(s) ? s.replace(/[\\\t\n\r\0]/g, (c) => TSV_ESCAPE[c] as string) : s)

const ACTIVITY = new Set(['track', 'page', 'screen'])

/** The SQL of one measure's value over a group of attributed event rows (0 / ±inf when none: dropped from the map). */
function measureValue(p: Params, m: Measure): string {
  const sel = [`subject_type = ${p.str(m.subject)}`, ...selectorRaw(p, m)].join(' AND ')
  const v = m.property === undefined ? '' : numericProperty(p, m.property)
  switch (m.kind) {
    case 'count':
      return `toFloat64(countIf(${sel}))`
    case 'last':
      return `ifNull(toFloat64(maxOrNullIf(toUnixTimestamp64Milli(timestamp), ${sel})), -inf)`
    case 'sum':
      return `sumIf(ifNull(${v}, 0), ${sel} AND ${v} IS NOT NULL)`
    case 'nonnull':
      return `toFloat64(countIf(${sel} AND ${v} IS NOT NULL))`
    case 'max':
      return `ifNull(maxOrNullIf(${v}, ${sel} AND ${v} IS NOT NULL), -inf)`
    case 'min':
      return `ifNull(minOrNullIf(${v}, ${sel} AND ${v} IS NOT NULL), inf)`
    case 'decay':
      return `sumIf(${decayWeightAt(p, '(toInt64(toUInt32(toDate(timestamp))) + 1) * 86400000', m.halfLife)}, ${sel})`
  }
}

/** A map column of the measures stored in `map`, without their neutral values. */
function measureMap(p: Params, measures: Measure[], map: 'sums' | 'maxes' | 'mins'): string {
  const ms = measures.filter((m) => MAP_OF[m.kind] === map)
  if (!ms.length) return `CAST(map() AS Map(UInt32, Float64))`
  const neutral = map === 'sums' ? 'v != 0' : map === 'maxes' ? 'v != -inf' : 'v != inf'
  return `mapFilter((k, v) -> ${neutral}, CAST(map(${ms.map((m) => `${p.bind(m.key, 'UInt32')}, ${measureValue(p, m)}`).join(', ')}) AS Map(UInt32, Float64)))`
}

export const STATE_COLUMNS = 'subject_type, subject_id, user_key, day, raw_id, n, first_seen, last_seen, tags, events, event_last, sums, maxes, mins'

/**
 * State rows of the activity event rows `source` (a table expression aliased `event` with the
 * columns of BLOCK_COLUMNS), for the raw identities `ids` (an SQL set) they are sent under: each
 * event under its user (if it is one) and each account it belongs to.
 */
export function stateRows(p: Params, source: string, ids: string | undefined, measures: Measure[]): string {
  // The members of the users these events resolve to: the raw ids and what they link to (all of
  // them for a rebuild's slice, which meets most users anyway).
  const members = ids
    ? `SELECT user_id, groupUniqArray(account_id) AS accounts FROM memberships_v1
      WHERE user_id IN ${ids} OR user_id IN (SELECT user_id FROM (${identityLinks(ids)}))
      GROUP BY user_id`
    : `SELECT user_id, groupUniqArray(account_id) AS accounts FROM memberships_v1 GROUP BY user_id`
  return `SELECT owner.1 AS subject_type, owner.2 AS subject_id, user_key, toDate(timestamp) AS day, raw_id,
    toInt64(count()) AS n, min(timestamp) AS first_seen, max(timestamp) AS last_seen, groupUniqArray(account_id) AS tags,
    sumMap(map(event, toInt64(1))) AS events, maxMap(map(event, toUnixTimestamp64Milli(timestamp))) AS event_last,
    ${measureMap(p, measures, 'sums')} AS sums,
    ${measureMap(p, measures, 'maxes')} AS maxes,
    ${measureMap(p, measures, 'mins')} AS mins
  FROM (
    SELECT resolved.*, arrayConcat(if(resolved.known, [('user', resolved.user_key)], []), arrayMap(a -> ('account', a), ${accountsOf('resolved', 'members')})) AS owners
    FROM (
      SELECT event.*, ${rawIdentity('event')} AS raw_id, ${userKey('event', 'link')} AS user_key, ${isKnown('event', 'link')} AS known
      FROM ${source}
      LEFT ANY JOIN (${identityLinks(ids)}) AS link ON link.previous_id = ${rawIdentity('event')}
    ) AS resolved
    LEFT ANY JOIN (${members}) AS members ON members.user_id = resolved.user_key
  )
  ARRAY JOIN owners AS owner
  GROUP BY subject_type, subject_id, user_key, day, raw_id`
}

/** Whether a block row is activity (what the state counts). */
export const isActivity = (e: Pick<EventRow, 'type'>) => ACTIVITY.has(e.type)

/** The raw identity of an events row. */
export const rawIdOf = (e: Pick<EventRow, 'user_id' | 'anonymous_id'>) => e.user_id || e.anonymous_id

/**
 * Write the state rows of a block's activity events (those of `skip` raw ids excepted: restated
 * just before, from events_v1, which already holds this block).
 */
export async function writeBlock(store: Store, events: readonly EventRow[], measures: Measure[], skip?: ReadonlySet<string>): Promise<void> {
  const props = measures.some((m) => m.where?.length || m.property !== undefined)
  // A ClickHouse server reached over HTTP takes the parameters in the URL (1 MiB at most): there
  // the block goes in parts. The embedded engine takes it whole.
  const budget = store.kind === 'server' ? SERVER_BLOCK_BYTES : Number.POSITIVE_INFINITY
  let text = ''
  let ids = new Set<string>()
  const flush = async () => {
    if (!ids.size) return
    const p = new Params()
    const source = `format(TabSeparated, ${p.str(BLOCK_COLUMNS)}, ${p.str(text)}) AS event`
    await store.command(`INSERT INTO state_daily_v1 (${STATE_COLUMNS}) ${stateRows(p, source, p.bind([...ids], 'Array(String)'), measures)}\nSETTINGS join_use_nulls = 0`, p.values)
    text = ''
    ids = new Set()
  }
  for (const e of events) {
    if (!isActivity(e)) continue
    // An event with neither id (only rows written around the ingestion API, which requires one)
    // has the raw identity '': it counts for its tagged account, as the reference counts it.
    const raw = rawIdOf(e)
    if (skip?.has(raw)) continue
    ids.add(raw)
    // Properties only when a measure reads them: most blocks carry no property filter's events.
    text += `${tsv(e.user_id)}\t${tsv(e.anonymous_id)}\t${tsv(e.account_id)}\t${tsv(e.event)}\t${e.timestamp}\t${props ? tsv(e.properties) : '{}'}\n`
    if (text.length > budget) await flush()
  }
  await flush()
}

/** The most text of a block one state insert carries to a ClickHouse server (its parameters travel in the URL). */
const SERVER_BLOCK_BYTES = 300_000

/**
 * Cancel the state rows of the raw ids `ids` — or of a slice of all raw ids by hash (a rebuild) —
 * from day `fromDay` on (all days without it), and write them again from events_v1, in one insert.
 */
export async function restate(store: Store, ids: string[] | { hashSlice: { count: number; index: number } }, measures: Measure[], fromDay?: string): Promise<void> {
  const p = new Params()
  const slice = Array.isArray(ids) ? undefined : ids.hashSlice
  if (Array.isArray(ids) && ids.length === 0) return
  const idSet = Array.isArray(ids) ? p.bind(ids, 'Array(String)') : ''
  const from = fromDay ? p.bind(fromDay, 'Date') : ''
  // The raw ids of a slice: every id whose hash falls in it (rebuilds), found in the events.
  const sliceOf = (col: string) => (slice ? `cityHash64(${col}) % ${p.bind(slice.count, 'UInt64')} = ${p.bind(slice.index, 'UInt64')}` : '')
  const owned = slice
    ? `${sliceOf('raw_id')}`
    : `(subject_type, subject_id, user_key) IN (SELECT subject_type, subject_id, user_key FROM state_owners_v1 WHERE raw_id IN ${idSet}) AND raw_id IN ${idSet}`
  const cancel = `SELECT subject_type, subject_id, user_key, day, raw_id, -n AS n, toDateTime64('2299-12-31 23:59:59.999', 3, 'UTC') AS first_seen,
    toDateTime64(0, 3, 'UTC') AS last_seen, CAST([] AS Array(String)) AS tags, mapApply((k, v) -> (k, -v), events) AS events,
    CAST(map() AS Map(String, Int64)) AS event_last, mapApply((k, v) -> (k, -v), sums) AS sums,
    CAST(map() AS Map(UInt32, Float64)) AS maxes, CAST(map() AS Map(UInt32, Float64)) AS mins
  FROM state_daily_v1 FINAL
  WHERE ${owned} AND n != 0${from ? ` AND day >= ${from}` : ''}`
  const byId = slice
    ? sliceOf("if(user_id != '', user_id, anonymous_id)")
    : `(user_id IN ${idSet} OR (user_id = '' AND anonymous_id IN ${idSet}))`
  // Each message once, even one stored twice around the writer's dedup (the writer's blocks never hold one twice).
  const source = `(SELECT user_id, anonymous_id, account_id, event, timestamp, properties FROM events_v1
    WHERE type IN ('track', 'page', 'screen') AND ${byId}${from ? ` AND timestamp >= toDateTime64(${from}, 3, 'UTC')` : ''}
    LIMIT 1 BY message_key) AS event`
  await store.command(
    `INSERT INTO state_daily_v1 (${STATE_COLUMNS}) ${cancel}\nUNION ALL\n${stateRows(p, source, slice ? undefined : idSet, measures)}\nSETTINGS join_use_nulls = 0`,
    p.values,
  )
}

import type { SubjectType } from '../signals.js'
import { idChunks } from '../store/ids.js'
import type { Store } from '../store/store.js'
import { chTime } from '../time.js'

/** stage_transitions_v1 and the plan trait, as the lifecycle reads and writes them. */

export type TransitionRow = {
  subject_type: string
  subject_id: string
  id: string
  at: string
  from_stage: string
  to_stage: string
  cause_type: string
  cause: string
  reason: string
  /** Who made the move (migration 030); empty for automatic moves. */
  by: string
}

const COLUMNS = 'subject_type, subject_id, id, at, from_stage, to_stage, cause_type, cause, reason, by'

const SEEN = {
  account: { table: 'accounts_v1', column: 'account_id', traits: 'account_traits_v1' },
  user: { table: 'users_v1', column: 'user_id', traits: 'user_traits_v1' },
} as const

/** The latest transition of each of these subjects that has one. */
export async function latestTransitions(store: Store, type: SubjectType, ids: readonly string[]): Promise<TransitionRow[]> {
  const rows: TransitionRow[] = []
  for (const part of idChunks(ids)) {
    rows.push(
      ...(await store.query<TransitionRow>(
        `SELECT subject_type, subject_id, last.1 AS id, last.2 AS at, last.3 AS from_stage, last.4 AS to_stage,
                last.5 AS cause_type, last.6 AS cause, last.7 AS reason, last.8 AS by
         FROM (
           SELECT subject_type, subject_id,
                  argMax((id, at, from_stage, to_stage, cause_type, cause, reason, by), (at, id)) AS last
           FROM stage_transitions_v1 FINAL
           WHERE subject_type = {type:String} AND subject_id IN {ids:Array(String)}
           GROUP BY subject_type, subject_id
         )`,
        { type, ids: part },
      )),
    )
  }
  return rows
}

/** Every transition of a subject, oldest first. */
export function transitionsOf(store: Store, type: SubjectType, id: string): Promise<TransitionRow[]> {
  return store.query<TransitionRow>(
    `SELECT ${COLUMNS} FROM stage_transitions_v1 FINAL
     WHERE subject_type = {type:String} AND subject_id = {id:String} ORDER BY at, id`,
    { type, id },
  )
}

export function insertTransitions(store: Store, rows: (TransitionRow & { recorded_at: string })[]): Promise<void> {
  return store.insert('stage_transitions_v1', rows)
}

/** Each change of the `plan` trait (a row whose value differs from the one before it), of all subjects or the given ones, in time order per subject. */
export function planChanges(
  store: Store,
  type: SubjectType,
  ids: readonly string[] | undefined,
): Promise<{ subject_id: string; value: string; at: string; message_id: string }[]> {
  const seen = SEEN[type]
  const filter = ids ? ` AND ${seen.column} IN {ids:Array(String)}` : ''
  return store.query(
    `SELECT subject_id, value, at, message_id FROM (
       SELECT ${seen.column} AS subject_id, value, timestamp AS at, message_id,
              lagInFrame(value, 1, '') OVER (PARTITION BY ${seen.column} ORDER BY timestamp, message_id
                                              ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS previous
       FROM (SELECT DISTINCT ${seen.column}, value, timestamp, message_id FROM ${seen.traits} WHERE key = 'plan'${filter})
     ) WHERE value != previous ORDER BY subject_id, at, message_id`,
    ids ? { ids } : {},
  )
}

/** `subject_id|transition id` of the trait moves already recorded for these subjects. */
export async function traitMovesOf(store: Store, type: SubjectType, ids: readonly string[]): Promise<Set<string>> {
  const out = new Set<string>()
  for (const part of idChunks(ids)) {
    const rows = await store.query<{ id: string; subject_id: string }>(
      `SELECT DISTINCT subject_id, id FROM stage_transitions_v1
       WHERE subject_type = {type:String} AND cause_type = 'trait' AND subject_id IN {ids:Array(String)}`,
      { type, ids: part },
    )
    for (const r of rows) out.add(`${r.subject_id}|${r.id}`)
  }
  return out
}

/** One group of the funnel: a stage, and (when split) fired or not (1 / 0) and the month of entry; NULL where not split. */
export type FunnelRow = {
  stage: string
  fired: number | null
  cohort: string | null
  entered: number
  converted: number
  stalled: number
  q: (number | null)[]
  samples: number
}

export type FunnelQuery = {
  type: SubjectType
  from: number
  to: number
  first: string
  order: readonly string[]
  /** Split by whether the subject fired this rule by `to`. */
  signal?: string
  /** Split by month of entry. */
  cohort?: 'month'
}

/**
 * Per stage: entries in the period, conversions to a later stage, stalls, time-in-stage
 * quantiles. One pass, grouped per stage and, as asked, per fired / not fired and per month of
 * entry (group_by_use_nulls: a column outside a grouping set reads NULL).
 */
export function funnelRows(store: Store, q: FunnelQuery): Promise<FunnelRow[]> {
  const seen = SEEN[q.type]
  const signal = q.signal !== undefined
  const cohort = q.cohort === 'month'
  const sets = ['(stage)', ...(signal ? ['(stage, fired)'] : []), ...(cohort ? ['(stage, cohort)'] : []), ...(signal && cohort ? ['(stage, fired, cohort)'] : [])]
  return store.query<FunnelRow>(
    `WITH entries AS (
       SELECT subject_id, to_stage AS stage, at, id FROM stage_transitions_v1 FINAL
       WHERE subject_type = {type:String} AND at <= {to:DateTime64(3, 'UTC')}
       UNION ALL
       SELECT ${seen.column} AS subject_id, {first:String} AS stage, min(first_seen) AS at, '' AS id
       FROM ${seen.table} GROUP BY ${seen.column} HAVING at <= {to:DateTime64(3, 'UTC')}
     ),
     ranked AS (
       SELECT subject_id, stage, at, id, indexOf({order:Array(String)}, stage) AS rank FROM entries
     ),
     seq AS (
       SELECT subject_id, stage, at, rank,
              leadInFrame(toNullable(at)) OVER w AS next_at,
              max(rank) OVER (PARTITION BY subject_id ORDER BY at, id ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS later_rank
       FROM ranked
       WINDOW w AS (PARTITION BY subject_id ORDER BY at, id ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING)
     )
     SELECT stage,
            ${signal ? `subject_id IN (SELECT subject_id FROM signals_v1 WHERE rule_id = {rule:String} AND subject_type = {type:String} AND fired_at <= {to:DateTime64(3, 'UTC')})` : 'CAST(NULL AS Nullable(UInt8))'} AS fired,
            ${cohort ? 'toString(toStartOfMonth(at))' : 'CAST(NULL AS Nullable(String))'} AS cohort,
            uniqExact(subject_id) AS entered,
            uniqExactIf(subject_id, later_rank > rank) AS converted,
            uniqExactIf(subject_id, next_at IS NULL) AS stalled,
            quantilesExactInclusiveIf(0.5, 0.9)(toFloat64(dateDiff('millisecond', at, assumeNotNull(next_at))) / 1000, next_at IS NOT NULL) AS q,
            countIf(next_at IS NOT NULL) AS samples
     FROM seq
     WHERE at >= {from:DateTime64(3, 'UTC')}
     GROUP BY GROUPING SETS (${sets.join(', ')})
     SETTINGS group_by_use_nulls = 1`,
    { type: q.type, from: chTime(q.from), to: chTime(q.to), first: q.first, order: q.order, ...(signal ? { rule: q.signal } : {}) },
  )
}

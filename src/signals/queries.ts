import { SIGNAL_COLUMNS, type Signal, signalFromRow, type SignalRow, type SubjectType } from '../signals.js'
import { idChunks } from '../store/ids.js'
import { type Shard, shardFilter } from '../store/shard.js'
import type { Store } from '../store/store.js'
import { chTime, msFromCh } from '../time.js'

/**
 * Reading signals_v1 (each signal's current state is its row of the highest version: FINAL). The
 * API, the subjects pages and the evaluator ask these functions; none of them writes SQL of its own.
 */

const COLUMNS = SIGNAL_COLUMNS.join(', ')

/** Filters of a page of signals; they combine with AND, a list means any of its values. */
export type SignalFilter = {
  kind?: string[]
  rule_id?: string
  subject_type?: SubjectType
  subject_id?: string
  status?: ('open' | 'resolved')[]
  /** fired_at ≥ from (epoch ms) */
  from?: number
  /** fired_at < to (epoch ms) */
  to?: number
  /** The cursor: signals with a larger id. */
  after?: string
  limit: number
}

export type SignalPage = { data: Signal[]; next: string | null }

/** One page of signals (current state), in id order, oldest first. */
export async function querySignals(store: Store, q: SignalFilter): Promise<SignalPage> {
  const where: string[] = []
  const params: Record<string, unknown> = { limit: q.limit }
  const add = (sql: string, name: string, value: unknown) => {
    where.push(sql)
    params[name] = value
  }
  if (q.after) add('id > {after:String}', 'after', q.after)
  if (q.kind) add('kind IN {kind:Array(String)}', 'kind', q.kind)
  if (q.rule_id) add('rule_id = {rule_id:String}', 'rule_id', q.rule_id)
  if (q.subject_type) add('subject_type = {subject_type:String}', 'subject_type', q.subject_type)
  if (q.subject_id) add('subject_id = {subject_id:String}', 'subject_id', q.subject_id)
  if (q.from !== undefined) add("fired_at >= {from:DateTime64(3, 'UTC')}", 'from', chTime(q.from))
  if (q.to !== undefined) add("fired_at < {to:DateTime64(3, 'UTC')}", 'to', chTime(q.to))
  // Status is filtered after FINAL picks each signal's latest row.
  if (q.status) add('status IN {status:Array(String)}', 'status', q.status)
  const rows = await store.query<SignalRow>(
    `SELECT ${COLUMNS} FROM signals_v1 FINAL ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
     ORDER BY id LIMIT {limit:UInt32}`,
    params,
  )
  const data = rows.map(signalFromRow)
  return { data, next: data.length === q.limit ? (data[data.length - 1]?.id ?? null) : null }
}

export async function getSignal(store: Store, id: string): Promise<Signal | undefined> {
  const [row] = await store.query<SignalRow>(`SELECT ${COLUMNS} FROM signals_v1 FINAL WHERE id = {id:String}`, { id })
  return row && signalFromRow(row)
}

/** The signals with these ids (any number of them), in no particular order. */
export async function signalsById(store: Store, ids: readonly string[]): Promise<Signal[]> {
  const out: Signal[] = []
  for (const part of idChunks(ids)) {
    const rows = await store.query<SignalRow>(`SELECT ${COLUMNS} FROM signals_v1 FINAL WHERE id IN {ids:Array(String)}`, { ids: part })
    out.push(...rows.map(signalFromRow))
  }
  return out
}

/** A subject's open signals, in id order. */
export async function openSignalsOf(store: Store, type: SubjectType, id: string): Promise<Signal[]> {
  const rows = await store.query<SignalRow>(
    `SELECT ${COLUMNS} FROM signals_v1 FINAL WHERE subject_type = {type:String} AND subject_id = {id:String} AND status = 'open' ORDER BY id`,
    { type, id },
  )
  return rows.map(signalFromRow)
}

/** The open signals of rules not in `ruleIds` (rules deleted since), of one shard's subjects. */
export async function openSignalsOfOtherRules(store: Store, ruleIds: readonly string[], shard?: Shard): Promise<Signal[]> {
  const part = shardFilter('subject_id', shard)
  const rows = await store.query<SignalRow>(
    `SELECT ${COLUMNS} FROM signals_v1 FINAL WHERE status = 'open' AND rule_id NOT IN {known:Array(String)}${part ? ` AND ${part.sql}` : ''}`,
    { known: ruleIds, ...part?.params },
  )
  return rows.map(signalFromRow)
}

/** `id|status` of each of these signals that is stored. */
export async function signalStatuses(store: Store, ids: readonly string[]): Promise<Set<string>> {
  const out = new Set<string>()
  for (const part of idChunks(ids)) {
    const rows = await store.query<{ id: string; status: string }>('SELECT id, status FROM signals_v1 FINAL WHERE id IN {ids:Array(String)}', { ids: part })
    for (const r of rows) out.add(`${r.id}|${r.status}`)
  }
  return out
}

/** The latest signal of a rule and subject: what the evaluator decides from. */
export type LatestSignal = { ruleId: string; subjectId: string; id: string; status: 'open' | 'resolved'; firedAt: number }

/** The latest signal of each (rule, subject), for some rules of one subject type, all subjects or the given ones, of one shard. */
export async function latestSignals(
  store: Store,
  ruleIds: readonly string[],
  subjectType: string,
  subjectIds: readonly string[] | undefined,
  shard?: Shard,
): Promise<LatestSignal[]> {
  const filters = ['rule_id IN {rules:Array(String)}', 'subject_type = {type:String}']
  const params: Record<string, unknown> = { rules: ruleIds, type: subjectType }
  if (subjectIds) {
    filters.push('subject_id IN {ids:Array(String)}')
    params.ids = subjectIds
  }
  const part = shardFilter('subject_id', shard)
  if (part) {
    filters.push(part.sql)
    Object.assign(params, part.params)
  }
  const rows = await store.query<{ rule_id: string; subject_id: string; last_id: string; last_status: string; last_fired_at: string }>(
    `SELECT rule_id, subject_id, argMax(id, (fired_at, id)) AS last_id, argMax(status, (fired_at, id)) AS last_status,
            max(fired_at) AS last_fired_at
     FROM signals_v1 FINAL WHERE ${filters.join(' AND ')} GROUP BY rule_id, subject_id`,
    params,
  )
  return rows.map((r) => ({
    ruleId: r.rule_id,
    subjectId: r.subject_id,
    id: r.last_id,
    status: r.last_status === 'open' ? 'open' : 'resolved',
    firedAt: msFromCh(r.last_fired_at),
  }))
}

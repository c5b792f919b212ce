import { chTime, isoFromCh } from '../time.js'
import { SIGNAL_COLUMNS, type Signal, signalFromRow, type SignalRow, type SubjectType } from '../signals.js'
import type { Store } from '../store/store.js'

/**
 * The reads only the workspace makes (the inbox with a stage filter, the accounts list, the labels
 * that name a subject). Figures the API also shows (profiles, usage, funnel, rules) come from the
 * API's own query functions, never from here.
 */

export type InboxQuery = {
  kind?: string
  rule_id?: string
  /** The subject's current stage. */
  stage?: string
  status?: 'open' | 'resolved'
  /** The cursor: signals older than this id (the inbox is newest first). */
  before?: string
  /** Signals newer than this id (what the live inbox has not shown yet). */
  after?: string
  ids?: string[]
  subject?: { type: SubjectType; id: string }
  limit: number
}

const COLUMNS = SIGNAL_COLUMNS.join(', ')

/** Subjects whose latest stage transition went to a stage (`type`, `id` pairs). */
const STAGE_OF = `SELECT subject_type, subject_id FROM stage_transitions_v1 FINAL
  GROUP BY subject_type, subject_id HAVING argMax(to_stage, (at, id)) = {stage:String}`
const MOVED_FROM_FIRST = `SELECT subject_type, subject_id FROM stage_transitions_v1 FINAL
  GROUP BY subject_type, subject_id HAVING argMax(to_stage, (at, id)) != {stage:String}`

/** Signals newest first. A subject never moved is in the first stage (it has no transition row). */
export async function inboxSignals(store: Store, q: InboxQuery, firstStage: string): Promise<{ data: Signal[]; next: string | null }> {
  const where: string[] = []
  const params: Record<string, unknown> = { limit: q.limit }
  const add = (sql: string, name: string, value: unknown) => {
    where.push(sql)
    params[name] = value
  }
  if (q.before) add('id < {before:String}', 'before', q.before)
  if (q.after) add('id > {after:String}', 'after', q.after)
  if (q.ids) add('id IN {ids:Array(String)}', 'ids', q.ids)
  if (q.subject) {
    add('subject_type = {subject_type:String}', 'subject_type', q.subject.type)
    add('subject_id = {subject_id:String}', 'subject_id', q.subject.id)
  }
  if (q.kind) add('kind = {kind:String}', 'kind', q.kind)
  if (q.rule_id) add('rule_id = {rule_id:String}', 'rule_id', q.rule_id)
  if (q.status) add('status = {status:String}', 'status', q.status)
  if (q.stage) {
    add(q.stage === firstStage ? `(subject_type, subject_id) NOT IN (${MOVED_FROM_FIRST})` : `(subject_type, subject_id) IN (${STAGE_OF})`, 'stage', q.stage)
  }
  const rows = await store.query<SignalRow>(
    `SELECT ${COLUMNS} FROM signals_v1 FINAL ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
     ORDER BY id DESC LIMIT {limit:UInt32}`,
    params,
  )
  const data = rows.map(signalFromRow)
  return { data, next: data.length === q.limit ? (data.at(-1)?.id ?? null) : null }
}

/** What names a subject on a page: an account's name and domain, a user's email and name. */
export type Label = { name?: string; email?: string; domain?: string; plan?: string }

const LABEL_TRAITS = ['name', 'email', 'domain', 'website', 'company', 'plan', 'first_name', 'last_name']
const TRAITS = { account: ['account_traits_v1', 'account_id'], user: ['user_traits_v1', 'user_id'] } as const

function traitString(raw: string): string | undefined {
  try {
    const v = JSON.parse(raw) as unknown
    return typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined
  } catch {
    return raw || undefined
  }
}

export async function subjectLabels(store: Store, type: SubjectType, ids: readonly string[]): Promise<Map<string, Label>> {
  const out = new Map<string, Label>()
  if (ids.length === 0) return out
  const [table, column] = TRAITS[type]
  const rows = await store.query<{ id: string; key: string; value: string }>(
    `SELECT ${column} AS id, key, argMax(value, (timestamp, message_id)) AS value FROM ${table}
     WHERE ${column} IN {ids:Array(String)} AND key IN {keys:Array(String)} GROUP BY id, key`,
    { ids: [...new Set(ids)], keys: LABEL_TRAITS },
  )
  const traits = new Map<string, Record<string, string>>()
  for (const r of rows) {
    const v = traitString(r.value)
    if (v === undefined) continue
    traits.set(r.id, { ...(traits.get(r.id) ?? {}), [r.key]: v })
  }
  for (const [id, t] of traits) {
    const person = [t.first_name, t.last_name].filter(Boolean).join(' ')
    out.set(id, {
      name: t.name ?? t.company ?? (person || undefined),
      email: t.email,
      domain: t.domain ?? t.website?.replace(/^https?:\/\//, '').replace(/\/.*$/, ''),
      plan: t.plan,
    })
  }
  return out
}

/** Labels for the subjects of some signals, both types in one go. */
export async function labelsFor(store: Store, subjects: readonly { type: SubjectType; id: string }[]): Promise<Map<string, Label>> {
  const [accounts, users] = await Promise.all([
    subjectLabels(store, 'account', subjects.filter((s) => s.type === 'account').map((s) => s.id)),
    subjectLabels(store, 'user', subjects.filter((s) => s.type === 'user').map((s) => s.id)),
  ])
  const out = new Map<string, Label>()
  for (const [id, l] of accounts) out.set(`account:${id}`, l)
  for (const [id, l] of users) out.set(`user:${id}`, l)
  return out
}

export const ACCOUNT_SORTS = ['last_seen', 'name', 'open_signals', 'stage', 'first_seen'] as const
export type AccountSort = (typeof ACCOUNT_SORTS)[number]

export type AccountListQuery = { q?: string; sort: AccountSort; dir: 'asc' | 'desc'; offset: number; limit: number }

export type AccountListRow = {
  id: string
  name: string | null
  domain: string | null
  plan: string | null
  stage: string
  open_signals: number
  members: number
  first_seen: string
  last_seen: string
}


/**
 * One page of accounts with what the list shows and sorts by: the latest name/domain/plan traits,
 * the current stage, open signals, members, first and last seen. Search matches the id, name or
 * domain (case-insensitive substring).
 */
export async function accountList(store: Store, q: AccountListQuery, firstStage: string): Promise<{ rows: AccountListRow[]; total: number }> {
  const order = {
    last_seen: 'last_seen',
    first_seen: 'first_seen',
    name: "lower(if(name != '', name, id))",
    open_signals: 'open_signals',
    stage: 'stage',
  }[q.sort]
  const search = q.q?.trim()
  const rows = await store.query<{
    id: string
    name: string
    domain: string
    plan: string
    stage: string
    open_signals: number
    members: number
    first_seen: string
    last_seen: string
    total: number
  }>(
    `WITH
       traits AS (
         SELECT account_id, argMaxIf(value, (timestamp, message_id), key = 'name') AS name_raw,
                argMaxIf(value, (timestamp, message_id), key = 'domain') AS domain_raw,
                argMaxIf(value, (timestamp, message_id), key = 'plan') AS plan_raw
         FROM account_traits_v1 WHERE key IN ('name', 'domain', 'plan') GROUP BY account_id),
       stages AS (
         SELECT subject_id, argMax(to_stage, (at, id)) AS stage FROM stage_transitions_v1 FINAL
         WHERE subject_type = 'account' GROUP BY subject_id),
       open AS (
         SELECT subject_id, count() AS n FROM signals_v1 FINAL
         WHERE subject_type = 'account' AND status = 'open' GROUP BY subject_id),
       members AS (SELECT account_id, uniqExact(user_id) AS n FROM memberships_v1 GROUP BY account_id)
     SELECT a.account_id AS id,
            ifNull(JSONExtractString(t.name_raw), '') AS name,
            ifNull(JSONExtractString(t.domain_raw), '') AS domain,
            ifNull(JSONExtractString(t.plan_raw), '') AS plan,
            if(s.stage = '', {first:String}, s.stage) AS stage,
            ifNull(o.n, 0) AS open_signals,
            ifNull(m.n, 0) AS members,
            a.first_seen AS first_seen, a.last_seen AS last_seen,
            count() OVER () AS total
     FROM (SELECT account_id, min(first_seen) AS first_seen, max(last_seen) AS last_seen FROM accounts_v1 GROUP BY account_id) AS a
     LEFT JOIN traits AS t ON t.account_id = a.account_id
     LEFT JOIN stages AS s ON s.subject_id = a.account_id
     LEFT JOIN open AS o ON o.subject_id = a.account_id
     LEFT JOIN members AS m ON m.account_id = a.account_id
     ${search ? 'WHERE positionCaseInsensitiveUTF8(id, {q:String}) > 0 OR positionCaseInsensitiveUTF8(name, {q:String}) > 0 OR positionCaseInsensitiveUTF8(domain, {q:String}) > 0' : ''}
     ORDER BY ${order} ${q.dir === 'asc' ? 'ASC' : 'DESC'}, id
     LIMIT {limit:UInt32} OFFSET {offset:UInt32}`,
    { first: firstStage, limit: q.limit, offset: q.offset, ...(search ? { q: search } : {}) },
  )
  return {
    total: Number(rows[0]?.total ?? 0),
    rows: rows.map((r) => ({
      id: r.id,
      name: r.name || null,
      domain: r.domain || null,
      plan: r.plan || null,
      stage: r.stage,
      open_signals: Number(r.open_signals),
      members: Number(r.members),
      first_seen: isoFromCh(r.first_seen),
      last_seen: isoFromCh(r.last_seen),
    })),
  }
}

/** The rules' fires over the last `days` days, per rule (for the rules list). */
export async function firesPerRule(store: Store, now: number, days: number): Promise<Map<string, number>> {
  const rows = await store.query<{ rule_id: string; n: number }>(
    `SELECT rule_id, count() AS n FROM signals_v1 FINAL WHERE fired_at > {from:DateTime64(3, 'UTC')} GROUP BY rule_id`,
    { from: chTime(now - days * 86_400_000) },
  )
  return new Map(rows.map((r) => [r.rule_id, Number(r.n)]))
}

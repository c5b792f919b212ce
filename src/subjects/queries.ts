import { parseJson as parseStoredJson } from '../../ingest/json.js'
import { attributedEvents, boundLinks, ownedBy } from '../../rules/attribution.js'
import { Params } from '../../rules/compile/sql.js'
import { loadScope } from '../../rules/scope.js'
import type { SubjectType } from '../signals.js'
import { idChunks } from '../store/ids.js'
import type { Store } from '../store/store.js'
import { chTime, isoFromCh, utcDate } from '../time.js'

/** What accounts and users are, as stored (accounts_v1 / users_v1, their traits, memberships_v1). */

const DAY = 86_400_000
export const USAGE_DAYS = 30

export type UsageDay = { day: string; events: number; active_users: number }

const T = {
  account: { seen: 'accounts_v1', column: 'account_id', traits: 'account_traits_v1', other: 'user_id' },
  user: { seen: 'users_v1', column: 'user_id', traits: 'user_traits_v1', other: 'account_id' },
} as const

/**
 * A subject's activity per UTC day over the last `days` days (default USAGE_DAYS), oldest first, days without
 * activity included: distinct messages and distinct users, attributed as the rules attribute them
 * (rules/attribution.ts), so a chart and the figure a rule fired on agree.
 */
export async function usagePerDay(store: Store, type: SubjectType, id: string, now: number, days: number = USAGE_DAYS): Promise<UsageDay[]> {
  const today = Math.floor(now / DAY) * DAY
  const start = today - (days - 1) * DAY
  // The raw ids that can be the subject's and their resolution: what an incremental rule run reads.
  const scope = await loadScope(store, type, [id], now)
  const p = new Params()
  const ids = p.bind([id], 'Array(String)')
  const source = `(SELECT user_id, anonymous_id, account_id, timestamp, message_key FROM events_v1
    WHERE type IN ('track', 'page', 'screen') AND timestamp >= ${p.time(start)} AND timestamp <= ${p.time(now)}
      AND ${ownedBy(p.bind(scope.keys, 'Array(String)'), type === 'account' ? ids : undefined)}) AS event`
  const attributed = attributedEvents(type, { source, links: boundLinks(p, scope.links), ids, cols: ['timestamp', 'message_key'] })
  const rows = await store.query<{ day: string; events: number; active_users: number }>(
    `SELECT toString(toDate(timestamp)) AS day, uniqExact(message_key) AS events, uniqExact(user_key) AS active_users
     FROM (${attributed})
     GROUP BY day
     SETTINGS join_use_nulls = 0`,
    p.values,
  )
  const byDay = new Map(rows.map((r) => [r.day, r]))
  return Array.from({ length: days }, (_, i) => {
    const day = utcDate(start + i * DAY)
    const r = byDay.get(day)
    return { day, events: Number(r?.events ?? 0), active_users: Number(r?.active_users ?? 0) }
  })
}

/** When a subject was first and last seen (ISO 8601), or undefined if it never was. */
export async function subjectSeen(store: Store, type: SubjectType, id: string): Promise<{ first_seen: string; last_seen: string } | undefined> {
  const t = T[type]
  const [row] = await store.query<{ first_seen: string; last_seen: string }>(
    `SELECT min(first_seen) AS first_seen, max(last_seen) AS last_seen FROM ${t.seen} WHERE ${t.column} = {id:String} HAVING count() > 0`,
    { id },
  )
  return row && { first_seen: isoFromCh(row.first_seen), last_seen: isoFromCh(row.last_seen) }
}

/** A subject's latest value of each trait as of `now`, in key order (values parsed from JSON where they are JSON; write them out with ingest/json stringifyJson). */
export async function latestTraits(store: Store, type: SubjectType, id: string, now: number): Promise<Record<string, unknown>> {
  const t = T[type]
  const rows = await store.query<{ key: string; value: string }>(
    `SELECT key, argMax(value, (timestamp, message_id)) AS value FROM ${t.traits}
     WHERE ${t.column} = {id:String} AND timestamp <= {now:DateTime64(3, 'UTC')} GROUP BY key ORDER BY key`,
    { id, now: chTime(now) },
  )
  return Object.fromEntries(rows.map((r) => [r.key, parseJson(r.value)]))
}

export type Member = { id: string; first_seen: string; last_seen: string }

/** An account's users, or a user's accounts: the 1,000 seen most recently, latest first. */
export async function membersOf(store: Store, type: SubjectType, id: string): Promise<Member[]> {
  const t = T[type]
  const rows = await store.query<Member>(
    `SELECT ${t.other} AS id, min(first_seen) AS first_seen, max(last_seen) AS last_seen FROM memberships_v1
     WHERE ${t.column} = {id:String} GROUP BY id ORDER BY last_seen DESC LIMIT 1000`,
    { id },
  )
  return rows.map((m) => ({ id: m.id, first_seen: isoFromCh(m.first_seen), last_seen: isoFromCh(m.last_seen) }))
}

/** A stored JSON value, numbers as sent (an integer beyond 2^53 comes back as a LosslessNumber); text that is not JSON as is. */
function parseJson(s: string): unknown {
  try {
    return parseStoredJson(s).value
  } catch {
    return s
  }
}

/** When each of these subjects was first seen (ISO 8601); subjects never seen are absent. */
export async function firstSeen(store: Store, type: SubjectType, ids: readonly string[]): Promise<Map<string, string>> {
  const t = T[type]
  const out = new Map<string, string>()
  for (const part of idChunks(ids)) {
    const rows = await store.query<{ id: string; first_seen: string }>(
      `SELECT ${t.column} AS id, min(first_seen) AS first_seen FROM ${t.seen} WHERE ${t.column} IN {ids:Array(String)} GROUP BY id`,
      { ids: part },
    )
    for (const r of rows) out.set(r.id, isoFromCh(r.first_seen))
  }
  return out
}

/** The accounts each of these users belongs to (users in none are absent). */
export async function accountsOfUsers(store: Store, userIds: readonly string[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>()
  for (const ids of idChunks(userIds)) {
    const rows = await store.query<{ user_id: string; account_id: string }>(
      'SELECT DISTINCT user_id, account_id FROM memberships_v1 WHERE user_id IN {ids:Array(String)}',
      { ids },
    )
    for (const r of rows) out.set(r.user_id, [...(out.get(r.user_id) ?? []), r.account_id])
  }
  return out
}

/** The users each of these ids (anonymous ids, aliased user ids) was joined to by identify or alias: one hop. */
export async function usersJoinedTo(store: Store, previousIds: readonly string[]): Promise<{ previous_id: string; user_id: string }[]> {
  const out: { previous_id: string; user_id: string }[] = []
  for (const ids of idChunks(previousIds)) {
    out.push(...(await store.query<{ previous_id: string; user_id: string }>('SELECT DISTINCT previous_id, user_id FROM identities_v1 WHERE previous_id IN {ids:Array(String)}', { ids })))
  }
  return out
}

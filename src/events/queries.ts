import { z } from 'zod'
import type { EventRow } from '../../ingest/normalize.js'
import type { IngestErrorRow } from '../../ingest/writer.js'
import type { Store } from '../store/store.js'
import { chTime, isoFromCh, msFromCh } from '../time.js'

/**
 * Stored events and rejected messages as they arrived, newest first, for the events debugger
 * (`GET /v1/events`, `GET /v1/ingest-errors`, the workspace's /events). Pages are cut with an
 * opaque cursor of the last row's (received_at, key), so rows arriving meanwhile never shift a page.
 */

/** `[received_at ms, …key]` as base64url JSON. */
const Cursor = z.tuple([z.number().int(), z.string(), z.string()])
export type Cursor = z.infer<typeof Cursor>

export const encodeCursor = (c: Cursor) => Buffer.from(JSON.stringify(c)).toString('base64url')
export function decodeCursor(s: string): Cursor | undefined {
  try {
    return Cursor.parse(JSON.parse(Buffer.from(s, 'base64url').toString('utf8')))
  } catch {
    return undefined
  }
}

function json(s: string): unknown {
  if (s === '') return null
  try {
    return JSON.parse(s)
  } catch {
    return s
  }
}

export type StoredEvent = {
  message_id: string
  source: string
  type: string
  event: string
  user_id: string | null
  anonymous_id: string | null
  account_id: string | null
  timestamp: string
  received_at: string
  properties: unknown
  traits: unknown
  context: unknown
  cursor: string
}

export type EventQuery = {
  subject_type?: 'account' | 'user'
  subject_id?: string
  event?: string
  before?: Cursor
  after?: Cursor
  limit: number
}

/**
 * Events newest first by arrival. A subject filter matches the stored row's own ids: an account's
 * events tagged with its id (`context.groupId`, or group calls), a user's events by user id or
 * anonymous id — what was sent, not the rules' attribution.
 */
export async function listEvents(store: Store, q: EventQuery): Promise<{ data: StoredEvent[]; next: string | null }> {
  const where: string[] = []
  const params: Record<string, unknown> = { limit: q.limit + 1 }
  if (q.subject_id && q.subject_type === 'account') where.push('account_id = {sid:String}')
  else if (q.subject_id && q.subject_type === 'user') where.push('(user_id = {sid:String} OR anonymous_id = {sid:String})')
  else if (q.subject_id) where.push('(account_id = {sid:String} OR user_id = {sid:String} OR anonymous_id = {sid:String})')
  if (q.subject_id) params.sid = q.subject_id
  if (q.event) {
    where.push('event = {event:String}')
    params.event = q.event
  }
  for (const [name, c, op] of [['b', q.before, '<'], ['a', q.after, '>']] as const) {
    if (!c) continue
    where.push(`(received_at, source, message_id) ${op} ({${name}t:DateTime64(3, 'UTC')}, {${name}s:String}, {${name}m:String})`)
    Object.assign(params, { [`${name}t`]: chTime(c[0]), [`${name}s`]: c[1], [`${name}m`]: c[2] })
  }
  const rows = await store.query<Omit<EventRow, 'original_timestamp' | 'sent_at' | 'previous_id'>>(
    `SELECT message_id, source, type, event, user_id, anonymous_id, account_id, timestamp, received_at, properties, traits, context
     FROM events_v1 ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
     ORDER BY received_at DESC, source DESC, message_id DESC LIMIT {limit:UInt32}`,
    params,
  )
  const page = rows.slice(0, q.limit).map((r) => ({
    message_id: r.message_id,
    source: r.source,
    type: r.type,
    event: r.event,
    user_id: r.user_id || null,
    anonymous_id: r.anonymous_id || null,
    account_id: r.account_id || null,
    timestamp: isoFromCh(r.timestamp),
    received_at: isoFromCh(r.received_at),
    properties: json(r.properties),
    traits: json(r.traits),
    context: json(r.context),
    cursor: encodeCursor([msFromCh(r.received_at), r.source, r.message_id]),
  }))
  return { data: page, next: rows.length > q.limit ? (page.at(-1)?.cursor ?? null) : null }
}

export type IngestError = {
  id: string
  received_at: string
  source: string
  level: 'error' | 'warning'
  route: string
  batch_index: number | null
  message_id: string | null
  path: string
  message: string
  payload: unknown
  cursor: string
}

export type IngestErrorQuery = { level?: 'error' | 'warning'; before?: Cursor; after?: Cursor; limit: number }

/** Rejected (level error) and corrected (level warning) messages, newest first, with the reason and what was sent. */
export async function listIngestErrors(store: Store, q: IngestErrorQuery): Promise<{ data: IngestError[]; next: string | null }> {
  const where: string[] = []
  const params: Record<string, unknown> = { limit: q.limit + 1 }
  if (q.level) {
    where.push('level = {level:String}')
    params.level = q.level
  }
  for (const [name, c, op] of [['b', q.before, '<'], ['a', q.after, '>']] as const) {
    if (!c) continue
    where.push(`(received_at, id) ${op} ({${name}t:DateTime64(3, 'UTC')}, {${name}i:String})`)
    Object.assign(params, { [`${name}t`]: chTime(c[0]), [`${name}i`]: c[2] })
  }
  const rows = await store.query<IngestErrorRow>(
    `SELECT id, received_at, source, level, route, batch_index, message_id, path, message, payload FROM ingest_errors_v1
     ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
     ORDER BY received_at DESC, id DESC LIMIT {limit:UInt32}`,
    params,
  )
  const page = rows.slice(0, q.limit).map((r) => ({
    id: r.id,
    received_at: isoFromCh(r.received_at),
    source: r.source,
    level: r.level === 'warning' ? ('warning' as const) : ('error' as const),
    route: r.route,
    batch_index: Number(r.batch_index) >= 0 ? Number(r.batch_index) : null,
    message_id: r.message_id || null,
    path: r.path,
    message: r.message,
    payload: json(r.payload),
    cursor: encodeCursor([msFromCh(r.received_at), '', r.id]),
  }))
  return { data: page, next: rows.length > q.limit ? (page.at(-1)?.cursor ?? null) : null }
}

import { ulid } from 'ulid'
import { chTime } from '../src/time.js'
import { stringifyJson } from './json.js'
import type { Message } from './schema.js'

/** A correction made while storing a message, recorded as an ingestion warning. */
export type Warning = { path: string; message: string }

export type EventRow = {
  source: string
  message_id: string
  type: string
  event: string
  user_id: string
  anonymous_id: string
  account_id: string
  timestamp: string
  original_timestamp: string | null
  sent_at: string | null
  received_at: string
  properties: string
  traits: string
  context: string
  previous_id: string
}

/** Segment's rule: a timestamp more than this far ahead of the server's clock is not believed. */
export const FUTURE_LIMIT_MS = 23 * 60 * 60 * 1000

/**
 * Clock-skew correction as Segment does it: the client's clock may be wrong, but the interval
 * between the event and the send is right, so `timestamp = receivedAt − (sentAt − originalTimestamp)`.
 * Without `sentAt` the original is taken as is; without either, `receivedAt`. A result more than
 * 23 hours in the future is replaced by `receivedAt`, with a warning. A `sentAt` so far from the
 * original that the corrected time leaves the years a DateTime64 holds keeps the original, also
 * with a warning.
 */
export function correctTimestamp(
  original: number | undefined,
  sentAt: number | undefined,
  receivedAt: number,
): { timestamp: number; warning?: Warning } {
  let ts = original ?? receivedAt
  if (original !== undefined && sentAt !== undefined) ts = receivedAt - (sentAt - original)
  if (ts - receivedAt > FUTURE_LIMIT_MS) {
    return {
      timestamp: receivedAt,
      warning: { path: 'timestamp', message: `timestamp ${iso(ts)} is more than 23h in the future; stored as receivedAt` },
    }
  }
  if (ts < MIN_TIMESTAMP_MS && original !== undefined) {
    return {
      timestamp: original,
      warning: { path: 'sentAt', message: `the clock-skew correction gives ${iso(ts)}, before 1900; stored the original timestamp` },
    }
  }
  return { timestamp: ts }
}

const MIN_TIMESTAMP_MS = Date.UTC(1900, 0, 1)
const iso = (ms: number) => (Number.isFinite(ms) && Math.abs(ms) < 8.64e15 ? new Date(ms).toISOString() : String(ms))

const EVENT_NAME = { page: 'Page Viewed', screen: 'Screen Viewed' } as const

/**
 * Turn a validated message into its events row. `page` and `screen` become the events
 * `Page Viewed` / `Screen Viewed` with their `name` and `category` in the properties. `lossless`:
 * the message came from a body parsed losslessly, so its JSON is written with every number's digits as sent.
 */
export function toEventRow(
  msg: Message,
  source: string,
  receivedAt: number,
  batchSentAt?: number,
  lossless = false,
): { row: EventRow; warning?: Warning } {
  const json = lossless ? (v: unknown) => stringifyJson(v, true) : JSON.stringify
  const original = msg.originalTimestamp ?? msg.timestamp ?? undefined
  const sentAt = msg.sentAt ?? batchSentAt
  const { timestamp, warning } = correctTimestamp(original, sentAt, receivedAt)
  let event = ''
  let properties: Record<string, unknown> | undefined
  let traits: Record<string, unknown> | undefined
  let account = typeof msg.context?.groupId === 'string' ? msg.context.groupId : ''
  switch (msg.type) {
    case 'track':
      event = msg.event
      properties = msg.properties
      break
    case 'page':
    case 'screen':
      event = EVENT_NAME[msg.type]
      properties = {
        ...(msg.properties ?? {}),
        ...(msg.name != null ? { name: msg.name } : {}),
        ...(msg.category != null ? { category: msg.category } : {}),
      }
      break
    case 'identify':
      traits = msg.traits ?? (msg.context?.traits as Record<string, unknown> | undefined)
      break
    case 'group':
      traits = msg.traits
      account = msg.groupId
      break
  }
  return {
    row: {
      source,
      message_id: msg.messageId ?? `sb-${ulid()}`,
      type: msg.type,
      event,
      user_id: msg.userId ?? '',
      anonymous_id: msg.anonymousId ?? '',
      account_id: account,
      timestamp: chTime(timestamp),
      original_timestamp: original === undefined ? null : chTime(original),
      sent_at: sentAt === undefined ? null : chTime(sentAt),
      received_at: chTime(receivedAt),
      // As `JSON.stringify(x ?? {})`, without serialising an empty object each time.
      properties: properties == null ? '{}' : json(properties),
      traits: traits == null ? '{}' : json(traits),
      context: msg.context == null ? '{}' : json(msg.context),
      previous_id: msg.type === 'alias' ? msg.previousId : '',
    },
    warning,
  }
}

/**
 * The columns of an events row as `eventsTsv` writes them. `received_at` comes last: it is never
 * empty, so no row ends in whitespace (which an HTTP client trimming the statement would cut).
 */
export const EVENT_COLUMNS = [
  'source',
  'message_id',
  'type',
  'event',
  'user_id',
  'anonymous_id',
  'account_id',
  'timestamp',
  'original_timestamp',
  'sent_at',
  'properties',
  'traits',
  'context',
  'previous_id',
  'received_at',
] as const satisfies readonly (keyof EventRow)[]

const TSV_ESCAPE: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r', '\0': '\\0' }

/** A string as a TabSeparated field: backslash, tab, newline, carriage return and NUL escaped. */
export function tsvField(s: string): string {
  // Five indexOf scans cost a fifth of one regular-expression test on a JSON text of a few
  // hundred characters, and most fields need no escape at all.
  if (s.indexOf('\\') < 0 && s.indexOf('\t') < 0 && s.indexOf('\n') < 0 && s.indexOf('\r') < 0 && s.indexOf('\0') < 0) return s
  return s.replace(/[\\\t\n\r\0]/g, (c) => TSV_ESCAPE[c] as string)
}

/**
 * Events rows as TabSeparated text in `EVENT_COLUMNS` order, one `\n`-terminated line per row:
 * the cheapest text for ClickHouse to parse, and cheap to write (most fields need no escaping).
 */
export function eventsTsv(rows: readonly EventRow[]): string {
  let text = ''
  for (const r of rows) {
    text +=
      `${tsvField(r.source)}\t${tsvField(r.message_id)}\t${tsvField(r.type)}\t${tsvField(r.event)}\t${tsvField(r.user_id)}\t` +
      `${tsvField(r.anonymous_id)}\t${tsvField(r.account_id)}\t${r.timestamp}\t${r.original_timestamp ?? '\\N'}\t${r.sent_at ?? '\\N'}\t` +
      `${tsvField(r.properties)}\t${tsvField(r.traits)}\t${tsvField(r.context)}\t${tsvField(r.previous_id)}\t${r.received_at}\n`
  }
  return text
}

import { z } from 'zod'
import { LosslessNumber } from './json.js'

/** Segment's limits, as its own libraries expect them. */
export const LIMITS = {
  requestBytes: 500 * 1024,
  messageBytes: 32 * 1024,
  batchMessages: 2500,
} as const

export const MESSAGE_TYPES = ['track', 'identify', 'group', 'page', 'screen', 'alias'] as const
export type MessageType = (typeof MESSAGE_TYPES)[number]

/**
 * Ids may be sent as numbers by some libraries; they are stored as text, with every digit as sent
 * (an id beyond 2^53 arrives as a `LosslessNumber`, see ingest/json.ts).
 */
const id = z.union([z.string().min(1, 'must not be empty').max(1024), z.number().transform(String), z.instanceof(LosslessNumber).transform(String)])

/**
 * An ISO-8601 date or date-time (`T` or space, seconds and fraction optional, `Z`, `±HH:MM`,
 * `±HHMM` or `±HH`; none means UTC), as the Segment libraries of every language write them,
 * parsed to epoch milliseconds. Calendar-checked (no 30 February) and kept within the years
 * ClickHouse's DateTime64 holds, so every accepted message is insertable: one bad timestamp must
 * never fail the insert that a whole group commit shares.
 */
const time = z.string().transform((text, ctx) => {
  const ms = parseTimestamp(text)
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: 'must be an ISO-8601 date-time between the years 1900 and 2299' })
    return z.NEVER
  }
  return ms
})

const ISO_TIME = /^(\d{4})-(\d\d)-(\d\d)(?:[Tt ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d+))?)?\s*([Zz]|[+-]\d\d(?::?\d\d)?)?)?$/
const MIN_MS = Date.UTC(1900, 0, 1)
const MAX_MS = Date.UTC(2300, 0, 1) - 1

/** Epoch milliseconds of an ISO-8601 date-time (see `time`), or undefined if it is not one. */
export function parseTimestamp(text: string): number | undefined {
  // `2026-11-23T12:00:00.000Z`, as JavaScript's toISOString() writes it (and so most Segment
  // libraries): read by character codes, as the regular expression costs more than the rest of
  // a message's validation.
  if (text.length === 24 && text.charCodeAt(23) === 90 /* Z */ && CANONICAL.test(text)) {
    const n = digitsAt
    return fromFields(n(text, 0, 4), n(text, 5, 2), n(text, 8, 2), n(text, 11, 2), n(text, 14, 2), n(text, 17, 2), n(text, 20, 3), 0)
  }
  const m = ISO_TIME.exec(text)
  if (!m) return undefined
  const [, y, mo, d, h = '0', mi = '0', s = '0', frac = '', zone = 'Z'] = m
  let offsetMin = 0
  if (zone !== 'Z' && zone !== 'z') {
    const digits = zone.slice(1).replace(':', '')
    const oh = Number(digits.slice(0, 2))
    const om = Number(digits.slice(2) || '0')
    if (oh > 14 || om > 59) return undefined
    offsetMin = (zone[0] === '-' ? -1 : 1) * (oh * 60 + om)
  }
  return fromFields(Number(y), Number(mo), Number(d), Number(h), Number(mi), Number(s), Number(frac.slice(0, 3).padEnd(3, '0')), offsetMin)
}

/** The shape of `toISOString()`; only digits where digits go (the fields are range-checked after). */
const CANONICAL = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/

/** The number written by `len` ASCII digits of `text` at `at` (already known to be digits). */
function digitsAt(text: string, at: number, len: number): number {
  let v = 0
  for (let i = at; i < at + len; i++) v = v * 10 + text.charCodeAt(i) - 48
  return v
}

function fromFields(year: number, month: number, day: number, hour: number, minute: number, second: number, ms: number, offsetMin: number): number | undefined {
  // Date.UTC would read the years 0-99 as 1900-1999: rule them out before (the exact bounds,
  // which depend on the offset, are checked on the result).
  if (year < 1899 || year > 2300) return undefined
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) return undefined
  const local = Date.UTC(year, month - 1, day, hour, minute, second, ms)
  if (new Date(local).getUTCDate() !== day) return undefined
  const epoch = local - offsetMin * 60_000
  return epoch >= MIN_MS && epoch <= MAX_MS ? epoch : undefined
}
/**
 * A JSON object (properties, traits, context, …), checked without being copied: its values are
 * free-form, and copying every nested object of every message would cost more than the rest of
 * the validation together.
 */
const dict = z.custom<Record<string, unknown>>((v) => typeof v === 'object' && v !== null && !Array.isArray(v), 'must be a JSON object')

const common = {
  messageId: z.string().min(1, 'must not be empty').max(256).optional(),
  userId: id.nullish(),
  anonymousId: id.nullish(),
  timestamp: time.nullish(),
  originalTimestamp: time.nullish(),
  sentAt: time.nullish(),
  context: dict.optional(),
  integrations: dict.optional(),
}

function who(msg: { userId?: string | null; anonymousId?: string | null }, ctx: z.RefinementCtx) {
  if (!msg.userId && !msg.anonymousId) {
    ctx.addIssue({ code: 'custom', path: ['userId'], message: 'userId or anonymousId is required' })
  }
}

export const TrackMessage = z
  .looseObject({ ...common, type: z.literal('track'), event: z.string().min(1, 'must not be empty').max(512), properties: dict.optional() })
  .superRefine(who)
export const IdentifyMessage = z.looseObject({ ...common, type: z.literal('identify'), traits: dict.optional() }).superRefine(who)
export const GroupMessage = z
  .looseObject({ ...common, type: z.literal('group'), groupId: id, traits: dict.optional() })
  .superRefine(who)
const view = { name: z.string().max(512).nullish(), category: z.string().max(512).nullish(), properties: dict.optional() }
export const PageMessage = z.looseObject({ ...common, type: z.literal('page'), ...view }).superRefine(who)
export const ScreenMessage = z.looseObject({ ...common, type: z.literal('screen'), ...view }).superRefine(who)
export const AliasMessage = z.looseObject({ ...common, type: z.literal('alias'), previousId: id, userId: id })

export const MessageSchemas = {
  track: TrackMessage,
  identify: IdentifyMessage,
  group: GroupMessage,
  page: PageMessage,
  screen: ScreenMessage,
  alias: AliasMessage,
} as const

export type Message =
  | z.output<typeof TrackMessage>
  | z.output<typeof IdentifyMessage>
  | z.output<typeof GroupMessage>
  | z.output<typeof PageMessage>
  | z.output<typeof ScreenMessage>
  | z.output<typeof AliasMessage>

/** The envelope of `/v1/batch`; the messages are validated one by one, so one bad one rejects only itself. */
export const BatchBody = z.looseObject({
  batch: z.array(z.unknown(), 'must be an array of messages'),
  writeKey: z.string().optional(),
  sentAt: time.nullish(),
  context: dict.optional(),
})

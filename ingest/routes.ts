import { z } from '@hono/zod-openapi'
import type { Context } from 'hono'
import { cors } from 'hono/cors'
import { ulid } from 'ulid'
import { basicUsername, sourceOf } from '../src/auth.js'
import { ApiError, type ErrorDetail, zodDetails } from '../src/errors.js'
import type { AppDeps, AppEnv } from '../src/env.js'
import { documentedBody, errors, ok, router, WRITE } from '../src/routes/router.js'
import { chTime } from '../src/time.js'
import { isLosslessNumber, MAX_DEPTH, parseJson, pathDeeperThan, stringifyJson, toWellFormed } from './json.js'
import { type EventRow, toEventRow } from './normalize.js'
import { RateLimiter } from './ratelimit.js'
import { BatchBody, LIMITS, MESSAGE_TYPES, type Message, MessageSchemas, type MessageType, parseTimestamp } from './schema.js'
import type { IngestErrorRow, StoreRejection } from './writer.js'

export const Rejected = z.object({ index: z.number().int(), path: z.string(), message: z.string() })
export type Rejected = z.infer<typeof Rejected>
export const Stored = z.object({ success: z.literal(true) })
export const BatchResponse = Stored.extend({ accepted: z.number().int(), rejected: z.array(Rejected) })
export type BatchResponse = z.infer<typeof BatchResponse>

type Checked = { ok: true; message: Message } | { ok: false; details: ErrorDetail[] }

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/**
 * The paths analytics.js (analytics-next) posts to: the first letter of the call's type, and `b`
 * for a batch. Everything else (Node, Python, Go, … libraries, curl) uses the full names.
 */
const SHORT_PATH = { track: 't', identify: 'i', group: 'g', page: 'p', screen: 's', alias: 'a' } as const satisfies Record<MessageType, string>

const BAD_JSON = new ApiError({ code: 'BAD_REQUEST', message: 'the body is not valid JSON', details: [{ path: '(body)', message: 'not JSON' }] })
// The body may be left unread: `Connection: close` keeps the client from reusing a socket that
// still carries the rest of it.
const TOO_LARGE = () =>
  new ApiError({ code: 'PAYLOAD_TOO_LARGE', message: `the request is larger than ${LIMITS.requestBytes} bytes`, headers: { Connection: 'close' } })

/** UTF-8 length of a string, counted without encoding it. */
function utf8Length(s: string): number {
  let n = s.length
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x80) continue
    if (c < 0x800) n += 1
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      // A surrogate pair is 2 UTF-16 units and 4 UTF-8 bytes.
      n += 2
      i++
    } else n += 2
  }
  return n
}

const TOO_DEEP = `nested more than ${MAX_DEPTH} levels deep`

/** How a body was read: whether it was parsed losslessly, and whether anything in it may nest too deep. */
type BodyInfo = { lossless: boolean; deep: boolean }

/**
 * Validate one message: its nesting, its size, its type, and the schema of that type. `bytes` is
 * the message's size as sent, when the caller knows it; otherwise its size re-serialised
 * (measured only when the cheap bound says it might be over the limit). `body.deep` says the
 * body nests deeper than a message may, so this message's depth is checked.
 */
export function checkMessage(raw: unknown, forcedType?: MessageType, bytes?: number, body: BodyInfo = { lossless: false, deep: true }): Checked {
  if (!isObject(raw)) return { ok: false, details: [{ path: '(message)', message: 'must be a JSON object' }] }
  if (body.deep) {
    const path = pathDeeperThan(raw, MAX_DEPTH)
    if (path !== undefined) return { ok: false, details: [{ path, message: TOO_DEEP }] }
  }
  const size = bytes ?? (jsonSizeBound(raw, LIMITS.messageBytes) <= LIMITS.messageBytes ? 0 : utf8Length(stringifyJson(raw, body.lossless)))
  if (size > LIMITS.messageBytes) {
    return { ok: false, details: [{ path: '(message)', message: `is ${size} bytes; the limit is ${LIMITS.messageBytes}` }] }
  }
  const type = forcedType ?? raw.type
  if (typeof type !== 'string' || !(MESSAGE_TYPES as readonly string[]).includes(type)) {
    return { ok: false, details: [{ path: 'type', message: `must be one of ${MESSAGE_TYPES.join(', ')}` }] }
  }
  if (type === 'track' && raw.type === 'track') {
    const message = plainTrack(raw)
    if (message) return { ok: true, message }
  }
  const parsed = MessageSchemas[type as MessageType].safeParse(raw.type === type ? raw : { ...raw, type })
  return parsed.success ? { ok: true, message: parsed.data as Message } : { ok: false, details: zodDetails(parsed.error) }
}

const isDict = (v: unknown) => v === undefined || (typeof v === 'object' && v !== null && !Array.isArray(v))
const isText = (v: unknown, max: number): v is string => typeof v === 'string' && v.length >= 1 && v.length <= max
const isId = (v: unknown) => v === undefined || v === null || isText(v, 1024)
const TIMES = ['timestamp', 'originalTimestamp', 'sentAt'] as const

/**
 * The common case of the most common message, checked without zod: a `track` whose ids are
 * strings and whose fields are all of their usual types. Returns what `TrackMessage` would
 * (a copy, with its timestamps parsed), or undefined when the message is anything else, valid or
 * not, so that zod decides it and words its errors. Validation costs more per message than
 * anything else the server does with it but parse the JSON.
 */
function plainTrack(raw: Record<string, unknown>): Message | undefined {
  const { messageId, userId, anonymousId } = raw
  if (!(messageId === undefined || isText(messageId, 256)) || !isText(raw.event, 512)) return undefined
  if (!isId(userId) || !isId(anonymousId) || !(userId || anonymousId)) return undefined
  if (!isDict(raw.properties) || !isDict(raw.context) || !isDict(raw.integrations)) return undefined
  const message: Record<string, unknown> = { ...raw }
  for (const key of TIMES) {
    const text = raw[key]
    if (text === undefined || text === null) continue
    const ms = typeof text === 'string' ? parseTimestamp(text) : undefined
    if (ms === undefined) return undefined
    message[key] = ms
  }
  return message as Message
}

/**
 * An upper bound of a value's JSON size in UTF-8 bytes, computed without serialising it: a UTF-16
 * unit takes at most 6 bytes in JSON (`\u001f`), a number or literal at most 24. Stops counting
 * past `budget`. Cheap enough to run on every message, so that only the rare message near the
 * limit is measured exactly.
 */
export function jsonSizeBound(v: unknown, budget: number): number {
  if (typeof v === 'string') return v.length * 6 + 2
  if (typeof v !== 'object' || v === null) return 24
  let n = 2
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length && n <= budget; i++) n += jsonSizeBound(v[i], budget) + 1
    return n
  }
  for (const k in v) {
    n += k.length * 6 + 4 + jsonSizeBound((v as Record<string, unknown>)[k], budget)
    if (n > budget) return n
  }
  return n
}

/**
 * The request body. `Content-Encoding: gzip` (or `deflate`) is accepted, as several Segment
 * libraries compress; the 500 KB limit applies to the body both as sent and decompressed.
 * A body that declares its length is refused by it before it is read, and otherwise read in one
 * piece (on Node, straight from the socket, without the web stream a `Request` body goes
 * through); a body sent in chunks is counted as it arrives, and refused once over the limit.
 */
async function readBody(c: Context<AppEnv>): Promise<Uint8Array> {
  const encoding = c.req.header('content-encoding')?.trim().toLowerCase()
  const identity = !encoding || encoding === 'identity'
  if (!identity && encoding !== 'gzip' && encoding !== 'deflate') {
    throw new ApiError({
      code: 'BAD_REQUEST',
      message: `unsupported Content-Encoding "${encoding}"`,
      details: [{ path: '(headers).content-encoding', message: 'must be gzip, deflate or identity' }],
    })
  }
  const length = c.req.header('transfer-encoding') === undefined ? c.req.header('content-length') : undefined
  if (length !== undefined && Number(length) > LIMITS.requestBytes) throw TOO_LARGE()
  if (identity && length !== undefined) return new Uint8Array(await c.req.arrayBuffer())
  const body = c.req.raw.body
  if (!body) return new Uint8Array(0)
  const reader = (identity ? body : body.pipeThrough(new DecompressionStream(encoding as 'gzip' | 'deflate'))).getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      size += value.byteLength
      if (size > LIMITS.requestBytes) {
        await reader.cancel().catch(() => {})
        throw TOO_LARGE()
      }
      chunks.push(value)
    }
  } catch (err) {
    if (err instanceof ApiError) throw err
    throw new ApiError({ code: 'BAD_REQUEST', message: `the body is not valid ${encoding} data`, details: [{ path: '(body)', message: `not ${encoding}` }] })
  }
  if (chunks.length === 1) return chunks[0] as Uint8Array
  const bytes = new Uint8Array(size)
  let at = 0
  for (const chunk of chunks) {
    bytes.set(chunk, at)
    at += chunk.byteLength
  }
  return bytes
}

const decoder = new TextDecoder()

/**
 * A rejected message as kept in ingest_errors_v1 (at most 64 KB of it). One nested too deep is
 * kept down to the depth limit, its deeper values replaced by a note, so that serialising it
 * cannot overflow the stack.
 */
function payloadOf(raw: unknown, lossless: boolean, tooDeep: boolean): string {
  const value = tooDeep ? cutBelow(raw, MAX_DEPTH) : raw
  return stringifyJson(value, lossless).slice(0, LIMITS.messageBytes * 2)
}

/** A copy of `root` with every object or array below level `limit` replaced by a note; iterative. */
function cutBelow(root: unknown, limit: number): unknown {
  const top: { v: unknown } = { v: root }
  const stack: { holder: Record<string, unknown> | unknown[]; key: string | number; level: number }[] = [{ holder: top, key: 'v', level: 1 }]
  while (stack.length > 0) {
    const { holder, key, level } = stack.pop() as (typeof stack)[number]
    const v = (holder as Record<string | number, unknown>)[key]
    if (typeof v !== 'object' || v === null || isLosslessNumber(v)) continue
    if (level > limit) {
      ;(holder as Record<string | number, unknown>)[key] = `(nested more than ${limit} levels deep: not kept)`
      continue
    }
    const copy: Record<string, unknown> | unknown[] = Array.isArray(v) ? [...v] : { ...v }
    ;(holder as Record<string | number, unknown>)[key] = copy
    for (const k of Object.keys(copy)) stack.push({ holder: copy, key: Array.isArray(copy) ? Number(k) : k, level: level + 1 })
  }
  return top.v
}

/**
 * The Segment tracking API. Order of checks: size (413), JSON (400), write key (401), rate (429),
 * then each message. A 2xx is sent only once the sink has stored every accepted message; a sink
 * failure is a 503, never a 2xx, and never a 3xx (Segment's libraries count a 3xx as delivered).
 */
export function ingestRoutes(deps: AppDeps) {
  const app = router()
  const now = deps.now ?? Date.now
  const limiter = new RateLimiter(deps.config.RATE_LIMIT_PER_SECOND, deps.config.RATE_LIMIT_BURST, now)

  const errorRow = (c: Context<AppEnv>, level: IngestErrorRow['level'], index: number, d: ErrorDetail, raw: unknown, receivedAt: number, lossless = false): IngestErrorRow => ({
    id: `ierr_${ulid()}`,
    received_at: chTime(receivedAt),
    source: c.get('source').source,
    level,
    route: c.req.path,
    batch_index: index,
    message_id: isObject(raw) && typeof raw.messageId === 'string' ? raw.messageId : '',
    path: d.path,
    message: d.message,
    // The message as sent, without its write key (analytics.js repeats it in every message).
    payload: payloadOf(isObject(raw) && 'writeKey' in raw ? { ...raw, writeKey: undefined } : (raw ?? null), lossless, d.message === TOO_DEEP),
  })

  /**
   * Parse the body, authenticate the write key and apply the rate limit. Strings are normalised
   * here, at the boundary: a lone UTF-16 surrogate (only a `\uD800`-style escape can carry one)
   * becomes U+FFFD, as the WHATWG encoders write it, so that no id, key or value can be refused
   * by the store later. Numbers a double would change are kept as sent (see `parseJson`).
   */
  async function open(c: Context<AppEnv>, levels: number): Promise<{ body: Record<string, unknown>; bytes: Uint8Array; info: BodyInfo }> {
    const bytes = await readBody(c)
    let body: unknown
    let info: BodyInfo
    try {
      const parsed = parseJson(decoder.decode(bytes))
      body = parsed.inspection.loneSurrogate ? toWellFormed(parsed.value) : parsed.value
      info = { lossless: parsed.lossless, deep: parsed.inspection.depth > MAX_DEPTH + levels }
    } catch {
      throw BAD_JSON
    }
    if (!isObject(body)) {
      throw new ApiError({ code: 'BAD_REQUEST', message: 'the body must be a JSON object', details: [{ path: '(body)', message: 'not an object' }] })
    }
    const given = basicUsername(c.req.header('authorization')) || (typeof body.writeKey === 'string' ? body.writeKey : undefined)
    if (!given) {
      throw new ApiError({ code: 'UNAUTHORIZED', message: 'missing write key: send it as the Basic auth username or as "writeKey" in the body' })
    }
    const source = sourceOf(deps.writeKeys, given)
    if (!source) throw new ApiError({ code: 'UNAUTHORIZED', message: 'unknown write key' })
    c.set('source', source)
    const wait = limiter.take(source.key)
    if (wait > 0) {
      throw new ApiError({
        code: 'RATE_LIMITED',
        message: `rate limit of ${deps.config.RATE_LIMIT_PER_SECOND} requests/s for this write key exceeded; retry after ${wait}s`,
        headers: { 'Retry-After': String(wait) },
      })
    }
    return { body, bytes, info }
  }

  // Scoped to the tracking routes, not `/v1/*`: the management API under /v1 has its own rules.
  // CORS lets analytics.js post from any web site (it sends the write key in the body). The size
  // limit is applied as the body is read (readBody).
  const guard = cors({ origin: '*', allowMethods: ['POST', 'OPTIONS'], allowHeaders: ['Content-Type', 'Authorization', 'Content-Encoding'], maxAge: 86400 })

  /**
   * A tracking route, served under its full name and analytics.js's short one. It is declared in
   * /openapi.json with the body it takes, but the router validates nothing: the handler reads the
   * body itself (size, encoding, partial batches) and answers in its own words.
   */
  const tracking = (path: string, short: string, summary: string, body: z.ZodType, response: z.ZodType, handler: (c: Context<AppEnv>) => Promise<Response>) => {
    app.openAPIRegistry.registerPath({
      method: 'post',
      path,
      summary,
      security: WRITE,
      request: { body: documentedBody(body) },
      responses: { 200: ok(response, 'Stored'), ...errors },
    })
    app.on(['POST', 'OPTIONS'], [path, short], guard, handler)
  }

  for (const type of MESSAGE_TYPES) {
    tracking(`/${type}`, `/${SHORT_PATH[type]}`, `Segment ${type} call`, MessageSchemas[type], Stored, async (c) => {
      const { body, bytes, info } = await open(c, 0)
      const receivedAt = now()
      const record = (details: ErrorDetail[]) =>
        deps.sink
          .write({ events: [], errors: details.map((d) => errorRow(c, 'error', 0, d, body, receivedAt, info.lossless)) })
          .catch((err) => c.get('logger').warn({ err }, 'could not record a rejected message'))
      // The body is the message (with perhaps its writeKey): its size as sent.
      const checked = checkMessage(body, type, bytes.length, info)
      if (!checked.ok) {
        await record(checked.details)
        throw new ApiError({ code: 'BAD_REQUEST', message: `invalid ${type} message`, details: checked.details })
      }
      const { row, warning } = toEventRow(checked.message, c.get('source').source, receivedAt, undefined, info.lossless)
      const { rejected } = await deps.sink.write({ events: [row], errors: warning ? [errorRow(c, 'warning', 0, warning, body, receivedAt, info.lossless)] : [] })
      if (rejected.length > 0) {
        const details = rejected.map((r) => ({ path: '(message)', message: r.message }))
        await record(details)
        throw new ApiError({ code: 'BAD_REQUEST', message: `the store refused this ${type} message`, details })
      }
      return c.json({ success: true })
    })
  }

  /**
   * Validate a batch and turn its messages into rows. Apart from the handler, so that the parsed
   * body is garbage once this returns, instead of living (and being copied by every young-gen
   * collection) while the handler waits for the store. A messageId repeated within the batch is
   * kept once (its first occurrence), as the store would keep it.
   */
  function batchRows(c: Context<AppEnv>, { body, bytes, info }: { body: Record<string, unknown>; bytes: Uint8Array; info: BodyInfo }, receivedAt: number) {
    const envelope = BatchBody.safeParse(body)
    if (!envelope.success) {
      throw new ApiError({ code: 'BAD_REQUEST', message: 'invalid batch', details: zodDetails(envelope.error) })
    }
    const { batch, sentAt, context } = envelope.data
    if (batch.length > LIMITS.batchMessages) {
      throw new ApiError({ code: 'PAYLOAD_TOO_LARGE', message: `the batch has ${batch.length} messages; the limit is ${LIMITS.batchMessages}` })
    }
    // The batch's context becomes each message's (level 2 of a message).
    const deepContext = info.deep && context ? pathDeeperThan(context, MAX_DEPTH - 1) : undefined
    if (deepContext !== undefined) {
      throw new ApiError({ code: 'BAD_REQUEST', message: 'invalid batch', details: [{ path: `context.${deepContext}`, message: TOO_DEEP }] })
    }
    // No message can be over the limit when the whole body is under it.
    const small = bytes.length <= LIMITS.messageBytes ? bytes.length : undefined
    const source = c.get('source').source
    const events: EventRow[] = []
    /** The batch index of each of `events`, and each message as sent (for a rejection found by the store). */
    const indexes: number[] = []
    const raws: unknown[] = []
    const errors: IngestErrorRow[] = []
    const rejected: Rejected[] = []
    const seen = new Set<string>()
    for (let index = 0; index < batch.length; index++) {
      const raw = batch[index]
      const checked = checkMessage(raw, undefined, small, info)
      if (!checked.ok) {
        for (const d of checked.details) {
          rejected.push({ index, ...d })
          errors.push(errorRow(c, 'error', index, d, raw, receivedAt, info.lossless))
        }
        continue
      }
      const id = checked.message.messageId
      if (id !== undefined) {
        if (seen.has(id)) continue
        seen.add(id)
      }
      // Segment merges the batch's context into each message's own (the message's keys win).
      if (context) checked.message.context = { ...context, ...checked.message.context }
      const { row, warning } = toEventRow(checked.message, source, receivedAt, sentAt ?? undefined, info.lossless)
      events.push(row)
      indexes.push(index)
      raws.push(raw)
      if (warning) errors.push(errorRow(c, 'warning', index, warning, raw, receivedAt, info.lossless))
    }
    /** The messages the store refused on their own: listed, and recorded as ingestion errors. */
    const refused = (list: StoreRejection[]) => {
      const more: Rejected[] = list.map((r) => ({ index: indexes[r.event] as number, path: '(message)', message: r.message }))
      const rows = list.map((r, i) => errorRow(c, 'error', more[i]?.index as number, more[i] as Rejected, raws[r.event], receivedAt, info.lossless))
      return { more, rows }
    }
    return { events, errors, rejected, refused }
  }

  tracking('/batch', '/b', 'Segment batch: valid messages stored, invalid ones listed in `rejected`', BatchBody, BatchResponse, async (c) => {
    const { events, errors, rejected, refused } = batchRows(c, await open(c, 2), now())
    c.get('logger').debug({ accepted: events.length, rejected: rejected.length }, 'batch validated; waiting for the store')
    const stored = await deps.sink.write({ events, errors })
    let accepted = events.length
    if (stored.rejected.length > 0) {
      const { more, rows } = refused(stored.rejected)
      accepted -= more.length
      rejected.push(...more)
      rejected.sort((a, b) => a.index - b.index)
      await deps.sink.write({ events: [], errors: rows }).catch((err) => c.get('logger').warn({ err }, 'could not record messages the store refused'))
    }
    return c.json({ success: true, accepted, rejected } satisfies BatchResponse)
  })

  return app
}

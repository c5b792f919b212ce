import { Hono, type Context } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import { ulid } from 'ulid'
import { basicUsername, sourceOf } from '../src/auth.js'
import { ApiError, type ErrorDetail, zodDetails } from '../src/errors.js'
import type { AppDeps, AppEnv } from '../src/env.js'
import { chTime, type EventRow, toEventRow } from './normalize.js'
import { RateLimiter } from './ratelimit.js'
import { BatchBody, LIMITS, MESSAGE_TYPES, type Message, MessageSchemas, type MessageType } from './schema.js'
import type { IngestErrorRow } from './writer.js'

export type Rejected = { index: number; path: string; message: string }
export type BatchResponse = { success: true; accepted: number; rejected: Rejected[] }

type Checked = { ok: true; message: Message } | { ok: false; details: ErrorDetail[] }

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/** Validate one message: its size, its type, and the schema of that type. */
export function checkMessage(raw: unknown, forcedType?: MessageType): Checked {
  if (!isObject(raw)) return { ok: false, details: [{ path: '(message)', message: 'must be a JSON object' }] }
  const bytes = Buffer.byteLength(JSON.stringify(raw))
  if (bytes > LIMITS.messageBytes) {
    return { ok: false, details: [{ path: '(message)', message: `is ${bytes} bytes; the limit is ${LIMITS.messageBytes}` }] }
  }
  const type = forcedType ?? raw.type
  if (typeof type !== 'string' || !(MESSAGE_TYPES as readonly string[]).includes(type)) {
    return { ok: false, details: [{ path: 'type', message: `must be one of ${MESSAGE_TYPES.join(', ')}` }] }
  }
  const parsed = MessageSchemas[type as MessageType].safeParse({ ...raw, type })
  return parsed.success ? { ok: true, message: parsed.data as Message } : { ok: false, details: zodDetails(parsed.error) }
}

/**
 * The Segment tracking API. Order of checks: size (413), JSON (400), write key (401), rate (429),
 * then each message. A 2xx is sent only once the sink has stored every accepted message.
 */
export function ingestRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>()
  const now = deps.now ?? Date.now
  const limiter = new RateLimiter(deps.config.RATE_LIMIT_PER_SECOND, deps.config.RATE_LIMIT_BURST, now)

  const errorRow = (c: Context<AppEnv>, level: IngestErrorRow['level'], index: number, d: ErrorDetail, raw: unknown, receivedAt: number): IngestErrorRow => ({
    id: `ierr_${ulid()}`,
    received_at: chTime(receivedAt),
    source: c.get('source').source,
    level,
    route: c.req.path,
    batch_index: index,
    message_id: isObject(raw) && typeof raw.messageId === 'string' ? raw.messageId : '',
    path: d.path,
    message: d.message,
    payload: JSON.stringify(raw ?? null).slice(0, LIMITS.messageBytes * 2),
  })

  /** Parse the body, authenticate the write key and apply the rate limit. */
  async function open(c: Context<AppEnv>): Promise<Record<string, unknown>> {
    let body: unknown
    try {
      body = JSON.parse(await c.req.text())
    } catch {
      throw new ApiError({ code: 'BAD_REQUEST', message: 'the body is not valid JSON', details: [{ path: '(body)', message: 'not JSON' }] })
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
    return body
  }

  app.use(
    '*',
    bodyLimit({
      maxSize: LIMITS.requestBytes,
      onError: () => {
        throw new ApiError({ code: 'PAYLOAD_TOO_LARGE', message: `the request is larger than ${LIMITS.requestBytes} bytes` })
      },
    }),
  )

  for (const type of MESSAGE_TYPES) {
    app.post(`/${type}`, async (c) => {
      const body = await open(c)
      const receivedAt = now()
      const checked = checkMessage(body, type)
      if (!checked.ok) {
        await deps.sink
          .write({ events: [], errors: checked.details.map((d) => errorRow(c, 'error', 0, d, body, receivedAt)) })
          .catch((err) => c.get('logger').warn({ err }, 'could not record a rejected message'))
        throw new ApiError({ code: 'BAD_REQUEST', message: `invalid ${type} message`, details: checked.details })
      }
      const { row, warning } = toEventRow(checked.message, c.get('source').source, receivedAt)
      await deps.sink.write({ events: [row], errors: warning ? [errorRow(c, 'warning', 0, warning, body, receivedAt)] : [] })
      return c.json({ success: true })
    })
  }

  app.post('/batch', async (c) => {
    const body = await open(c)
    const receivedAt = now()
    const envelope = BatchBody.safeParse(body)
    if (!envelope.success) {
      throw new ApiError({ code: 'BAD_REQUEST', message: 'invalid batch', details: zodDetails(envelope.error) })
    }
    const { batch, sentAt, context } = envelope.data
    if (batch.length > LIMITS.batchMessages) {
      throw new ApiError({ code: 'PAYLOAD_TOO_LARGE', message: `the batch has ${batch.length} messages; the limit is ${LIMITS.batchMessages}` })
    }
    const events: EventRow[] = []
    const errors: IngestErrorRow[] = []
    const rejected: Rejected[] = []
    batch.forEach((raw, index) => {
      // Segment merges the batch's context into each message's own.
      const merged = context && isObject(raw) ? { ...raw, context: { ...context, ...(isObject(raw.context) ? raw.context : {}) } } : raw
      const checked = checkMessage(merged)
      if (!checked.ok) {
        for (const d of checked.details) {
          rejected.push({ index, ...d })
          errors.push(errorRow(c, 'error', index, d, raw, receivedAt))
        }
        return
      }
      const { row, warning } = toEventRow(checked.message, c.get('source').source, receivedAt, sentAt)
      events.push(row)
      if (warning) errors.push(errorRow(c, 'warning', index, warning, raw, receivedAt))
    })
    await deps.sink.write({ events, errors })
    return c.json({ success: true, accepted: events.length, rejected } satisfies BatchResponse)
  })

  return app
}

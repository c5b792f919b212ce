import { createRoute, z } from '@hono/zod-openapi'
import type { MiddlewareHandler } from 'hono'
import { streamSSE } from 'hono/streaming'
import { basicUsername, bearerToken, secretEquals, sourceOf } from '../auth.js'
import { StreamHub, streamSignals } from '../delivery/stream.js'
import { ApiError } from '../errors.js'
import type { AppDeps, AppEnv } from '../env.js'
import { SignalKind } from '../signals.js'
import { errors, invalid, READ, router } from './router.js'

const EVENT_ID = /^evt_[0-9A-HJKMNP-TV-Z]{26}$/

const StreamQuery = z.object({
  /** Comma-separated signal kinds (none: every kind). */
  kinds: z
    .string()
    .transform((s) => s.split(',').map((k) => k.trim()).filter(Boolean))
    .pipe(z.array(SignalKind))
    .optional(),
  /** For clients that cannot set the Last-Event-ID header. */
  last_event_id: z.string().regex(EVENT_ID, 'must be an event id (evt_…)').optional(),
})

/**
 * Readers of the live stream: the admin token, or one of READ_TOKENS (which can do nothing else),
 * as a Bearer token, as on every other route that reads. A write key is refused by name, also
 * as a Basic username (as the tracking API takes it), so a misconfigured client learns why.
 */
export function requireReader(deps: Pick<AppDeps, 'adminToken' | 'writeKeys' | 'config' | 'readTokens'>): MiddlewareHandler<AppEnv> {
  const readers = [deps.adminToken, ...(deps.readTokens ?? deps.config.READ_TOKENS ?? [])]
  return async function requireReader(c, next) {
    const header = c.req.header('authorization')
    const given = bearerToken(header)
    if (!given) {
      if (sourceOf(deps.writeKeys, basicUsername(header))) {
        throw new ApiError({ code: 'FORBIDDEN', message: 'a write key only writes events; reading the stream needs a read token (READ_TOKENS) or the admin token' })
      }
      throw new ApiError({ code: 'UNAUTHORIZED', message: 'missing Authorization: Bearer <read token or admin token>' })
    }
    // Every token is compared (constant time each), so timing does not tell which one matched.
    let ok = false
    for (const t of readers) if (secretEquals(given, t)) ok = true
    if (!ok && sourceOf(deps.writeKeys, given)) {
      throw new ApiError({ code: 'FORBIDDEN', message: 'a write key only writes events; reading the stream needs a read token (READ_TOKENS) or the admin token' })
    }
    if (!ok) throw new ApiError({ code: 'FORBIDDEN', message: 'the token is neither a read token nor the admin token' })
    await next()
  }
}

/** GET /v1/signals/stream: the signal log as server-sent events, resumable (see streamSignals). */
export function streamRoutes(deps: AppDeps) {
  const app = router()
  const hub = deps.delivery?.streams ?? new StreamHub()
  const route = createRoute({
    method: 'get',
    path: '/signals/stream',
    summary: 'Live signals as server-sent events (admin or read token); `kinds`, resume with Last-Event-ID',
    security: READ,
    middleware: [requireReader(deps)] as const,
    request: { query: StreamQuery },
    responses: {
      200: { description: 'The signal log as server-sent events, from Last-Event-ID (or now) on', content: { 'text/event-stream': { schema: z.string() } } },
      ...errors,
    },
  })
  app.openapi(route, (c) => {
    const q = c.req.valid('query')
    const lastEventId = c.req.header('last-event-id')?.trim() || q.last_event_id
    if (lastEventId && !EVENT_ID.test(lastEventId)) {
      throw new ApiError({
        code: 'BAD_REQUEST',
        message: 'Last-Event-ID must be the id of a stream message (evt_…)',
        details: [{ path: 'Last-Event-ID', message: 'must be an event id (evt_…)' }],
      })
    }
    const log = c.get('logger')
    return streamSSE(
      c,
      (stream) =>
        streamSignals(stream, {
          store: deps.store,
          bus: deps.bus,
          hub,
          kinds: q.kinds?.length ? new Set(q.kinds) : undefined,
          lastEventId,
          heartbeatMs: deps.config.STREAM_HEARTBEAT_MS,
        }),
      async (err) => {
        // The client sees an `error` event and the end of the stream, and reconnects to resume.
        log.warn({ err }, 'signal stream ended by an error')
      },
    )
  }, invalid('query', '(query)'))
  return app
}

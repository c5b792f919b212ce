import { z } from '@hono/zod-openapi'
import type { AppDeps } from '../env.js'
import { ApiError, StoreUnavailableError } from '../errors.js'
import { decodeCursor, listEvents, listIngestErrors } from '../events/queries.js'
import { SubjectType } from '../signals.js'
import { adminRoutes, ok, router } from './router.js'

const CursorParam = z.string().transform((s, ctx) => {
  const c = decodeCursor(s)
  if (!c) {
    ctx.addIssue({ code: 'custom', message: 'must be the `next` of a previous page' })
    return z.NEVER
  }
  return c
})

/** GET /v1/events query: newest first by arrival; `before` is the `next` of the previous page. */
export const EventsQuery = z
  .strictObject({
    subject_type: SubjectType.optional(),
    subject_id: z.string().min(1).max(500).optional(),
    event: z.string().min(1).max(500).optional(),
    before: CursorParam.optional(),
    /** Rows newer than this cursor (a live view asking for what arrived since its newest row). */
    after: CursorParam.optional(),
    limit: z.coerce.number().int().min(1).max(500).default(50),
  })
  .superRefine((q, ctx) => {
    if (q.subject_type && !q.subject_id) ctx.addIssue({ code: 'custom', path: ['subject_id'], message: 'is required with subject_type' })
  })

/** GET /v1/ingest-errors query. */
export const IngestErrorsQuery = z.strictObject({
  level: z.enum(['error', 'warning']).optional(),
  before: CursorParam.optional(),
  after: CursorParam.optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
})

const StoredEvent = z.object({
  message_id: z.string(),
  source: z.string(),
  type: z.string(),
  event: z.string(),
  user_id: z.string().nullable(),
  anonymous_id: z.string().nullable(),
  account_id: z.string().nullable(),
  timestamp: z.iso.datetime(),
  received_at: z.iso.datetime(),
  properties: z.unknown(),
  traits: z.unknown(),
  context: z.unknown(),
  cursor: z.string(),
})
export const EventPage = z.object({ data: z.array(StoredEvent), next: z.string().nullable() })

const IngestError = z.object({
  id: z.string(),
  received_at: z.iso.datetime(),
  source: z.string(),
  level: z.enum(['error', 'warning']),
  route: z.string(),
  batch_index: z.number().int().nullable(),
  message_id: z.string().nullable(),
  path: z.string(),
  message: z.string(),
  payload: z.unknown(),
  cursor: z.string(),
})
export const IngestErrorPage = z.object({ data: z.array(IngestError), next: z.string().nullable() })

const storeCall = <T>(p: Promise<T>): Promise<T> =>
  p.catch((err) => {
    throw err instanceof ApiError ? err : new StoreUnavailableError(err)
  })

/** The events debugger's API (admin): stored events with their properties, and the rejected messages with their reasons. */
export function eventsRoutes(deps: AppDeps) {
  const app = router()
  const route = adminRoutes(deps.adminToken)
  const events = route({
    method: 'get',
    path: '/events',
    summary: 'Stored events, newest first by arrival, with their properties; filter by subject (the row’s own ids) and event name; cursor `before` = `next`',
    request: { query: EventsQuery },
    responses: { 200: ok(EventPage) },
  })
  app.openapi(events, async (c) => c.json(await storeCall(listEvents(deps.store, c.req.valid('query'))), 200))
  const ingestErrors = route({
    method: 'get',
    path: '/ingest-errors',
    summary: 'Rejected (error) and corrected (warning) messages with the path, the reason and the message as sent, newest first',
    request: { query: IngestErrorsQuery },
    responses: { 200: ok(IngestErrorPage) },
  })
  app.openapi(ingestErrors, async (c) => c.json(await storeCall(listIngestErrors(deps.store, c.req.valid('query'))), 200))
  return app
}

import { type Context, Hono } from 'hono'
import { z } from 'zod'
import { Dispatcher } from '../delivery/dispatcher.js'
import { Delivery, DeliveryStatus, OutboxStore, publicDelivery } from '../delivery/outbox.js'
import { publicWebhook, Webhook, WebhookInput, WebhookPatch, WebhookStore } from '../delivery/webhooks.js'
import { allowPrivateTargets } from '../config.js'
import { urlRefusal } from '../delivery/targets.js'
import { ApiError, StoreUnavailableError, zodDetails } from '../errors.js'
import type { AppDeps, AppEnv } from '../env.js'
import { requireAdmin } from '../middleware.js'

export const CreatedWebhook = Webhook.extend({ secret: z.string() })
export type CreatedWebhook = z.infer<typeof CreatedWebhook>
export const RotatedSecret = z.object({ id: z.string(), secret: z.string(), previous_secret_expires_at: z.iso.datetime() })
export type RotatedSecret = z.infer<typeof RotatedSecret>
export const WebhookList = z.object({ data: z.array(Webhook) })
export const DeliveryList = z.object({ data: z.array(Delivery), next_cursor: z.string().nullable() })
export type DeliveryList = z.infer<typeof DeliveryList>

const DeliveryQuery = z.strictObject({
  status: DeliveryStatus.optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  /** The `next_cursor` of the previous page. */
  cursor: z.string().regex(/^dlv_[0-9A-HJKMNP-TV-Z]{26}$/, 'must be a delivery id (next_cursor)').optional(),
})

/** The OpenAPI entries of these routes (and the stream's), merged into /openapi.json. */
export const DELIVERY_OPERATIONS = {
  'POST /v1/webhooks': { summary: 'Create a webhook endpoint; the answer carries its secret (shown once)', auth: 'admin', body: WebhookInput, response: CreatedWebhook },
  'GET /v1/webhooks': { summary: 'Webhook endpoints', auth: 'admin', response: WebhookList },
  'GET /v1/webhooks/{id}': { summary: 'One webhook endpoint', auth: 'admin', response: Webhook },
  'PATCH /v1/webhooks/{id}': { summary: 'Change an endpoint (url, filters, format, enabled)', auth: 'admin', body: WebhookPatch, response: Webhook },
  'DELETE /v1/webhooks/{id}': { summary: 'Delete an endpoint (its open deliveries are dropped)', auth: 'admin' },
  'POST /v1/webhooks/{id}/rotate-secret': {
    summary: 'New signing secret; the old one also signs for 24 h',
    auth: 'admin',
    response: RotatedSecret,
  },
  'GET /v1/webhooks/{id}/deliveries': {
    summary: 'Deliveries of an endpoint, newest first, with every attempt (status code, error); `status`, `limit`, `cursor`',
    auth: 'admin',
    response: DeliveryList,
  },
  'GET /v1/deliveries/{id}': { summary: 'One delivery with its attempts', auth: 'admin', response: Delivery },
  'POST /v1/deliveries/{id}/retry': { summary: 'Replay a delivered or dead-lettered delivery (same webhook-id, a new round of attempts)', auth: 'admin', response: Delivery },
  'GET /v1/signals/stream': {
    summary: 'Live signals as server-sent events (admin or read token); `kinds`, resume with Last-Event-ID',
    auth: 'admin',
  },
} as const

async function jsonBody(c: Context): Promise<unknown> {
  try {
    return await c.req.json()
  } catch {
    throw new ApiError({ code: 'BAD_REQUEST', message: 'the body is not valid JSON', details: [{ path: '(body)', message: 'not JSON' }] })
  }
}

function parse<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  const r = schema.safeParse(value)
  if (!r.success) throw new ApiError({ code: 'BAD_REQUEST', message: `invalid ${what}`, details: zodDetails(r.error) })
  return r.data
}

/** A store failure is a 503 (retry later), never a 500. */
const storeCall = <T>(p: Promise<T>): Promise<T> =>
  p.catch((err) => {
    throw err instanceof ApiError ? err : new StoreUnavailableError(err)
  })

/**
 * Webhook endpoints (admin): CRUD, secret rotation, the delivery log, manual replay. Changes go
 * to the store first, then to the running dispatcher (if this runtime has one).
 */
/** Why a webhook target is refused (this runtime's check, resolving names where it can), or undefined: the API and the workspace ask the same. */
export function targetRefusal(deps: Pick<AppDeps, 'webhookTargetRefusal' | 'config'>): (url: string) => Promise<string | undefined> {
  const allowPrivate = allowPrivateTargets(deps.config)
  return async (url) => (deps.webhookTargetRefusal ? await deps.webhookTargetRefusal(url) : urlRefusal(url, allowPrivate))
}

export function webhookRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>()
  const admin = requireAdmin(deps.adminToken)
  const now = deps.now ?? Date.now
  const webhooks = deps.delivery?.dispatcher.webhooks ?? new WebhookStore(deps.store, now)
  const outbox = deps.delivery?.dispatcher.outbox ?? new OutboxStore(deps.store)
  const dispatcher = deps.delivery?.dispatcher
  const refusal = targetRefusal(deps)
  /** A refused target is a 400 on `url` when the endpoint is made, not a delivery dead at its first attempt. */
  const checkUrl = async (url: string | undefined) => {
    if (url === undefined) return
    const why = await refusal(url)
    if (why) throw new ApiError({ code: 'BAD_REQUEST', message: `the webhook target is refused: ${why}`, details: [{ path: 'url', message: why }] })
  }

  app.post('/webhooks', admin, async (c) => {
    const input = parse(WebhookInput, await jsonBody(c), 'webhook')
    await checkUrl(input.url)
    const w = await storeCall(webhooks.create(input))
    dispatcher?.webhookChanged(w)
    return c.json({ ...publicWebhook(w), secret: w.secret } satisfies CreatedWebhook, 201)
  })

  app.get('/webhooks', admin, async (c) => {
    const all = await storeCall(webhooks.list())
    return c.json({ data: all.map(publicWebhook) })
  })

  app.get('/webhooks/:id', admin, async (c) => c.json(publicWebhook(await storeCall(webhooks.get(c.req.param('id'))))))

  app.patch('/webhooks/:id', admin, async (c) => {
    const patch = parse(WebhookPatch, await jsonBody(c), 'webhook change')
    await checkUrl(patch.url)
    const w = await storeCall(webhooks.update(c.req.param('id'), patch))
    dispatcher?.webhookChanged(w)
    return c.json(publicWebhook(w))
  })

  app.delete('/webhooks/:id', admin, async (c) => {
    const w = await storeCall(webhooks.remove(c.req.param('id')))
    dispatcher?.webhookChanged(w)
    return c.body(null, 204)
  })

  app.post('/webhooks/:id/rotate-secret', admin, async (c) => {
    const w = await storeCall(webhooks.rotateSecret(c.req.param('id')))
    dispatcher?.webhookChanged(w)
    return c.json({
      id: w.id,
      secret: w.secret,
      previous_secret_expires_at: new Date(w.previous_secret_until as number).toISOString(),
    } satisfies RotatedSecret)
  })

  app.get('/webhooks/:id/deliveries', admin, async (c) => {
    const q = parse(DeliveryQuery, c.req.query(), 'query')
    const w = await storeCall(webhooks.get(c.req.param('id')))
    const page = await storeCall(outbox.list(w.id, { status: q.status, limit: q.limit, before: q.cursor }))
    return c.json(page satisfies DeliveryList)
  })

  app.get('/deliveries/:id', admin, async (c) => {
    const d = await storeCall(outbox.get(c.req.param('id')))
    const page = await storeCall(outbox.attempts(d.webhook_id, [d.id]))
    return c.json(publicDelivery(d, page.get(d.id) ?? []))
  })

  app.post('/deliveries/:id/retry', admin, async (c) => {
    const d = await storeCall(Dispatcher.requeue(webhooks, outbox, c.req.param('id'), now()))
    dispatcher?.enqueue(d)
    await deps.onDeliveryReplayed?.(d)
    const attempts = await storeCall(outbox.attempts(d.webhook_id, [d.id]))
    return c.json(publicDelivery(d, attempts.get(d.id) ?? []), 202)
  })

  return app
}

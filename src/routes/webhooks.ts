import { z } from '@hono/zod-openapi'
import type { Context } from 'hono'
import { Dispatcher } from '../delivery/dispatcher.js'
import { Delivery, DeliveryStatus, OutboxStore, publicDelivery } from '../delivery/outbox.js'
import { publicWebhook, Webhook, WebhookInput, WebhookPatch, WebhookStore } from '../delivery/webhooks.js'
import { allowPrivateTargets } from '../config.js'
import { urlRefusal } from '../delivery/targets.js'
import { ApiError, StoreUnavailableError, zodDetails } from '../errors.js'
import type { AppDeps, AppEnv } from '../env.js'
import { adminRoutes, documentedBody, invalid, ok, router } from './router.js'

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
  const app = router()
  const route = adminRoutes(deps.adminToken)
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

  const WebhookParams = z.object({ id: z.string() })

  app.openapi(
    route({
      method: 'post',
      path: '/webhooks',
      summary: 'Create a webhook endpoint; the answer carries its secret (shown once)',
      // Read by the handler, which names the problem in its own words (and checks the target).
      request: { body: documentedBody(WebhookInput) },
      responses: { 201: ok(CreatedWebhook, 'Created') },
    }),
    async (c) => {
      const input = parse(WebhookInput, await jsonBody(c), 'webhook')
      await checkUrl(input.url)
      const w = await storeCall(webhooks.create(input))
      dispatcher?.webhookChanged(w)
      return c.json({ ...publicWebhook(w), secret: w.secret } satisfies CreatedWebhook, 201)
    },
  )

  app.openapi(route({ method: 'get', path: '/webhooks', summary: 'Webhook endpoints', responses: { 200: ok(WebhookList) } }), async (c) => {
    const all = await storeCall(webhooks.list())
    return c.json({ data: all.map(publicWebhook) }, 200)
  })

  app.openapi(
    route({ method: 'get', path: '/webhooks/{id}', summary: 'One webhook endpoint', request: { params: WebhookParams }, responses: { 200: ok(Webhook) } }),
    async (c) => c.json(publicWebhook(await storeCall(webhooks.get(c.req.param('id')))), 200),
  )

  app.openapi(
    route({
      method: 'patch',
      path: '/webhooks/{id}',
      summary: 'Change an endpoint (url, filters, format, enabled)',
      request: { params: WebhookParams, body: documentedBody(WebhookPatch) },
      responses: { 200: ok(Webhook) },
    }),
    async (c) => {
      const patch = parse(WebhookPatch, await jsonBody(c), 'webhook change')
      await checkUrl(patch.url)
      const w = await storeCall(webhooks.update(c.req.param('id'), patch))
      dispatcher?.webhookChanged(w)
      return c.json(publicWebhook(w), 200)
    },
  )

  app.openapi(
    route({
      method: 'delete',
      path: '/webhooks/{id}',
      summary: 'Delete an endpoint (its open deliveries are dropped)',
      request: { params: WebhookParams },
      responses: { 204: { description: 'Deleted' } },
    }),
    async (c) => {
      const w = await storeCall(webhooks.remove(c.req.param('id')))
      dispatcher?.webhookChanged(w)
      return c.body(null, 204)
    },
  )

  app.openapi(
    route({
      method: 'post',
      path: '/webhooks/{id}/rotate-secret',
      summary: 'New signing secret; the old one also signs for 24 h',
      request: { params: WebhookParams },
      responses: { 200: ok(RotatedSecret) },
    }),
    async (c) => {
      const w = await storeCall(webhooks.rotateSecret(c.req.param('id')))
      dispatcher?.webhookChanged(w)
      return c.json(
        {
          id: w.id,
          secret: w.secret,
          previous_secret_expires_at: new Date(w.previous_secret_until as number).toISOString(),
        } satisfies RotatedSecret,
        200,
      )
    },
  )

  app.openapi(
    route({
      method: 'get',
      path: '/webhooks/{id}/deliveries',
      summary: 'Deliveries of an endpoint, newest first, with every attempt (status code, error); `status`, `limit`, `cursor`',
      request: { params: WebhookParams, query: DeliveryQuery },
      responses: { 200: ok(DeliveryList) },
    }),
    async (c) => {
      const q = c.req.valid('query')
      const w = await storeCall(webhooks.get(c.req.param('id')))
      const page = await storeCall(outbox.list(w.id, { status: q.status, limit: q.limit, before: q.cursor }))
      return c.json(page satisfies DeliveryList, 200)
    },
    invalid('query'),
  )

  app.openapi(
    route({ method: 'get', path: '/deliveries/{id}', summary: 'One delivery with its attempts', request: { params: WebhookParams }, responses: { 200: ok(Delivery) } }),
    async (c) => {
      const d = await storeCall(outbox.get(c.req.param('id')))
      const page = await storeCall(outbox.attempts(d.webhook_id, [d.id]))
      return c.json(publicDelivery(d, page.get(d.id) ?? []), 200)
    },
  )

  app.openapi(
    route({
      method: 'post',
      path: '/deliveries/{id}/retry',
      summary: 'Replay a delivered or dead-lettered delivery (same webhook-id, a new round of attempts)',
      request: { params: WebhookParams },
      responses: { 202: ok(Delivery, 'Queued') },
    }),
    async (c) => {
      const d = await storeCall(Dispatcher.requeue(webhooks, outbox, c.req.param('id'), now()))
      dispatcher?.enqueue(d)
      await deps.onDeliveryReplayed?.(d)
      const attempts = await storeCall(outbox.attempts(d.webhook_id, [d.id]))
      return c.json(publicDelivery(d, attempts.get(d.id) ?? []), 202)
    },
  )

  return app
}

import { createRoute } from '@hono/zod-openapi'
import { requestId } from 'hono/request-id'
import { ingestRoutes } from '../ingest/routes.js'
import { ApiError, handleError } from './errors.js'
import type { AppDeps, AppEnv } from './env.js'
import { requestLogger } from './middleware.js'
import { Readiness } from './readiness.js'
import { serveOpenApi } from './routes/openapi.js'
import { router } from './routes/router.js'
import { eventsRoutes } from './routes/events.js'
import { statsRoutes } from './routes/stats.js'
import { streamRoutes } from './routes/stream.js'
import { webhookRoutes } from './routes/webhooks.js'
import { rulesApi } from './routes/evaluate.js'

/** The whole HTTP surface, independent of the runtime that serves it. */
export function createApp(deps: AppDeps) {
  const app = router()
  app.use(requestId())
  app.use(requestLogger(deps.logger))
  app.onError(handleError)
  app.notFound((c) => {
    throw new ApiError({ code: 'NOT_FOUND', message: `no route ${c.req.method} ${c.req.path}` })
  })

  // Liveness: the process serves requests. Whether it can take writes is /ready's question.
  const health = createRoute({ method: 'get', path: '/health', summary: 'Liveness: the process serves requests', security: [], responses: { 200: { description: 'OK' } } })
  app.openapi(health, (c) => c.json({ status: 'ok', store: deps.store.kind }))
  const readiness = new Readiness({
    store: deps.store,
    writes: deps.sink.health,
    outbox: deps.delivery ? () => deps.delivery?.dispatcher.scanHealth ?? {} : undefined,
    intervalMs: deps.config.READY_INTERVAL_MS,
    now: deps.now ?? Date.now,
  })
  const ready = createRoute({
    method: 'get',
    path: '/ready',
    summary: 'Readiness: the store answers, accepted a write within READY_INTERVAL_MS, and the outbox is draining (503 otherwise)',
    security: [],
    responses: { 200: { description: 'Ready' }, 503: { description: 'Not ready: which check failed' } },
  })
  app.openapi(ready, async (c) => {
    const { ready, checks } = await readiness.check()
    return c.json({ status: ready ? 'ready' : 'unavailable', store: deps.store.kind, checks }, ready ? 200 : 503)
  })
  app.route('/v1', ingestRoutes(deps))
  app.route('/v1', statsRoutes(deps))
  app.route('/v1', webhookRoutes(deps))
  app.route('/v1', streamRoutes(deps))
  app.route('/v1', rulesApi(deps))
  app.route('/v1', eventsRoutes(deps))
  serveOpenApi(app)
  return app
}

export type App = ReturnType<typeof createApp>

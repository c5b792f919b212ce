import { Hono } from 'hono'
import { requestId } from 'hono/request-id'
import { ingestRoutes } from '../ingest/routes.js'
import { ApiError, handleError } from './errors.js'
import type { AppDeps, AppEnv } from './env.js'
import { requestLogger } from './middleware.js'
import { openApiRoutes } from './routes/openapi.js'
import { statsRoutes } from './routes/stats.js'
import { streamRoutes } from './routes/stream.js'
import { webhookRoutes } from './routes/webhooks.js'
import { rulesApi } from './routes/evaluate.js'

/** The whole HTTP surface, independent of the runtime that serves it. */
export function createApp(deps: AppDeps) {
  const app = new Hono<AppEnv>()
  app.use(requestId())
  app.use(requestLogger(deps.logger))
  app.onError(handleError)
  app.notFound((c) => {
    throw new ApiError({ code: 'NOT_FOUND', message: `no route ${c.req.method} ${c.req.path}` })
  })

  app.get('/health', async (c) => {
    try {
      await deps.store.ping()
    } catch (err) {
      return c.json({ status: 'unavailable', store: deps.store.kind, error: String(err) }, 503)
    }
    return c.json({ status: 'ok', store: deps.store.kind })
  })
  app.route('/', openApiRoutes())
  app.route('/v1', ingestRoutes(deps))
  app.route('/v1', statsRoutes(deps))
  app.route('/v1', webhookRoutes(deps))
  app.route('/v1', streamRoutes(deps))
  app.route('/v1', rulesApi(deps))
  return app
}

export type App = ReturnType<typeof createApp>

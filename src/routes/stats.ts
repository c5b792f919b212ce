import { createRoute, z } from '@hono/zod-openapi'
import { StoreUnavailableError } from '../errors.js'
import type { AppDeps } from '../env.js'
import { requireAdmin } from '../middleware.js'
import { readStats } from '../stats/queries.js'
import { ADMIN, errors, ok, router } from './router.js'

export const StatsResponse = z.object({
  events: z.number(),
  users: z.number(),
  accounts: z.number(),
  signals: z.number(),
  by_type: z.record(z.string(), z.number()),
  ingest_errors: z.number(),
  ingest_warnings: z.number(),
})
export type StatsResponse = z.infer<typeof StatsResponse>

export function statsRoutes(deps: AppDeps) {
  const app = router()
  const route = createRoute({
    method: 'get',
    path: '/stats',
    summary: 'Counts: events (once per messageId), users, accounts, signals',
    security: ADMIN,
    middleware: [requireAdmin(deps.adminToken)] as const,
    responses: { 200: ok(StatsResponse), ...errors },
  })
  app.openapi(route, async (c) => {
    const stats = await readStats(deps.store).catch((err) => {
      throw new StoreUnavailableError(err)
    })
    return c.json(StatsResponse.parse(stats), 200)
  })
  return app
}

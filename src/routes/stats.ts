import { z } from '@hono/zod-openapi'
import { StoreUnavailableError } from '../errors.js'
import type { AppDeps } from '../env.js'
import { readStats } from '../stats/queries.js'
import { adminRoutes, ok, router } from './router.js'

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
  const route = adminRoutes(deps.adminToken)
  const declared = route({
    method: 'get',
    path: '/stats',
    summary: 'Counts: events (once per messageId), users, accounts, signals',
    responses: { 200: ok(StatsResponse) },
  })
  app.openapi(declared, async (c) => {
    const stats = await readStats(deps.store).catch((err) => {
      throw new StoreUnavailableError(err)
    })
    return c.json(StatsResponse.parse(stats), 200)
  })
  return app
}

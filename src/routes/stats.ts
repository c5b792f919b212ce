import { Hono } from 'hono'
import { z } from 'zod'
import { StoreUnavailableError } from '../errors.js'
import type { AppDeps, AppEnv } from '../env.js'
import { requireAdmin } from '../middleware.js'
import { readStats } from '../stats/queries.js'

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
  const app = new Hono<AppEnv>()
  app.get('/stats', requireAdmin(deps.adminToken), async (c) => {
    const stats = await readStats(deps.store).catch((err) => {
      throw new StoreUnavailableError(err)
    })
    return c.json(StatsResponse.parse(stats))
  })
  return app
}

import { Hono } from 'hono'
import { z } from 'zod'
import { StoreUnavailableError } from '../errors.js'
import type { AppDeps, AppEnv } from '../env.js'
import { requireAdmin } from '../middleware.js'

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

/** Counts over the store. Events are deduplicated at write time, so `count()` counts each messageId once. */
export async function readStats(store: AppDeps['store']): Promise<StatsResponse> {
  const [byType, users, accounts, errors, signals] = await Promise.all([
    store.query<{ type: string; n: number }>('SELECT type, count() AS n FROM events_v1 GROUP BY type'),
    store.query<{ n: number }>('SELECT uniqExact(user_id) AS n FROM users_v1'),
    store.query<{ n: number }>('SELECT uniqExact(account_id) AS n FROM accounts_v1'),
    store.query<{ level: string; n: number }>('SELECT level, count() AS n FROM ingest_errors_v1 GROUP BY level'),
    store.query<{ n: number }>('SELECT uniqExact(id) AS n FROM signals_v1'),
  ])
  const by_type = Object.fromEntries(byType.map((r) => [r.type, Number(r.n)]))
  return StatsResponse.parse({
    events: Object.values(by_type).reduce((a, b) => a + b, 0),
    users: Number(users[0]?.n ?? 0),
    accounts: Number(accounts[0]?.n ?? 0),
    signals: Number(signals[0]?.n ?? 0),
    by_type,
    ingest_errors: Number(errors.find((r) => r.level === 'error')?.n ?? 0),
    ingest_warnings: Number(errors.find((r) => r.level === 'warning')?.n ?? 0),
  })
}

export function statsRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>()
  app.get('/stats', requireAdmin(deps.adminToken), async (c) => {
    const stats = await readStats(deps.store).catch((err) => {
      throw new StoreUnavailableError(err)
    })
    return c.json(stats)
  })
  return app
}

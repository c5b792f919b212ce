import { Hono } from 'hono'
import { z } from 'zod'
import type { Lifecycle } from '../lifecycle/lifecycle.js'
import { ApiError, zodDetails } from '../errors.js'
import type { AppDeps, AppEnv } from '../env.js'
import { requireAdmin } from '../middleware.js'
import { SubjectType } from '../signals.js'
import { IsoTime } from './rules.js'

const DAY = 86_400_000

/** GET /v1/funnel query: the period (default: the last 90 days) and the subject type (default account). */
export const FunnelQuery = z
  .strictObject({
    from: IsoTime.optional(),
    to: IsoTime.optional(),
    subject_type: SubjectType.default('account'),
  })

/** The funnel report (admin): per stage, entered, conversion to the next, time in stage, stalls. */
export function funnelRoutes(deps: AppDeps, lifecycle: Lifecycle) {
  const app = new Hono<AppEnv>()
  const now = deps.now ?? Date.now
  app.get('/funnel', requireAdmin(deps.adminToken), async (c) => {
    const parsed = FunnelQuery.safeParse(c.req.query())
    if (!parsed.success) {
      const details = zodDetails(parsed.error)
      throw new ApiError({ code: 'BAD_REQUEST', message: `invalid query: ${details[0]?.path}: ${details[0]?.message}`, details })
    }
    const to = parsed.data.to ?? now()
    const from = parsed.data.from ?? to - 90 * DAY
    if (from > to) throw new ApiError({ code: 'BAD_REQUEST', message: 'from is after to', details: [{ path: 'from', message: 'must not be after to' }] })
    return c.json(await lifecycle.funnel(parsed.data.subject_type, from, to))
  })
  return app
}

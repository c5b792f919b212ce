import { Hono } from 'hono'
import { z } from 'zod'
import { Duration } from '../../rules/schema.js'
import { checkRuleId, getRule } from '../../rules/store.js'
import { ApiError, zodDetails } from '../errors.js'
import type { AppDeps, AppEnv } from '../env.js'
import { requireAdmin } from '../middleware.js'
import { qualityReport } from '../quality/quality.js'
import { IsoTime } from './rules.js'

const DAY = 86_400_000

/** GET /v1/rules/:id/quality query: the period of fires (default: the 90 days before `to`, itself default now) and the horizon. */
export const QualityQuery = z
  .strictObject({
    from: IsoTime.optional(),
    to: IsoTime.optional(),
    /** Overrides the rule's horizon (default 30d for pql / mql, 60d for churn_risk and expansion). */
    horizon: Duration.optional(),
  })

/** The quality of a saved rule's signals against its outcome (admin). */
export function qualityRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>()
  const now = deps.now ?? Date.now
  app.get('/rules/:id/quality', requireAdmin(deps.adminToken), async (c) => {
    const id = checkRuleId(c.req.param('id'))
    const parsed = QualityQuery.safeParse(c.req.query())
    if (!parsed.success) {
      const details = zodDetails(parsed.error)
      throw new ApiError({ code: 'BAD_REQUEST', message: `invalid query: ${details[0]?.path}: ${details[0]?.message}`, details })
    }
    const t = now()
    const to = parsed.data.to ?? t
    const from = parsed.data.from ?? to - 90 * DAY
    if (from > to) throw new ApiError({ code: 'BAD_REQUEST', message: 'from is after to', details: [{ path: 'from', message: 'must not be after to' }] })
    const stored = await getRule(deps.store, id)
    if (!stored || stored.deleted) throw new ApiError({ code: 'NOT_FOUND', message: `no rule ${id}` })
    return c.json(await qualityReport(deps.store, stored.rule, { from, to, now: t, horizon: parsed.data.horizon }))
  })
  return app
}

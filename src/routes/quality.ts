import { z } from '@hono/zod-openapi'
import { Duration } from '../../rules/schema.js'
import { checkRuleId, getRule } from '../../rules/store.js'
import { ApiError } from '../errors.js'
import type { AppDeps } from '../env.js'
import { QualityReport, qualityReport } from '../quality/quality.js'
import { adminRoutes, ok, router } from './router.js'
import { IsoTime, reportPeriod } from './rules.js'

/** GET /v1/rules/:id/quality query: the period of fires (default: the 90 days before `to`, itself default now) and the horizon. */
export const QualityQuery = z.strictObject({
  from: IsoTime.optional(),
  to: IsoTime.optional(),
  /** Overrides the rule's horizon (default 30d for pql / mql, 60d for churn_risk and expansion). */
  horizon: Duration.optional(),
})

/** The quality of a saved rule's signals against its outcome (admin). */
export function qualityRoutes(deps: AppDeps) {
  const app = router()
  const route = adminRoutes(deps.adminToken)
  const now = deps.now ?? Date.now
  const declared = route({
    method: 'get',
    path: '/rules/{id}/quality',
    summary: 'Quality of a rule against its outcome: precision, base rate, lift, recall, lead time, useful share',
    request: { params: z.object({ id: z.string() }), query: QualityQuery },
    responses: { 200: ok(QualityReport) },
  })
  app.openapi(declared, async (c) => {
    const id = checkRuleId(c.req.param('id'))
    const q = c.req.valid('query')
    const t = now()
    const { from, to } = reportPeriod(q, t)
    const stored = await getRule(deps.store, id)
    if (!stored || stored.deleted) throw new ApiError({ code: 'NOT_FOUND', message: `no rule ${id}` })
    return c.json(await qualityReport(deps.store, stored.rule, { from, to, now: t, horizon: q.horizon }), 200)
  })
  return app
}

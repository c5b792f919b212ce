import { z } from '@hono/zod-openapi'
import type { Lifecycle } from '../lifecycle/lifecycle.js'
import { ApiError, zodDetails } from '../errors.js'
import type { AppDeps } from '../env.js'
import { SubjectType } from '../signals.js'
import { getRule } from '../../rules/store.js'
import { IsoTime, reportPeriod } from './rules.js'
import { adminRoutes, router } from './router.js'

/** GET /v1/funnel query: the period (default: the last 90 days) and the subject type (default account). */
export const FunnelQuery = z
  .strictObject({
    from: IsoTime.optional(),
    to: IsoTime.optional(),
    subject_type: SubjectType.default('account'),
    /** A rule id: split the figures between subjects that fired it and those that did not. */
    signal: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, 'must be a rule id').optional(),
    /** `month`: the funnel of each month of entry (the conversion-rate trend). */
    cohort: z.enum(['month']).optional(),
  })

/** The funnel report (admin): per stage, entered, conversion to the next, time in stage, stalls. */
export function funnelRoutes(deps: AppDeps, lifecycle: Lifecycle) {
  const app = router()
  const route = adminRoutes(deps.adminToken)
  const now = deps.now ?? Date.now
  const declared = route({
    method: 'get',
    path: '/funnel',
    summary: 'Funnel: entered, conversion, time in stage, where subjects stall; split by a signal, or by month of entry',
    request: { query: FunnelQuery },
    responses: { 200: { description: 'OK' } },
  })
  app.openapi(declared, async (c) => {
    const q = c.req.valid('query')
    const { from, to } = reportPeriod(q, now())
    const { subject_type, signal, cohort } = q
    // A deleted rule still has its signals: any version will do.
    if (signal && !(await getRule(deps.store, signal))) throw new ApiError({ code: 'NOT_FOUND', message: `no rule ${signal}`, details: [{ path: 'signal', message: 'no such rule' }] })
    return c.json(await lifecycle.funnel(subject_type, from, to, { signal, cohort }))
  })
  return app
}

import { z } from '@hono/zod-openapi'
import type { Lifecycle } from '../lifecycle/lifecycle.js'
import { stringifyJson } from '../../ingest/json.js'
import { ApiError, zodDetails } from '../errors.js'
import type { AppDeps } from '../env.js'
import { SubjectType } from '../signals.js'
import { subjectProfile } from '../subjects/profile.js'
import { adminRoutes, documentedBody, router } from './router.js'
import { USAGE_DAYS } from '../subjects/queries.js'

export const StageRequest = z.strictObject({
  stage: z.string().min(1),
  /** Why (shown in the subject's history), e.g. "SQL: accepted by AE in Salesforce". */
  reason: z.string().max(1000).default(''),
  /** Who made the move (a person, a CRM integration), shown in the subject's history. */
  by: z.string().max(200).default(''),
})

/** Accounts and users as sales and CS see them; stage moves from a CRM. */
export function subjectsRoutes(deps: AppDeps, lifecycle: Lifecycle) {
  const app = router()
  const route = adminRoutes(deps.adminToken)
  const now = deps.now ?? Date.now

  for (const type of ['account', 'user'] as const) {
    const declared = route({
      method: 'get',
      path: `/${type}s/{id}`,
      summary: `A${type === 'account' ? 'n' : ''} ${type}: stage, traits, usage per day, open signals`,
      request: {
        params: z.object({ id: z.string() }),
        /** The days of the usage series, up to today (default 30). */
        query: z.object({ days: z.coerce.number().int().min(1).max(365).default(USAGE_DAYS) }),
      },
      responses: { 200: { description: 'OK' } },
    })
    app.openapi(declared, async (c) => {
      const id = c.req.param('id')
      const { days } = c.req.valid('query')
      const profile = await subjectProfile(deps.store, lifecycle, type, id, now(), days)
      if (!profile) throw new ApiError({ code: 'NOT_FOUND', message: `no ${type} ${id}` })
      // Trait values keep every digit as sent (an integer beyond 2^53 is a LosslessNumber here).
      return c.body(stringifyJson(profile, true), 200, { 'content-type': 'application/json; charset=UTF-8' })
    })
  }

  const stage = route({
    method: 'post',
    path: '/subjects/{type}/{id}/stage',
    summary: 'Move a subject to a lifecycle stage (from a CRM)',
    // The type is checked by the handler, which names it in its own words.
    request: { params: z.object({ type: z.string(), id: z.string() }), body: documentedBody(StageRequest) },
    responses: { 201: { description: 'The transition recorded' } },
  })
  app.openapi(stage, async (c) => {
    const type = SubjectType.safeParse(c.req.param('type'))
    if (!type.success) {
      throw new ApiError({ code: 'BAD_REQUEST', message: 'the subject type is account or user', details: [{ path: 'type', message: 'must be account or user' }] })
    }
    let body: unknown
    try {
      body = await c.req.json()
    } catch {
      throw new ApiError({ code: 'BAD_REQUEST', message: 'the body is not valid JSON; expected {"stage": "...", "reason": "..."}' })
    }
    const parsed = StageRequest.safeParse(body)
    if (!parsed.success) {
      const details = zodDetails(parsed.error)
      throw new ApiError({ code: 'BAD_REQUEST', message: `invalid request: ${details[0]?.path}: ${details[0]?.message}`, details })
    }
    const transition = await lifecycle.setStage(type.data, c.req.param('id'), parsed.data.stage, parsed.data.reason, now(), parsed.data.by)
    return c.json(transition, 201)
  })

  return app
}

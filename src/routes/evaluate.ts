import { z } from '@hono/zod-openapi'
import type { Evaluator } from '../../rules/evaluator.js'
import { ApiError, zodDetails } from '../errors.js'
import type { AppDeps } from '../env.js'
import { funnelRoutes } from './funnel.js'
import { outcomesRoutes } from './outcomes.js'
import { qualityRoutes } from './quality.js'
import { rulesRoutes } from './rules.js'
import { adminRoutes, documentedBody, router } from './router.js'
import { signalsRoutes } from './signals.js'
import { subjectsRoutes } from './subjects.js'

/** POST /v1/evaluate: everything optional; no body evaluates every enabled rule for every subject. */
export const EvaluateRequest = z.strictObject({
  /** Only these rules. */
  rule_ids: z.array(z.string().min(1)).min(1).max(1000).optional(),
  /** Only these subjects (an incremental evaluation). */
  subjects: z
    .strictObject({
      account: z.array(z.string().min(1)).max(100_000).default([]),
      user: z.array(z.string().min(1)).max(100_000).default([]),
    })
    .optional(),
})

/** Run the evaluator now (admin). Evaluations are serialized with the background ones. */
export function evaluateRoutes(deps: AppDeps, evaluator: Evaluator) {
  const app = router()
  const route = adminRoutes(deps.adminToken)
  const declared = route({
    method: 'post',
    path: '/evaluate',
    summary: 'Evaluate now: {fired, resolved, errors}; no body evaluates every enabled rule for every subject',
    // Optional, and an empty body is {}: the handler reads it.
    request: { body: { ...documentedBody(EvaluateRequest), required: false } },
    responses: { 200: { description: 'OK' } },
  })
  app.openapi(declared, async (c) => {
    const text = await c.req.text()
    let body: unknown = {}
    if (text.trim()) {
      try {
        body = JSON.parse(text)
      } catch (err) {
        throw new ApiError({ code: 'BAD_REQUEST', message: `the body is not valid JSON: ${err instanceof Error ? err.message : err}` })
      }
    }
    const parsed = EvaluateRequest.safeParse(body)
    if (!parsed.success) {
      const details = zodDetails(parsed.error)
      throw new ApiError({ code: 'BAD_REQUEST', message: `invalid request: ${details[0]?.path}: ${details[0]?.message}`, details })
    }
    const result = await evaluator.evaluate({ ruleIds: parsed.data.rule_ids, subjects: parsed.data.subjects })
    return c.json(result)
  })
  return app
}

/** The rules layer's HTTP surface: rules, backtests, signals, evaluate, subjects and the funnel. */
export function rulesApi(deps: AppDeps) {
  const { lifecycle, evaluator } = deps
  const app = router()
  app.route('/', rulesRoutes(deps))
  app.route('/', qualityRoutes(deps))
  app.route('/', outcomesRoutes(deps))
  app.route('/', signalsRoutes(deps))
  app.route('/', evaluateRoutes(deps, evaluator))
  app.route('/', subjectsRoutes(deps, lifecycle))
  app.route('/', funnelRoutes(deps, lifecycle))
  return app
}

import { z } from '@hono/zod-openapi'
import { backtest, MAX_MOMENTS, type BacktestResult } from '../../rules/backtest.js'
import { Duration, parseDuration, type Rule, RuleDocument, ruleJsonSchema } from '../../rules/schema.js'
import {
  checkRuleId,
  deleteRule,
  getRule,
  listRules,
  listVersions,
  parseRuleText,
  putRule,
  type StoredRule,
  validateRule,
} from '../../rules/store.js'
import { ApiError, zodDetails } from '../errors.js'
import { backtestQuality } from '../quality/quality.js'
import type { AppDeps } from '../env.js'
import { loadStateStatus, type Plan, planOf } from '../../rules/plan.js'
import { adminRoutes, documentedBody, router } from './router.js'

/** A rule as the API shows it. */
export type RuleResponse = {
  id: string
  version: number
  enabled: boolean
  deleted: boolean
  created_at: string
  rule: Rule
}

export const toRuleResponse = (s: StoredRule): RuleResponse => ({
  id: s.id,
  version: s.version,
  enabled: s.enabled,
  deleted: s.deleted,
  created_at: s.created_at,
  rule: s.rule,
})

const MAX_RULE_BYTES = 256 * 1024

/** ISO-8601 time (an offset-less time reads as UTC) → epoch ms. */
export const IsoTime = z
  .string()
  .transform((s, ctx) => {
    const ms = Date.parse(/(Z|[+-]\d\d:?\d\d)$/i.test(s) || !/T/.test(s) ? s : `${s}Z`)
    if (Number.isNaN(ms)) {
      ctx.addIssue({ code: 'custom', message: 'must be an ISO-8601 time, e.g. 2026-01-31T00:00:00Z' })
      return z.NEVER
    }
    return ms
  })

/**
 * The period of a report (quality, funnel): `to` defaults to now, `from` to 90 days before `to`;
 * a `from` after `to` is an error naming it.
 */
export function reportPeriod(q: { from?: number; to?: number }, now: number): { from: number; to: number } {
  const to = q.to ?? now
  const from = q.from ?? to - 90 * 86_400_000
  if (from > to) throw new ApiError({ code: 'BAD_REQUEST', message: 'from is after to', details: [{ path: 'from', message: 'must not be after to' }] })
  return { from, to }
}

const DurationMs = z.string().transform((s, ctx) => {
  try {
    return parseDuration(s)
  } catch {
    ctx.addIssue({ code: 'custom', message: 'must be a duration: a whole number and a unit (ms, s, m, h, d, w), e.g. 1d' })
    return z.NEVER
  }
})

export const BacktestRequest = z
  .strictObject({
    from: IsoTime,
    to: IsoTime,
    /** Time between two evaluated moments (default 1d). */
    step: DurationMs.default(86_400_000),
    /** A rule document to test instead of the saved one (it need not be saved). */
    rule: z.unknown().optional(),
    /** The horizon of the quality figures (default: the rule's, else its kind's). */
    horizon: Duration.optional(),
  })
  .superRefine((b, ctx) => {
    if (b.to < b.from) ctx.addIssue({ code: 'custom', path: ['to'], message: 'must not be before from' })
    else if (Math.floor((b.to - b.from) / b.step) + 1 > MAX_MOMENTS) {
      ctx.addIssue({ code: 'custom', path: ['step'], message: `from..to every step gives more than ${MAX_MOMENTS} moments; use a longer step` })
    }
  })

async function readBody(req: Request): Promise<string> {
  const text = await req.text()
  if (new TextEncoder().encode(text).length > MAX_RULE_BYTES) {
    throw new ApiError({ code: 'PAYLOAD_TOO_LARGE', message: `a rule document is at most ${MAX_RULE_BYTES / 1024} KB` })
  }
  return text
}

/** A JSON request body; an empty one is `{}`, so its schema names what is missing. */
export function parseJsonBody(text: string): unknown {
  if (!text.trim()) return {}
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new ApiError({ code: 'BAD_REQUEST', message: `the body is not valid JSON: ${err instanceof Error ? err.message : err}` })
  }
}

/** Rule management (admin): versioned documents, their JSON Schema, and backtests. */
// Ids and versions are checked by the handlers (checkRuleId names the problem): documented here, not validated twice.
const RuleIdParam = z.object({ id: z.string() })

export function rulesRoutes(deps: AppDeps) {
  const app = router()
  const route = adminRoutes(deps.adminToken)
  const now = deps.now ?? Date.now

  app.openapi(route({
    method: 'get',
    path: '/rules/schema',
    summary: 'JSON Schema of rule documents',
    responses: { 200: { description: 'OK' } },
  }), (c) => c.json(ruleJsonSchema()))

  app.openapi(route({
    method: 'get',
    path: '/rules',
    summary: 'Current rules',
    responses: { 200: { description: 'OK' } },
  }), async (c) => {
    const rules = await listRules(deps.store)
    return c.json({ data: rules.map(toRuleResponse) })
  })

  app.openapi(route({
    method: 'get',
    path: '/rules/{id}',
    summary: 'A rule (`?version=N` for an earlier one), with its `plan`: which backend answers it (the per-day state or the raw events) and why',
    request: { params: RuleIdParam, query: z.object({ version: z.string().optional() }) },
    responses: { 200: { description: 'OK' } },
  }), async (c) => {
    const id = checkRuleId(c.req.param('id'))
    const v = c.req.query('version')
    const version = v === undefined ? undefined : Number(v)
    if (version !== undefined && (!Number.isInteger(version) || version < 1)) {
      throw new ApiError({ code: 'BAD_REQUEST', message: 'version must be a positive integer', details: [{ path: 'version', message: 'must be a positive integer' }] })
    }
    const stored = await getRule(deps.store, id, version)
    if (!stored) throw new ApiError({ code: 'NOT_FOUND', message: version ? `rule ${id} has no version ${version}` : `no rule ${id}` })
    if (stored.deleted && version === undefined) {
      throw new ApiError({ code: 'NOT_FOUND', message: `rule ${id} was deleted (version ${stored.version})` })
    }
    // Which backend answers the rule, and why (the per-day state, or the raw events for this rule).
    const plan: Plan =
      deps.config.RULES_BACKEND === 'events'
        ? { backend: 'events', why: 'RULES_BACKEND=events: every rule reads the raw events' }
        : planOf(stored.rule, await loadStateStatus(deps.store))
    return c.json({ ...toRuleResponse(stored), plan })
  })

  app.openapi(route({
    method: 'get',
    path: '/rules/{id}/versions',
    summary: 'Version history of a rule',
    request: { params: RuleIdParam },
    responses: { 200: { description: 'OK' } },
  }), async (c) => {
    const id = checkRuleId(c.req.param('id'))
    const versions = await listVersions(deps.store, id)
    if (versions.length === 0) throw new ApiError({ code: 'NOT_FOUND', message: `no rule ${id}` })
    return c.json({ id, data: versions })
  })

  app.openapi(route({
    method: 'put',
    path: '/rules/{id}',
    summary: 'Create or update a rule (a new version); JSON or YAML',
    request: { params: RuleIdParam, body: documentedBody(RuleDocument, ['application/json', 'application/yaml']) },
    responses: { 200: { description: 'Updated or unchanged' }, 201: { description: 'Created' } },
  }), async (c) => {
    const id = checkRuleId(c.req.param('id'))
    const text = await readBody(c.req.raw)
    const docs = parseRuleText(text, c.req.header('content-type'))
    if (docs.length !== 1) {
      throw new ApiError({ code: 'BAD_REQUEST', message: `PUT /v1/rules/${id} takes one rule document; the body has ${docs.length}` })
    }
    const rule = validateRule(docs[0], id)
    const { stored, status } = await putRule(deps.store, rule, text, now())
    return c.json({ ...toRuleResponse(stored), status }, status === 'created' ? 201 : 200)
  })

  app.openapi(route({
    method: 'delete',
    path: '/rules/{id}',
    summary: 'Delete a rule (a tombstone version)',
    request: { params: RuleIdParam },
    responses: { 200: { description: 'OK' } },
  }), async (c) => {
    const id = checkRuleId(c.req.param('id'))
    const stored = await deleteRule(deps.store, id, now())
    if (!stored) throw new ApiError({ code: 'NOT_FOUND', message: `no rule ${id}` })
    return c.json({ id, version: stored.version, deleted: true })
  })

  app.openapi(route({
    method: 'post',
    path: '/rules/{id}/backtest',
    summary: 'What a rule would have fired over stored history, and the quality of those fires',
    request: { params: RuleIdParam, body: documentedBody(BacktestRequest) },
    responses: { 200: { description: 'OK' } },
  }), async (c) => {
    const id = checkRuleId(c.req.param('id'))
    const parsed = BacktestRequest.safeParse(parseJsonBody(await readBody(c.req.raw)))
    if (!parsed.success) {
      const details = zodDetails(parsed.error)
      throw new ApiError({ code: 'BAD_REQUEST', message: `invalid backtest request: ${details[0]?.path}: ${details[0]?.message}`, details })
    }
    const { from, to, step } = parsed.data
    let rule: Rule
    let version: number | null = null
    if (parsed.data.rule !== undefined) {
      rule = validateRule(parsed.data.rule, id, ['rule'])
    } else {
      const stored = await getRule(deps.store, id)
      if (!stored || stored.deleted) throw new ApiError({ code: 'NOT_FOUND', message: `no rule ${id} (post one inline as "rule" to test it unsaved)` })
      rule = stored.rule
      version = stored.version
    }
    const result: BacktestResult = await backtest(deps.store, rule, { from, to, step, version })
    return c.json({ ...result, ...(await backtestQuality(deps.store, rule, result, { from, to, now: now(), horizon: parsed.data.horizon })) })
  })

  return app
}

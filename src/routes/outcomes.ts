import { z } from '@hono/zod-openapi'
import { parseRuleText } from '../../rules/store.js'
import { ApiError } from '../errors.js'
import type { AppDeps } from '../env.js'
import {
  checkOutcomeId,
  deleteOutcome,
  getOutcome,
  listOutcomes,
  listOutcomeVersions,
  putOutcome,
  type StoredOutcome,
} from '../quality/outcome-store.js'
import { type Outcome, OutcomeDocument, outcomeJsonSchema, parseOutcome } from '../quality/outcomes.js'
import { adminRoutes, documentedBody, ok, router } from './router.js'

/** An outcome as the API shows it. */
export const OutcomeResponse = z.object({ id: z.string(), version: z.number().int(), deleted: z.boolean(), created_at: z.iso.datetime(), outcome: OutcomeDocument })
export type OutcomeResponse = z.infer<typeof OutcomeResponse>

const toResponse = (s: StoredOutcome): OutcomeResponse => ({ id: s.id, version: s.version, deleted: s.deleted, created_at: s.created_at, outcome: s.outcome })

const MAX_BYTES = 64 * 1024

/** One outcome document of a PUT body: `id` from the path when the body has none, and equal to it otherwise. */
function outcomeFromBody(text: string, contentType: string | undefined, id: string): Outcome {
  if (new TextEncoder().encode(text).length > MAX_BYTES) {
    throw new ApiError({ code: 'PAYLOAD_TOO_LARGE', message: `an outcome document is at most ${MAX_BYTES / 1024} KB` })
  }
  const docs = parseRuleText(text, contentType)
  if (docs.length !== 1) throw new ApiError({ code: 'BAD_REQUEST', message: `PUT /v1/outcomes/${id} takes one outcome document; the body has ${docs.length}` })
  let doc = docs[0]
  if (doc && typeof doc === 'object' && !Array.isArray(doc)) {
    const given = (doc as Record<string, unknown>).id
    if (given === undefined) doc = { ...doc, id }
    else if (given !== id) {
      throw new ApiError({
        code: 'BAD_REQUEST',
        message: `the body's id "${String(given)}" does not match the id in the path "${id}"`,
        details: [{ path: 'id', message: `must equal "${id}" (the id in the path) or be omitted` }],
      })
    }
  }
  return parseOutcome(doc)
}

// The id is checked by the handlers (checkOutcomeId), which name it in their own words.
const IdParams = z.object({ id: z.string() })
const VersionQuery = z.object({ version: z.coerce.number().int('must be a positive integer').min(1, 'must be a positive integer').optional() })

/** Outcome management (admin): versioned documents like rules, and their JSON Schema. */
export function outcomesRoutes(deps: AppDeps) {
  const app = router()
  const route = adminRoutes(deps.adminToken)
  const now = deps.now ?? Date.now

  app.openapi(
    route({ method: 'get', path: '/outcomes/schema', summary: 'JSON Schema of outcome documents', responses: { 200: { description: 'OK' } } }),
    (c) => c.json(outcomeJsonSchema(), 200),
  )

  app.openapi(
    route({ method: 'get', path: '/outcomes', summary: 'Current outcomes', responses: { 200: ok(z.object({ data: z.array(OutcomeResponse) })) } }),
    async (c) => c.json({ data: (await listOutcomes(deps.store)).map(toResponse) }, 200),
  )

  const one = route({
    method: 'get',
    path: '/outcomes/{id}',
    summary: 'An outcome (`?version=N` for an earlier one)',
    request: { params: IdParams, query: VersionQuery },
    responses: { 200: ok(OutcomeResponse) },
  })
  app.openapi(one, async (c) => {
    const id = checkOutcomeId(c.req.param('id'))
    const { version } = c.req.valid('query')
    const stored = await getOutcome(deps.store, id, version)
    if (!stored) throw new ApiError({ code: 'NOT_FOUND', message: version ? `outcome ${id} has no version ${version}` : `no outcome ${id}` })
    if (stored.deleted && version === undefined) throw new ApiError({ code: 'NOT_FOUND', message: `outcome ${id} was deleted (version ${stored.version})` })
    return c.json(toResponse(stored), 200)
  })

  const versions = route({
    method: 'get',
    path: '/outcomes/{id}/versions',
    summary: 'Version history of an outcome',
    request: { params: IdParams },
    responses: { 200: ok(z.object({ id: z.string(), data: z.array(z.object({ version: z.number().int(), deleted: z.boolean(), created_at: z.iso.datetime() })) })) },
  })
  app.openapi(versions, async (c) => {
    const id = checkOutcomeId(c.req.param('id'))
    const data = await listOutcomeVersions(deps.store, id)
    if (data.length === 0) throw new ApiError({ code: 'NOT_FOUND', message: `no outcome ${id}` })
    return c.json({ id, data }, 200)
  })

  const put = route({
    method: 'put',
    path: '/outcomes/{id}',
    summary: 'Create or update an outcome (a new version); JSON or YAML',
    // Read by the handler: YAML or JSON, the id from the path, errors naming the document's paths.
    request: { params: IdParams, body: documentedBody(OutcomeDocument, ['application/json', 'application/yaml']) },
    responses: { 200: ok(OutcomeResponse.extend({ status: z.enum(['updated', 'unchanged']) })), 201: ok(OutcomeResponse.extend({ status: z.literal('created') }), 'Created') },
  })
  app.openapi(put, async (c) => {
    const id = checkOutcomeId(c.req.param('id'))
    const text = await c.req.text()
    const outcome = outcomeFromBody(text, c.req.header('content-type'), id)
    const { stored, status } = await putOutcome(deps.store, outcome, text, now())
    return status === 'created' ? c.json({ ...toResponse(stored), status }, 201) : c.json({ ...toResponse(stored), status }, 200)
  })

  const del = route({
    method: 'delete',
    path: '/outcomes/{id}',
    summary: 'Delete an outcome (a tombstone version)',
    request: { params: IdParams },
    responses: { 200: ok(z.object({ id: z.string(), version: z.number().int(), deleted: z.literal(true) })) },
  })
  app.openapi(del, async (c) => {
    const id = checkOutcomeId(c.req.param('id'))
    const stored = await deleteOutcome(deps.store, id, now())
    if (!stored) throw new ApiError({ code: 'NOT_FOUND', message: `no outcome ${id}` })
    return c.json({ id, version: stored.version, deleted: true as const }, 200)
  })

  return app
}

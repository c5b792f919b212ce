import { Hono } from 'hono'
import { parseRuleText } from '../../rules/store.js'
import { ApiError } from '../errors.js'
import type { AppDeps, AppEnv } from '../env.js'
import { requireAdmin } from '../middleware.js'
import {
  checkOutcomeId,
  deleteOutcome,
  getOutcome,
  listOutcomes,
  listOutcomeVersions,
  putOutcome,
  type StoredOutcome,
} from '../quality/outcome-store.js'
import { type Outcome, outcomeJsonSchema, parseOutcome } from '../quality/outcomes.js'

export type OutcomeResponse = { id: string; version: number; deleted: boolean; created_at: string; outcome: Outcome }

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

/** Outcome management (admin): versioned documents like rules, and their JSON Schema. */
export function outcomesRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>()
  const admin = requireAdmin(deps.adminToken)
  const now = deps.now ?? Date.now

  app.get('/outcomes/schema', admin, (c) => c.json(outcomeJsonSchema()))

  app.get('/outcomes', admin, async (c) => c.json({ data: (await listOutcomes(deps.store)).map(toResponse) }))

  app.get('/outcomes/:id', admin, async (c) => {
    const id = checkOutcomeId(c.req.param('id'))
    const v = c.req.query('version')
    const version = v === undefined ? undefined : Number(v)
    if (version !== undefined && (!Number.isInteger(version) || version < 1)) {
      throw new ApiError({ code: 'BAD_REQUEST', message: 'version must be a positive integer', details: [{ path: 'version', message: 'must be a positive integer' }] })
    }
    const stored = await getOutcome(deps.store, id, version)
    if (!stored) throw new ApiError({ code: 'NOT_FOUND', message: version ? `outcome ${id} has no version ${version}` : `no outcome ${id}` })
    if (stored.deleted && version === undefined) throw new ApiError({ code: 'NOT_FOUND', message: `outcome ${id} was deleted (version ${stored.version})` })
    return c.json(toResponse(stored))
  })

  app.get('/outcomes/:id/versions', admin, async (c) => {
    const id = checkOutcomeId(c.req.param('id'))
    const versions = await listOutcomeVersions(deps.store, id)
    if (versions.length === 0) throw new ApiError({ code: 'NOT_FOUND', message: `no outcome ${id}` })
    return c.json({ id, data: versions })
  })

  app.put('/outcomes/:id', admin, async (c) => {
    const id = checkOutcomeId(c.req.param('id'))
    const text = await c.req.text()
    const outcome = outcomeFromBody(text, c.req.header('content-type'), id)
    const { stored, status } = await putOutcome(deps.store, outcome, text, now())
    return c.json({ ...toResponse(stored), status }, status === 'created' ? 201 : 200)
  })

  app.delete('/outcomes/:id', admin, async (c) => {
    const id = checkOutcomeId(c.req.param('id'))
    const stored = await deleteOutcome(deps.store, id, now())
    if (!stored) throw new ApiError({ code: 'NOT_FOUND', message: `no outcome ${id}` })
    return c.json({ id, version: stored.version, deleted: true })
  })

  return app
}

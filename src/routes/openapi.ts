import type { OpenAPIHono } from '@hono/zod-openapi'
import { z } from 'zod'
import { BatchBody, MessageSchemas } from '../../ingest/schema.js'
import { RuleDocument } from '../../rules/schema.js'
import type { AppEnv } from '../env.js'
import { Signal } from '../signals.js'
import { DELIVERY_OPERATIONS } from './webhooks.js'

/** zod → JSON Schema for a request or response body; transforms are described by their input. */
const schema = (s: z.ZodType) => z.toJSONSchema(s, { io: 'input', unrepresentable: 'any', target: 'openapi-3.0' })

type Op = { summary: string; auth: 'write' | 'admin' | 'none'; body?: z.ZodType; response?: z.ZodType }

const TRACKING: Record<string, Op> = Object.fromEntries([
  ...Object.entries(MessageSchemas).map(([type, s]) => [`POST /v1/${type}`, { summary: `Segment ${type} call`, auth: 'write', body: s }]),
  ['POST /v1/batch', { summary: 'Segment batch: valid messages stored, invalid ones listed in `rejected`', auth: 'write', body: BatchBody }],
])

const OPERATIONS: Record<string, Op> = {
  ...TRACKING,
  ...DELIVERY_OPERATIONS,
}

const ERROR = {
  description: 'An error: `{error: {code, message, details?: [{path, message}]}}`',
  content: { 'application/json': { schema: { type: 'object', properties: { error: { type: 'object' } } } } },
}

/**
 * The OpenAPI 3 document of the API: the routes declared with `createRoute` (src/routes/router.ts)
 * generate their part from their own zod schemas; the groups not converted yet are still listed in
 * OPERATIONS above. test/openapi.test.ts fails when a served route is in neither.
 */
export function openApiDocument(app: OpenAPIHono<AppEnv>) {
  const info = { title: 'signalbox', version: '0.1.0', description: 'Product-led-growth signals over a Segment-compatible tracking API' }
  const generated = app.getOpenAPIDocument({ openapi: '3.0.3', info })
  const paths: Record<string, Record<string, unknown>> = { ...(generated.paths as Record<string, Record<string, unknown>>) }
  for (const [key, op] of Object.entries(OPERATIONS)) {
    const [method, path] = key.split(' ') as [string, string]
    paths[path] = { ...paths[path] }
    paths[path][method.toLowerCase()] = {
      summary: op.summary,
      security: op.auth === 'none' ? [] : [{ [op.auth === 'write' ? 'writeKey' : 'adminToken']: [] }],
      ...(op.body ? { requestBody: { required: true, content: { 'application/json': { schema: schema(op.body) } } } } : {}),
      responses: {
        '200': { description: 'OK', ...(op.response ? { content: { 'application/json': { schema: schema(op.response) } } } : {}) },
        '4XX': ERROR,
        '5XX': ERROR,
      },
    }
  }
  return {
    ...generated,
    components: {
      ...generated.components,
      securitySchemes: {
        writeKey: { type: 'http', scheme: 'basic', description: 'the write key as the username, empty password' },
        adminToken: { type: 'http', scheme: 'bearer', description: 'ADMIN_TOKEN' },
      },
      schemas: { ...generated.components?.schemas, Signal: schema(Signal), RuleDocument: schema(RuleDocument) },
    },
    paths,
  }
}

/** GET /openapi.json, generated once from the app it is mounted on. */
export function serveOpenApi(app: OpenAPIHono<AppEnv>) {
  let doc: ReturnType<typeof openApiDocument> | undefined
  app.get('/openapi.json', (c) => c.json((doc ??= openApiDocument(app))))
}

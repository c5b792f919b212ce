import type { OpenAPIHono } from '@hono/zod-openapi'
import { z } from 'zod'
import { RuleDocument } from '../../rules/schema.js'
import type { AppEnv } from '../env.js'
import { Signal } from '../signals.js'

/** zod → JSON Schema for a component; transforms are described by their input. */
const schema = (s: z.ZodType) => z.toJSONSchema(s, { io: 'input', unrepresentable: 'any', target: 'openapi-3.0' })

/**
 * The OpenAPI 3 document of the API, generated from the routes: each is declared with
 * `createRoute` and its zod schemas (src/routes/router.ts). test/openapi.test.ts fails when a
 * served route is not in it.
 */
export function openApiDocument(app: OpenAPIHono<AppEnv>) {
  const info = { title: 'signalbox', version: '0.1.0', description: 'Product-led-growth signals over a Segment-compatible tracking API' }
  const generated = app.getOpenAPIDocument({ openapi: '3.0.3', info })
  return {
    ...generated,
    components: {
      ...generated.components,
      securitySchemes: {
        writeKey: { type: 'http', scheme: 'basic', description: 'the write key as the username, empty password' },
        adminToken: { type: 'http', scheme: 'bearer', description: 'ADMIN_TOKEN' },
        readToken: { type: 'http', scheme: 'bearer', description: 'one of READ_TOKENS: reads the signal stream, nothing else' },
      },
      schemas: { ...generated.components?.schemas, Signal: schema(Signal), RuleDocument: schema(RuleDocument) },
    },
  }
}

/** GET /openapi.json, generated once from the app it is mounted on. */
export function serveOpenApi(app: OpenAPIHono<AppEnv>) {
  let doc: ReturnType<typeof openApiDocument> | undefined
  app.get('/openapi.json', (c) => c.json((doc ??= openApiDocument(app))))
}

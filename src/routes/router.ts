import { type Hook, OpenAPIHono } from '@hono/zod-openapi'
import { z } from 'zod'
import { ApiError, ErrorCode, zodDetails } from '../errors.js'
import type { AppEnv } from '../env.js'

/**
 * Route groups are OpenAPIHono apps: each route is a `createRoute` with its zod request and
 * response schemas, and /openapi.json is generated from them (src/routes/openapi.ts).
 */

const TARGET: Record<string, string> = { query: 'query', json: 'request', param: 'path', header: 'header', form: 'request', cookie: 'cookie' }

/** A request zod rejects gets the API's error body, naming each problem's path (as the handlers' own checks do). */
export const zodFailure: Hook<unknown, AppEnv, string, unknown> = (result) => {
  if (result.success) return
  const details = zodDetails(result.error)
  throw new ApiError({ code: 'BAD_REQUEST', message: `invalid ${TARGET[result.target] ?? result.target}: ${details[0]?.path}: ${details[0]?.message}`, details })
}

export const router = () => new OpenAPIHono<AppEnv>({ defaultHook: zodFailure })

/** The body of every 4xx / 5xx answer. */
export const ErrorBody = z.object({
  error: z.object({
    code: ErrorCode,
    message: z.string(),
    details: z.array(z.object({ path: z.string(), message: z.string(), index: z.number().optional() })).optional(),
  }),
})

const json = <T extends z.ZodType>(schema: T) => ({ 'application/json': { schema } })

/** The error answers every route may give. */
export const errors = {
  '4XX': { description: 'A client error: `{error: {code, message, details?: [{path, message}]}}`', content: json(ErrorBody) },
  '5XX': { description: 'A server error (503: the store is unavailable; retry)', content: json(ErrorBody) },
} as const

/** A 200 (or other status) answer with a JSON body of `schema`. */
export const ok = <T extends z.ZodType>(schema: T, description = 'OK') => ({ description, content: json(schema) })

/**
 * A JSON body that the handler reads itself (its own size limits, YAML, partial acceptance or
 * error messages): documented from the same zod schema, as its JSON Schema, so the router adds no
 * validator of its own.
 */
export const documentedBody = (schema: z.ZodType, mediaTypes: string[] = ['application/json']) => ({
  required: true,
  content: Object.fromEntries(
    mediaTypes.map((m) => [m, { schema: z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any', target: 'openapi-3.0' }) as Record<string, unknown> }]),
  ),
})

export const ADMIN = [{ adminToken: [] }]
export const WRITE = [{ writeKey: [] }]

import { createRoute, type Hook, OpenAPIHono, type RouteConfig } from '@hono/zod-openapi'
import type { MiddlewareHandler } from 'hono'
import { z } from 'zod'
import { ApiError, ErrorCode, zodDetails } from '../errors.js'
import type { AppEnv } from '../env.js'
import { requireAdmin } from '../middleware.js'

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

/**
 * The hook of a route whose handler checked this part itself before it was declared: the same
 * `message`, and each problem's path in `details` (`root` for the part as a whole).
 */
export const invalid =
  (what: string, root = '(root)') =>
  <T>(result: { success: true; data: T } | { success: false; error: z.ZodError }): undefined => {
    if (result.success) return
    const details = zodDetails(result.error).map((d) => (d.path === '(root)' ? { ...d, path: root } : d))
    throw new ApiError({ code: 'BAD_REQUEST', message: `invalid ${what}`, details })
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
/** The admin token, or one of READ_TOKENS. */
export const READ: Record<string, string[]>[] = [{ adminToken: [] }, { readToken: [] }]

/**
 * `createRoute` for the admin routes of a group: the admin token is required (`requireAdmin`) and
 * documented, and the error answers are listed. The route's own config stays its type, so
 * `c.req.valid` and the typed responses are inferred as with `createRoute`.
 */
export function adminRoutes(adminToken: string) {
  const middleware: [MiddlewareHandler<AppEnv>] = [requireAdmin(adminToken)]
  return <P extends string, R extends Omit<RouteConfig, 'path' | 'security' | 'middleware'> & { path: P }>(config: R) =>
    createRoute<P, AdminRoute<R>>({ ...config, security: ADMIN, middleware, responses: { ...config.responses, ...errors } })
}

type AdminRoute<R extends Omit<RouteConfig, 'security' | 'middleware'>> = Omit<R, 'responses'> & {
  security: typeof ADMIN
  middleware: [MiddlewareHandler<AppEnv>]
  responses: R['responses'] & typeof errors
}

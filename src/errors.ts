import type { Context } from 'hono'
import { HTTPException } from 'hono/http-exception'
import { z } from 'zod'
import { RuleError, type RuleErrorCode } from '../rules/errors.js'
import { StageError } from './lifecycle/errors.js'

/** The one error vocabulary of the API: every 4xx/5xx body is `{error: {code, message, details?}}`. */
export const ErrorCode = z.enum([
  'BAD_REQUEST',
  'UNAUTHORIZED',
  'FORBIDDEN',
  'NOT_FOUND',
  'CONFLICT',
  'PAYLOAD_TOO_LARGE',
  'RATE_LIMITED',
  'INTERNAL_SERVER_ERROR',
  'STORE_UNAVAILABLE',
])
export type ErrorCode = z.infer<typeof ErrorCode>

const STATUS = {
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  PAYLOAD_TOO_LARGE: 413,
  RATE_LIMITED: 429,
  INTERNAL_SERVER_ERROR: 500,
  STORE_UNAVAILABLE: 503,
} as const satisfies Record<ErrorCode, number>

export type ErrorDetail = { path: string; message: string; index?: number }

export class ApiError extends Error {
  override name = 'ApiError'
  readonly code: ErrorCode
  readonly details?: ErrorDetail[]
  readonly headers?: Record<string, string>
  constructor(opts: { code: ErrorCode; message: string; details?: ErrorDetail[]; headers?: Record<string, string>; cause?: unknown }) {
    super(opts.message, { cause: opts.cause })
    this.code = opts.code
    this.details = opts.details
    this.headers = opts.headers
  }
  get status() {
    return STATUS[this.code]
  }
}

/** A store failure: the caller may retry (ingestion dedup makes a retry safe). */
export class StoreUnavailableError extends ApiError {
  constructor(cause: unknown) {
    super({ code: 'STORE_UNAVAILABLE', message: `the store is unavailable: ${messageOf(cause)}`, cause })
  }
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** zod issues as `{path, message}` with dotted paths (`properties.plan`, `batch.3.event`). */
export function zodDetails(error: z.ZodError, prefix: (string | number)[] = []): ErrorDetail[] {
  return error.issues.map((issue) => ({
    path: [...prefix, ...issue.path].map(String).join('.') || '(root)',
    message: issue.message,
  }))
}

export function errorBody(err: ApiError) {
  return { error: { code: err.code, message: err.message, ...(err.details ? { details: err.details } : {}) } }
}

const RULE_CODES = { INVALID: 'BAD_REQUEST', CONFLICT: 'CONFLICT' } as const satisfies Record<RuleErrorCode, ErrorCode>

/**
 * The one place domain errors become HTTP errors: the rules layer's and the lifecycle's (which
 * know nothing of HTTP) and ApiError itself; anything else is not an answer the API gives.
 */
export function toApiError(err: unknown): ApiError | undefined {
  if (err instanceof ApiError) return err
  if (err instanceof RuleError) return new ApiError({ code: RULE_CODES[err.code], message: err.message, details: err.details, cause: err })
  if (err instanceof StageError) return new ApiError({ code: 'BAD_REQUEST', message: err.message, details: err.details, cause: err })
  return undefined
}

export function handleError(caught: Error, c: Context) {
  const err = toApiError(caught) ?? caught
  if (err instanceof ApiError) {
    for (const [k, v] of Object.entries(err.headers ?? {})) c.header(k, v)
    if (err.status >= 500) c.get('logger')?.error({ err }, err.message)
    return c.json(errorBody(err), err.status)
  }
  if (err instanceof HTTPException) {
    const code = (Object.keys(STATUS) as ErrorCode[]).find((k) => STATUS[k] === err.status) ?? 'BAD_REQUEST'
    return c.json(errorBody(new ApiError({ code, message: err.message })), err.status)
  }
  c.get('logger')?.error({ err }, 'unhandled error')
  return c.json(errorBody(new ApiError({ code: 'INTERNAL_SERVER_ERROR', message: 'internal error' })), 500)
}

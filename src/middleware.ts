import type { MiddlewareHandler } from 'hono'
import type { Logger } from 'pino'
import { bearerToken, secretEquals } from './auth.js'
import { ApiError } from './errors.js'
import type { AppEnv } from './env.js'

/** A child logger per request carrying its id, and one line per request when it ends. */
export function requestLogger(logger: Logger): MiddlewareHandler<AppEnv> {
  return async function requestLogger(c, next) {
    const log = logger.child({ reqId: c.get('requestId') })
    c.set('logger', log)
    const started = performance.now()
    await next()
    log.info(
      { method: c.req.method, path: c.req.path, status: c.res.status, ms: Math.round(performance.now() - started) },
      'request',
    )
  }
}

/** `Authorization: Bearer ADMIN_TOKEN`, compared in constant time. Write keys never pass here. */
export function requireAdmin(adminToken: string): MiddlewareHandler<AppEnv> {
  return async function requireAdmin(c, next) {
    const given = bearerToken(c.req.header('authorization'))
    if (!given) throw new ApiError({ code: 'UNAUTHORIZED', message: 'missing Authorization: Bearer <admin token>' })
    if (!secretEquals(given, adminToken)) throw new ApiError({ code: 'FORBIDDEN', message: 'the token is not the admin token' })
    await next()
  }
}

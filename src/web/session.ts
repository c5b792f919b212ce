import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Context, MiddlewareHandler } from 'hono'
import { deleteCookie, getSignedCookie, setSignedCookie } from 'hono/cookie'
import { z } from 'zod'
import { secretEquals } from '../auth.js'
import { ConfigError } from '../config.js'

/**
 * Workspace sessions: a signed cookie (HMAC-SHA256 with a key kept in DATA_DIR, so sessions
 * survive restarts) holding the role, a fingerprint of the token signed in with, a CSRF token and
 * when the session was last used. Nothing is stored server-side; a session ends after 12 hours
 * without a request, at /logout, or when its token is no longer configured (its fingerprint no
 * longer matches any).
 */

export const SESSION_COOKIE = 'sb_session'
export const IDLE_MS = 12 * 3_600_000
/** A session's cookie is re-issued at most this often (its last-use time moves forward). */
const REFRESH_MS = 60_000

export type Role = 'admin' | 'read'
export type Session = { role: Role; csrf: string }

const Payload = z.object({ r: z.enum(['admin', 'read']), t: z.string(), c: z.string(), s: z.number() })
type Payload = z.infer<typeof Payload>

const fingerprint = (token: string) => createHash('sha256').update(`signalbox-session:${token}`).digest('base64url').slice(0, 22)

/** The signing key: `DATA_DIR/session.key`, generated on first use (mode 0600). */
export function sessionKey(dataDir: string): string {
  const file = join(dataDir, 'session.key')
  if (existsSync(file)) {
    const key = readFileSync(file, 'utf8').trim()
    if (key.length < 32) throw new ConfigError(`${file} is damaged (shorter than 32 characters); remove it to sign everyone out and make a new one`)
    return key
  }
  mkdirSync(dataDir, { recursive: true })
  const key = randomBytes(32).toString('base64url')
  writeFileSync(file, `${key}\n`, { mode: 0o600 })
  return key
}

export type SessionOptions = {
  key: string
  adminToken: string
  readTokens: readonly string[]
  /** Cookies are `Secure` when the request is https or the public URL is. */
  publicUrl?: string
  now: () => number
}

export type WebEnv = { Variables: { session: Session | undefined } }

export class Sessions {
  readonly #o: SessionOptions
  constructor(opts: SessionOptions) {
    this.#o = opts
  }

  /** The role of a token (every token compared, each in constant time), or undefined. */
  roleOf(token: string): Role | undefined {
    let role: Role | undefined
    for (const t of this.#o.readTokens) if (secretEquals(token, t)) role = 'read'
    if (secretEquals(token, this.#o.adminToken)) role = 'admin'
    return role
  }

  #tokenFor(role: Role, fp: string): boolean {
    const tokens = role === 'admin' ? [this.#o.adminToken] : this.#o.readTokens
    let ok = false
    for (const t of tokens) if (secretEquals(fp, fingerprint(t))) ok = true
    return ok
  }

  #secure(c: Context): boolean {
    return new URL(c.req.url).protocol === 'https:' || c.req.header('x-forwarded-proto') === 'https' || !!this.#o.publicUrl?.startsWith('https:')
  }

  async #write(c: Context, p: Payload) {
    const value = Buffer.from(JSON.stringify(p)).toString('base64url')
    await setSignedCookie(c, SESSION_COOKIE, value, this.#o.key, {
      httpOnly: true,
      sameSite: 'Strict',
      secure: this.#secure(c),
      path: '/',
      maxAge: IDLE_MS / 1000,
    })
  }

  async start(c: Context, token: string, role: Role): Promise<void> {
    await this.#write(c, { r: role, t: fingerprint(token), c: randomBytes(18).toString('base64url'), s: this.#o.now() })
  }

  end(c: Context): void {
    deleteCookie(c, SESSION_COOKIE, { path: '/', secure: this.#secure(c) })
  }

  /** Reads the session of a request (refreshing its last use) into `c.var.session`. */
  middleware(): MiddlewareHandler<WebEnv> {
    return async (c, next) => {
      c.set('session', await this.#read(c))
      await next()
    }
  }

  async #read(c: Context): Promise<Session | undefined> {
    const raw = await getSignedCookie(c, this.#o.key, SESSION_COOKIE)
    if (!raw) return undefined
    let p: Payload
    try {
      p = Payload.parse(JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')))
    } catch {
      return undefined
    }
    const now = this.#o.now()
    if (now - p.s > IDLE_MS || !this.#tokenFor(p.r, p.t)) {
      this.end(c)
      return undefined
    }
    if (now - p.s > REFRESH_MS) await this.#write(c, { ...p, s: now })
    return { role: p.r, csrf: p.c }
  }
}

/**
 * Failed sign-ins per client: after `limit` failures within `windowMs` the client is refused
 * (429 with Retry-After) until the window has passed, whatever it sends. A global budget of ten
 * times that stops a guess spread over many addresses.
 */
export class LoginThrottle {
  readonly #failures = new Map<string, number[]>()
  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
    private readonly now: () => number,
  ) {}

  #recent(key: string): number[] {
    const since = this.now() - this.windowMs
    const list = (this.#failures.get(key) ?? []).filter((t) => t > since)
    if (list.length) this.#failures.set(key, list)
    else this.#failures.delete(key)
    return list
  }

  /** Seconds to wait before this client may try again, or 0. */
  retryAfter(client: string): number {
    for (const [key, limit] of [[client, this.limit], ['*', this.limit * 10]] as const) {
      const list = this.#recent(key)
      if (list.length >= limit) return Math.max(1, Math.ceil(((list[0] as number) + this.windowMs - this.now()) / 1000))
    }
    return 0
  }

  fail(client: string): void {
    for (const key of [client, '*']) this.#failures.set(key, [...this.#recent(key), this.now()])
  }
}

import { messageOf } from '../errors.js'
import { isRetriableStatus, parseRetryAfter } from './backoff.js'
import { TargetRefusedError } from './targets.js'

export type AttemptResult = {
  ok: boolean
  statusCode: number | null
  /** Why the attempt failed (empty when delivered). */
  error: string
  /** Worth trying again (network error, timeout, 408/425/429/5xx). */
  retriable: boolean
  /** The wait the endpoint asked for (`Retry-After`), in ms. */
  retryAfterMs?: number
  /** The start of the endpoint's answer, for the delivery log. */
  response: string
  durationMs: number
  /** The attempt was cut short by a shutdown: it says nothing about the endpoint. */
  interrupted?: boolean
}

const RESPONSE_MAX = 1024
const USER_AGENT = 'signalbox-webhooks/1'

/** At most `max` characters of a response body; the rest is not read (the connection is released). */
async function readStart(res: Response, max = RESPONSE_MAX): Promise<string> {
  if (!res.body) return ''
  const reader = res.body.getReader()
  const decoder = new TextDecoder()
  let text = ''
  try {
    while (text.length < max) {
      const { done, value } = await reader.read()
      if (done) break
      text += decoder.decode(value, { stream: true })
    }
  } finally {
    await reader.cancel().catch(() => {})
  }
  return text.slice(0, max)
}

/** The cause undici gives for a failed fetch: `connect ECONNREFUSED 127.0.0.1:9`, `getaddrinfo ENOTFOUND …`. */
function networkError(err: unknown): string {
  const cause = err instanceof Error ? (err.cause as { code?: string; message?: string } | undefined) : undefined
  if (cause?.message) return cause.message
  if (cause?.code) return cause.code
  return messageOf(err)
}

/**
 * POST one signed body and classify the outcome. Redirects are not followed (a 3xx is a failure
 * that is not retried): the endpoint's URL is the one its owner registered. `stop` aborts the
 * attempt on shutdown; the timeout covers the whole exchange, body included.
 */
export async function sendAttempt(opts: {
  url: string
  body: string
  headers: Record<string, string>
  timeoutMs: number
  stop?: AbortSignal
  now: () => number
  /** The fetch to send with (Node: one that checks the resolved address, guarded-fetch.ts). */
  fetch?: typeof fetch
}): Promise<AttemptResult> {
  const started = performance.now()
  const timeout = AbortSignal.timeout(opts.timeoutMs)
  const signal = opts.stop ? AbortSignal.any([timeout, opts.stop]) : timeout
  const took = () => Math.round(performance.now() - started)
  try {
    const res = await (opts.fetch ?? fetch)(opts.url, {
      method: 'POST',
      body: opts.body,
      headers: { 'content-type': 'application/json', 'user-agent': USER_AGENT, ...opts.headers },
      redirect: 'manual',
      signal,
    })
    const response = await readStart(res)
    if (res.status >= 200 && res.status < 300) {
      return { ok: true, statusCode: res.status, error: '', retriable: false, response, durationMs: took() }
    }
    const retriable = isRetriableStatus(res.status)
    return {
      ok: false,
      statusCode: res.status,
      error: retriable ? `the endpoint answered ${res.status}` : `the endpoint answered ${res.status}; not retried`,
      retriable,
      retryAfterMs: parseRetryAfter(res.headers.get('retry-after'), opts.now()),
      response,
      durationMs: took(),
    }
  } catch (err) {
    const refused = err instanceof TargetRefusedError ? err : err instanceof Error && err.cause instanceof TargetRefusedError ? err.cause : undefined
    if (refused) return { ok: false, statusCode: null, error: `the target is refused: ${refused.message}; not retried`, retriable: false, response: '', durationMs: took() }
    if (opts.stop?.aborted) {
      return { ok: false, statusCode: null, error: 'interrupted by a shutdown', retriable: true, response: '', durationMs: took(), interrupted: true }
    }
    const error = timeout.aborted ? `no answer within ${opts.timeoutMs} ms (timeout)` : networkError(err)
    return { ok: false, statusCode: null, error, retriable: true, response: '', durationMs: took() }
  }
}

import type { Config } from '../config.js'

export type RetryPolicy = {
  /** Attempts in a round before the delivery is dead-lettered. */
  maxAttempts: number
  /** The delay after the first failure; it doubles after each further failure… */
  baseMs: number
  /** …up to this. */
  maxMs: number
  /** ± this fraction of the delay, at random, so retries of many deliveries do not come in waves. */
  jitter?: number
}

/** The retry policy the WEBHOOK_* settings describe (Node dispatcher and Workers delivery consumer alike). */
export const retryPolicyFromConfig = (c: Pick<Config, 'WEBHOOK_MAX_ATTEMPTS' | 'WEBHOOK_BACKOFF_BASE_MS' | 'WEBHOOK_BACKOFF_MAX_MS'>): RetryPolicy => ({
  maxAttempts: c.WEBHOOK_MAX_ATTEMPTS,
  baseMs: c.WEBHOOK_BACKOFF_BASE_MS,
  maxMs: c.WEBHOOK_BACKOFF_MAX_MS,
})

/**
 * How long to wait after the `attempt`-th failed attempt of a round (1 = the first failure):
 * exponential (`base · 2^(attempt-1)`, capped at `max`) with ± jitter. `random` is injected so
 * the schedule is testable. Also the ingestion queue's retry delay (edge/consumer.ts, no jitter).
 */
export function backoffDelay(attempt: number, policy: Pick<RetryPolicy, 'baseMs' | 'maxMs' | 'jitter'>, random: () => number = Math.random): number {
  const jitter = policy.jitter ?? 0.2
  const exp = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.max(0, attempt - 1))
  return Math.max(0, Math.round(exp * (1 - jitter + 2 * jitter * random())))
}

/** The sum of the delays between the attempts of a full round, without jitter: how long it takes to dead-letter. */
export function roundDurationMs(policy: RetryPolicy): number {
  let total = 0
  for (let a = 1; a < policy.maxAttempts; a++) total += backoffDelay(a, { ...policy, jitter: 0 })
  return total
}

/**
 * `Retry-After` in ms: an integer number of seconds, or an HTTP date (relative to `now`).
 * Undefined when absent or unreadable.
 */
export function parseRetryAfter(header: string | null | undefined, now: number): number | undefined {
  if (!header) return undefined
  const v = header.trim()
  if (/^\d+$/.test(v)) return Number(v) * 1000
  const at = Date.parse(v)
  return Number.isNaN(at) ? undefined : Math.max(0, at - now)
}

/** The longest `Retry-After` obeyed: the backoff's cap, and at least an hour. */
export const retryAfterCap = (policy: RetryPolicy) => Math.max(policy.maxMs, 3_600_000)

/** The delay before the next attempt: the backoff, or longer if the endpoint asked for it (`Retry-After`, capped). */
export function retryDelay(attempt: number, policy: RetryPolicy, retryAfterMs: number | undefined, random?: () => number) {
  const backoff = backoffDelay(attempt, policy, random)
  return retryAfterMs === undefined ? backoff : Math.max(backoff, Math.min(retryAfterMs, retryAfterCap(policy)))
}

/** Statuses worth retrying: the endpoint is overloaded, rate limiting, or failing for now. Other 4xx will not change. */
export const isRetriableStatus = (status: number) => status === 408 || status === 425 || status === 429 || status >= 500

/**
 * A token bucket per write key: `ratePerSecond` requests a second on average, bursts up to
 * `burst`. `take` answers how many whole seconds to wait (for `Retry-After`), or 0 to go ahead.
 * In-process: each instance limits on its own, which is what a per-node limit needs.
 */
export class RateLimiter {
  #buckets = new Map<string, { tokens: number; at: number }>()
  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {}

  take(key: string): number {
    if (this.ratePerSecond <= 0) return 0
    const now = this.now()
    const b = this.#buckets.get(key) ?? { tokens: this.burst, at: now }
    b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.ratePerSecond)
    b.at = now
    this.#buckets.set(key, b)
    if (b.tokens >= 1) {
      b.tokens -= 1
      return 0
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / this.ratePerSecond))
  }
}

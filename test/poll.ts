import { vi } from 'vitest'

/**
 * The tests' one way to wait: vitest's `vi.waitFor`, polling `check` until it returns a truthy
 * value (which it returns) or the time is up. A check that throws is retried; the last error is
 * reported. Never a fixed sleep.
 */
export function until<T>(check: () => T | Promise<T>, opts: { timeoutMs?: number; what?: string; everyMs?: number } = {}): Promise<NonNullable<T>> {
  return vi.waitFor(
    async () => {
      const value = await check()
      if (!value) throw new Error(`timed out waiting for ${opts.what ?? 'a condition'}`)
      return value as NonNullable<T>
    },
    { timeout: opts.timeoutMs ?? 15_000, interval: opts.everyMs ?? 20 },
  )
}

import { ulid } from 'ulid'
import { chTime } from './time.js'
import type { WriteHealth } from '../ingest/writer.js'
import { messageOf } from './errors.js'
import type { Store } from './store/store.js'

/** What the outbox reports about its scans of the signal log (`Dispatcher.scanHealth`). */
export type OutboxHealth = { lastScanAt?: number; lastFailedAt?: number; lastError?: string }

export type Check = { ok: true; detail?: string } | { ok: false; error: string }
export type ReadyReport = { ready: boolean; checks: { store: Check; writes: Check; outbox: Check } }

/**
 * Readiness, as a load balancer should read it: this instance can take writes now. Three checks:
 * the store answers; the store accepted a write within `intervalMs` (a block of events the
 * writer stored, or, when none was stored lately or the last one failed, a probe row this check
 * writes into health_probes_v1 at most once per interval); the outbox is draining (its last scan
 * of the signal log did not fail). Liveness (`/health`) is separate: a process whose store is down
 * should be taken out of rotation, not restarted.
 */
export class Readiness {
  readonly #instance = `inst_${ulid()}`
  #probe: { at: number; result: Promise<Check> } | undefined

  constructor(
    private readonly deps: {
      store: Store
      writes?: WriteHealth
      outbox?: () => OutboxHealth
      intervalMs: number
      now: () => number
    },
  ) {}

  async check(): Promise<ReadyReport> {
    const store = await this.deps.store.ping().then(
      (): Check => ({ ok: true }),
      (err): Check => ({ ok: false, error: messageOf(err) }),
    )
    const writes = store.ok ? await this.#writes() : { ok: false as const, error: 'the store does not answer' }
    const outbox = this.#outbox()
    return { ready: store.ok && writes.ok && outbox.ok, checks: { store, writes, outbox } }
  }

  async #writes(): Promise<Check> {
    const { writes, intervalMs, now } = this.deps
    const t = now()
    if (writes?.failing && t - (writes.lastFailedAt as number) <= intervalMs) {
      return { ok: false, error: `storing a block of events failed ${t - (writes.lastFailedAt as number)} ms ago: ${writes.lastError}` }
    }
    if (writes && !writes.failing && writes.lastStoredAt !== undefined && t - writes.lastStoredAt <= intervalMs) {
      return { ok: true, detail: 'a block of events was stored within the interval' }
    }
    // Idle (or the last failure is older than the interval): a probe write decides, written at
    // most once per interval while it succeeds, and tried again at the next check if it failed.
    if (!this.#probe || t - this.#probe.at > intervalMs) {
      const result = this.deps.store.insert('health_probes_v1', [{ instance: this.#instance, at: chTime(t) }]).then(
        (): Check => ({ ok: true, detail: 'a probe row was written' }),
        (err): Check => ({ ok: false, error: `the store refuses writes: ${messageOf(err)}` }),
      )
      this.#probe = { at: t, result }
    }
    const probe = this.#probe
    const probed = await probe.result
    if (!probed.ok && this.#probe === probe) this.#probe = undefined
    return probed
  }

  #outbox(): Check {
    const h = this.deps.outbox?.()
    if (!h) return { ok: true, detail: 'no outbox runs here' }
    if (h.lastFailedAt !== undefined && (h.lastScanAt === undefined || h.lastScanAt < h.lastFailedAt)) {
      return { ok: false, error: `the outbox cannot read the signal log: ${h.lastError}` }
    }
    return { ok: true }
  }
}

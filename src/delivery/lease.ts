import { ulid } from 'ulid'
import type { Store } from '../store/store.js'
import { chTime, msFromCh } from '../time.js'
import { type DeliveryRecord, OPEN_STATUSES, OutboxStore } from './outbox.js'

/** How long past its timeout an attempt's lease is held, by default: for recording its outcome, and for clock skew between senders. */
export const LEASE_MARGIN_MS = 5000

export type Lease = { held: true } | { held: false; until: number }

/**
 * How a lease is claimed (as signal claims are, rules/evaluator.ts): `batch` writes the claims of
 * a group in one insert and the first stored row of a (delivery, attempt, generation) wins —
 * insertion order, exact on a single-node MergeTree; `per-key` inserts each claim alone with its
 * key as insert_deduplication_token (cluster mode, where insertion order is not global).
 */
export type LeaseMode = 'batch' | 'per-key'

type Want = { d: DeliveryRecord; now: number; minMs: number; resolve: (l: Lease) => void; reject: (err: unknown) => void }
type Winner = { generation: number; owner: string; expires: number }
type WinnerRow = { delivery_id: string; attempt: number; generation: number; owner: string; expires_at: string }

const key = (id: string, attempt: number) => `${id}|${attempt}`

/**
 * Leases on delivery attempts (delivery_leases_v1, migration 019): one sender per attempt across
 * every sender on the store, the way signal claims make one recorder per signal. `owner` is this
 * sender (one per Dispatcher, one per Worker invocation); `leaseMs` covers an attempt (its timeout
 * plus a margin). Claims that arrive while a claim is being written share the next write (group
 * commit), so a burst of attempts costs one insert and one read, not two statements each.
 */
export class DeliveryLeases {
  readonly owner = `snd_${ulid()}`
  #waiting: Want[] = []
  #busy = false
  /** Leases this sender won and when they end (attempt key → ms), so an attempt claimed ahead (`prefetch`) costs nothing when it starts. */
  readonly #held = new Map<string, number>()
  readonly #claiming = new Map<string, Promise<Lease>>()

  constructor(
    private readonly store: Store,
    private readonly leaseMs: number,
    private readonly mode: LeaseMode = 'batch',
  ) {}

  /**
   * Claim the next attempt of `d` (the one after its `attempts`) at `now`. Held: make the attempt.
   * Not held: another sender holds a live lease on it, or already made it; read the delivery again
   * at `until` (when that lease ends): if it still shows no outcome for the attempt, its holder
   * died, and the next claim takes a new generation of the lease. The newest generation counts.
   */
  claim(d: DeliveryRecord, now: number, minMs = 0): Promise<Lease> {
    const k = key(d.id, d.attempts + 1)
    const until = this.#held.get(k)
    if (until !== undefined && until >= now + minMs) return Promise.resolve({ held: true })
    const pending = this.#claiming.get(k)
    if (pending) return pending.then((l) => (l.held && (this.#held.get(k) ?? 0) < now + minMs ? this.claim(d, now, minMs) : l))
    const claimed = new Promise<Lease>((resolve, reject) => {
      this.#waiting.push({ d, now, minMs, resolve, reject })
      this.#kick()
    })
    this.#claiming.set(k, claimed)
    void claimed.then(
      (l) => {
        this.#claiming.delete(k)
        if (l.held) this.#held.set(k, now + this.leaseMs)
      },
      () => this.#claiming.delete(k),
    )
    return claimed
  }

  /** Claim ahead, without waiting: attempts about to start then find their lease held (one write for a whole group). */
  prefetch(ds: readonly DeliveryRecord[], now: number): void {
    for (const d of ds) {
      const k = key(d.id, d.attempts + 1)
      if (this.#claiming.has(k) || (this.#held.get(k) ?? 0) > now) continue
      this.claim(d, now).catch(() => {})
    }
  }

  /** Forget a lease once its attempt is over (its outcome decides the next one). */
  release(d: DeliveryRecord): void {
    this.#held.delete(key(d.id, d.attempts + 1))
  }

  #kick() {
    if (this.#busy || this.#waiting.length === 0) return
    this.#busy = true
    const group = this.#waiting
    this.#waiting = []
    void this.#claimAll(group)
      .then(
        (leases) => group.forEach((w, i) => w.resolve(leases[i] as Lease)),
        (err) => group.forEach((w) => w.reject(err)),
      )
      .finally(() => {
        this.#busy = false
        this.#kick()
      })
  }

  async #claimAll(group: Want[]): Promise<Lease[]> {
    const out: (Lease | undefined)[] = group.map(() => undefined)
    // The usual case first: nobody has claimed these attempts, so generation 0 is claimed blind.
    const first = new Map<string, number>()
    group.forEach((w, i) => {
      const k = key(w.d.id, w.d.attempts + 1)
      if (first.has(k)) out[i] = { held: false, until: w.now } // asked twice at once: one copy is enough
      else first.set(k, i)
    })
    const fresh = [...first.values()].map((i) => group[i] as Want)
    await this.#insert(fresh.map((w) => ({ w, generation: 0 })))
    let winners = await this.#winners(fresh)
    const expired: Want[] = []
    for (const w of fresh) {
      const lease = this.#lease(w, winners.get(key(w.d.id, w.d.attempts + 1)))
      if (lease === 'expired') expired.push(w)
      else out[group.indexOf(w)] = lease
    }
    if (expired.length > 0) {
      // Every lease on these attempts has expired: their holders died, or recorded outcomes these
      // copies of the deliveries do not show yet. Only the stored rows tell.
      const stored = new Map((await new OutboxStore(this.store).findMany(expired.map((w) => w.d.id))).map((d) => [d.id, d]))
      const takeover: { w: Want; generation: number }[] = []
      for (const w of expired) {
        const s = stored.get(w.d.id)
        if (!s || !OPEN_STATUSES.includes(s.status) || s.attempts !== w.d.attempts) out[group.indexOf(w)] = { held: false, until: w.now }
        else takeover.push({ w, generation: (winners.get(key(w.d.id, w.d.attempts + 1)) as Winner).generation + 1 })
      }
      if (takeover.length > 0) {
        await this.#insert(takeover)
        winners = await this.#winners(takeover.map((t) => t.w))
        for (const { w } of takeover) {
          const lease = this.#lease(w, winners.get(key(w.d.id, w.d.attempts + 1)))
          out[group.indexOf(w)] = lease === 'expired' ? { held: false, until: w.now } : lease
        }
      }
    }
    return out.map((l, i) => l ?? { held: false, until: (group[i] as Want).now })
  }

  #lease(w: Want, winner: Winner | undefined): Lease | 'expired' {
    if (!winner) return { held: false, until: w.now } // not readable yet: look again
    // A lease of this sender's that ends too soon for the attempt is renewed by a new generation.
    if (winner.owner === this.owner) return winner.expires >= w.now + w.minMs ? { held: true } : 'expired'
    return winner.expires > w.now ? { held: false, until: winner.expires } : 'expired'
  }

  async #insert(claims: { w: Want; generation: number }[]) {
    const rows = claims.map(({ w, generation }) => ({
      delivery_id: w.d.id,
      attempt: w.d.attempts + 1,
      generation,
      owner: this.owner,
      claimed_at: chTime(w.now),
      expires_at: chTime(w.now + this.leaseMs),
    }))
    if (this.mode === 'batch') return this.store.insert('delivery_leases_v1', rows)
    await Promise.all(
      rows.map((r) => this.store.insert('delivery_leases_v1', [r], { insert_deduplication_token: `lease|${r.delivery_id}|${r.attempt}|${r.generation}` })),
    )
  }

  /** The owner of the newest generation of each wanted attempt (the first stored row of it, in batch mode). */
  async #winners(wanted: Want[]): Promise<Map<string, Winner>> {
    const sql =
      this.mode === 'batch'
        ? `SELECT delivery_id, attempt, generation, argMin(owner, pos) AS owner, argMin(expires_at, pos) AS expires_at
           FROM (SELECT delivery_id, attempt, generation, owner, expires_at, (toUInt64(splitByChar('_', _part)[2]), _part_offset) AS pos
                 FROM delivery_leases_v1 WHERE delivery_id IN {ids:Array(String)})
           GROUP BY delivery_id, attempt, generation`
        : 'SELECT delivery_id, attempt, generation, owner, expires_at FROM delivery_leases_v1 WHERE delivery_id IN {ids:Array(String)}'
    const rows = await this.store.query<WinnerRow>(sql, { ids: [...new Set(wanted.map((w) => w.d.id))] })
    const out = new Map<string, Winner>()
    for (const r of rows) {
      const k = key(r.delivery_id, Number(r.attempt))
      const generation = Number(r.generation)
      const cur = out.get(k)
      if (!cur || generation > cur.generation) out.set(k, { generation, owner: r.owner, expires: msFromCh(r.expires_at) })
    }
    return out
  }
}

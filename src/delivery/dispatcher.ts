import type { Logger } from 'pino'
import { ApiError } from '../errors.js'
import type { SignalBus } from '../signals.js'
import type { OutboxHealth } from '../readiness.js'
import type { Store } from '../store/store.js'
import type { RetryPolicy } from './backoff.js'
import { attemptDelivery } from './deliver.js'
import { idTime } from './ids.js'
import { DeliveryLeases, LEASE_MARGIN_MS, type LeaseMode } from './lease.js'
import { AttemptRecorder, type DeliveryRecord, OPEN_STATUSES, OutboxStore } from './outbox.js'
import { scanLog } from './scan.js'
import { type WebhookRecord, WebhookStore } from './webhooks.js'

export type DispatcherOptions = {
  store: Store
  bus?: SignalBus
  logger: Logger
  policy: RetryPolicy
  /** One attempt is abandoned after this long. */
  timeoutMs: number
  /** Attempts in flight at once, per endpoint. */
  concurrency: number
  /** The log is re-read this often without a wake-up from the bus. */
  pollMs: number
  /** Base URL for links in Slack messages. */
  publicUrl?: string
  /** The clock for delivery times and backoff (log positions are ULIDs, made on the wall clock). */
  now?: () => number
  random?: () => number
  /**
   * Concurrent writers (two instances, or two evaluations) may make log entries visible slightly
   * out of id order; every scan re-reads this far behind its cursor, and deliveries already made
   * are recognised by their deterministic ids.
   */
  settleMs?: number
  /** Deliveries an endpoint holds in memory; the rest wait in the store (a dead endpoint's backlog). */
  maxQueued?: number
  /** An attempt's lease lasts its timeout plus this (see lease.ts). */
  leaseMarginMs?: number
  /** How leases are claimed: `per-key` on a cluster (see lease.ts). */
  leaseMode?: LeaseMode
  /** Private and loopback webhook targets allowed (WEBHOOK_ALLOW_PRIVATE; default off). */
  allowPrivate?: boolean
  /** The fetch attempts are sent with (Node: guardedFetch, which checks resolved addresses). */
  fetch?: typeof fetch
}

const CURSOR = 'webhooks'
/** The cursor row is rewritten at most this often: a re-scan after a crash is harmless. */
const CURSOR_WRITE_MS = 1000

/**
 * The webhook outbox. One scanner reads the signal log after a durable cursor and records a
 * delivery row for every (endpoint, matching event) before anything is attempted; then each
 * endpoint has its own worker with its own queue, timers and concurrency, so a slow or dead
 * endpoint only ever occupies its own slots. Workers hold their open deliveries in memory and
 * rewrite the delivery row after every attempt, so a restart resumes from the store. The bus
 * wakes the scanner as soon as signals are stored; a poll is the fallback.
 */
export class Dispatcher {
  readonly webhooks: WebhookStore
  readonly outbox: OutboxStore
  readonly recorder: AttemptRecorder
  /** One sender per attempt across every dispatcher (and the Worker) on the store. */
  readonly leases: DeliveryLeases
  readonly #o: Required<Omit<DispatcherOptions, 'bus' | 'publicUrl' | 'leaseMode' | 'fetch'>> & Pick<DispatcherOptions, 'bus' | 'publicUrl' | 'leaseMode' | 'fetch'>
  readonly #workers = new Map<string, EndpointWorker>()
  #cursor: string | undefined
  #cursorSaved: string | undefined
  #cursorSavedAt = 0
  #cursorTimer: ReturnType<typeof setTimeout> | undefined
  /** Delivery ids made for recent events (by event time); complete for events at or after #trustFrom. */
  readonly #known = new Map<string, number>()
  #trustFrom = Number.POSITIVE_INFINITY
  #scanning: Promise<void> | undefined
  #rescan = false
  #poll: ReturnType<typeof setTimeout> | undefined
  #running = false
  readonly #stop = new AbortController()
  readonly #onEvents = () => this.wake()
  /** When the last scan of the signal log ended well, and when one last failed (readiness reads it). */
  readonly scanHealth: OutboxHealth = {}

  constructor(opts: DispatcherOptions) {
    const given = Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) as DispatcherOptions
    this.#o = { now: Date.now, random: Math.random, settleMs: 5000, maxQueued: 10_000, leaseMarginMs: LEASE_MARGIN_MS, allowPrivate: false, ...given }
    this.webhooks = new WebhookStore(opts.store, this.#o.now)
    this.outbox = new OutboxStore(opts.store)
    this.recorder = new AttemptRecorder(this.outbox)
    this.leases = new DeliveryLeases(opts.store, this.#o.timeoutMs + this.#o.leaseMarginMs, opts.leaseMode)
  }

  get publicUrl() {
    return this.#o.publicUrl
  }

  set publicUrl(url: string | undefined) {
    this.#o.publicUrl = url
  }

  /** Load endpoints, open deliveries and the cursor from the store, then start scanning and delivering. */
  async start(): Promise<void> {
    this.#cursor = this.#cursorSaved = await this.outbox.readCursor(CURSOR)
    await this.#reloadEndpoints()
    // Deliveries already recorded for events a scan can still reach (the cursor, less the settle
    // window; or, never scanned, since the first endpoint became active): #known then holds every
    // delivery from there on, so scans need not ask the store.
    const active = [...this.#workers.values()].map((w) => w.webhook.active_since)
    const from = (this.#cursor ? idTime(this.#cursor) : Math.min(this.#o.now(), ...active)) - this.#o.settleMs
    for (const { id } of await this.outbox.idsFrom(from)) this.#known.set(id, idTime(id))
    this.#trustFrom = from
    const open = await this.outbox.open(this.#o.maxQueued)
    const perEndpoint = new Map<string, number>()
    for (const d of open) {
      perEndpoint.set(d.webhook_id, (perEndpoint.get(d.webhook_id) ?? 0) + 1)
      this.#workers.get(d.webhook_id)?.enqueue(d)
    }
    // An endpoint with more open deliveries than it holds fetches the rest as its queue drains.
    for (const [id, n] of perEndpoint) if (n >= this.#o.maxQueued) this.#workers.get(id)?.markOverflow()
    this.#running = true
    this.#o.bus?.on('events', this.#onEvents)
    this.#schedulePoll()
    this.wake()
  }

  /** Stop scanning, cut attempts in flight short (they are retried after a restart), and wait for them to be recorded. */
  async stop(): Promise<void> {
    if (!this.#running) return
    this.#running = false
    this.#o.bus?.off('events', this.#onEvents)
    clearTimeout(this.#poll)
    clearTimeout(this.#cursorTimer)
    this.#stop.abort()
    await this.#scanning
    await Promise.all([...this.#workers.values()].map((w) => w.stop()))
    await this.recorder.idle()
    await this.#saveCursor(true).catch((err) => this.#o.logger.warn({ err }, 'webhooks: could not save the outbox cursor'))
  }

  /** Read the log now (coalesced: one scan at a time, and one more if woken during it). */
  wake(): void {
    if (!this.#running) return
    this.#rescan = true
    if (this.#scanning) return
    this.#scanning = (async () => {
      while (this.#rescan && this.#running) {
        this.#rescan = false
        try {
          await this.#scanOnce()
          this.scanHealth.lastScanAt = this.#o.now()
        } catch (err) {
          this.scanHealth.lastFailedAt = this.#o.now()
          this.scanHealth.lastError = err instanceof Error ? err.message : String(err)
          this.#o.logger.warn({ err }, 'webhooks: reading the signal log failed; retrying at the next poll')
        }
      }
    })().finally(() => {
      this.#scanning = undefined
      if (this.#rescan) this.wake()
    })
  }

  /** An endpoint was created, changed or deleted through the API. */
  webhookChanged(w: WebhookRecord): void {
    if (!this.#running) return
    this.#apply(w)
    this.wake()
  }

  /** Put a delivery made due again (a manual retry) into its endpoint's queue. */
  enqueue(d: DeliveryRecord): void {
    if (this.#running) this.#workers.get(d.webhook_id)?.enqueue(d)
  }

  /**
   * Replay one delivery: a new round of attempts starting now, with the same id (so the
   * `webhook-id` a receiver deduplicates on is unchanged). Works with or without a running
   * dispatcher: the row is what counts.
   */
  static async requeue(webhooks: WebhookStore, outbox: OutboxStore, id: string, now: number): Promise<DeliveryRecord> {
    const d = await outbox.get(id)
    if (!(await webhooks.find(d.webhook_id))) {
      throw new ApiError({ code: 'NOT_FOUND', message: `the webhook ${d.webhook_id} of delivery ${id} was deleted` })
    }
    if (d.status === 'pending' || d.status === 'retrying') {
      const at = d.next_attempt_at === null ? 'now' : new Date(d.next_attempt_at).toISOString()
      throw new ApiError({ code: 'CONFLICT', message: `delivery ${id} is already ${d.status} (next attempt ${at})` })
    }
    const next: DeliveryRecord = { ...d, status: 'pending', round_attempts: 0, next_attempt_at: now, updated_at: now }
    await outbox.saveDeliveries([next])
    return next
  }

  #schedulePoll() {
    this.#poll = setTimeout(async () => {
      try {
        await this.#reloadEndpoints()
      } catch (err) {
        this.#o.logger.warn({ err }, 'webhooks: could not reload endpoints')
      }
      this.wake()
      if (this.#running) this.#schedulePoll()
    }, this.#o.pollMs)
    this.#poll.unref?.()
  }

  /**
   * Catch up with endpoints changed elsewhere (another process, the CLI). A change the API made
   * while the list was being read is newer than the list: it is kept, not undone.
   */
  async #reloadEndpoints() {
    const asked = Date.now()
    const all = await this.webhooks.list()
    const seen = new Set(all.map((w) => w.id))
    for (const w of all) {
      const held = this.#workers.get(w.id)?.webhook
      if (!held || Date.parse(held.updated_at) <= Date.parse(w.updated_at)) this.#apply(w)
    }
    for (const [id, worker] of this.#workers) {
      if (!seen.has(id) && Date.parse(worker.webhook.updated_at) < asked) {
        this.#workers.delete(id)
        void worker.retire()
      }
    }
  }

  #apply(w: WebhookRecord) {
    const worker = this.#workers.get(w.id)
    if (w.deleted) {
      this.#workers.delete(w.id)
      void worker?.retire()
    } else if (worker) worker.update(w)
    else this.#workers.set(w.id, new EndpointWorker(w, this, this.#o))
  }

  async #scanOnce() {
    const workers = new Map([...this.#workers].filter(([, w]) => w.accepting))
    const { cursor } = await scanLog({
      store: this.#o.store,
      endpoints: [...workers.values()].map((w) => w.webhook),
      cursor: this.#cursor,
      settleMs: this.#o.settleMs,
      now: this.#o.now,
      recorded: (wanted) => this.#recorded(wanted),
      onRecorded: (fresh) => {
        for (const d of fresh) {
          this.#known.set(d.id, idTime(d.event_id))
          workers.get(d.webhook_id)?.enqueue(d)
        }
      },
    })
    this.#cursor = cursor
    await this.#saveCursor(false)
    this.#forget()
  }

  /** Which of these deliveries are recorded: known in memory, or, below #trustFrom (just after a start), as the store says. */
  async #recorded(wanted: DeliveryRecord[]): Promise<Set<string>> {
    const found = new Set<string>()
    const unsure: string[] = []
    for (const d of wanted) {
      if (this.#known.has(d.id)) found.add(d.id)
      else if (idTime(d.event_id) < this.#trustFrom) unsure.push(d.id)
    }
    if (unsure.length > 0) {
      for (const id of await this.outbox.existing(unsure)) {
        found.add(id)
        this.#known.set(id, idTime(id))
      }
    }
    return found
  }

  async #saveCursor(force: boolean) {
    if (!this.#cursor || this.#cursor === this.#cursorSaved) return
    const now = Date.now()
    if (!force && now - this.#cursorSavedAt < CURSOR_WRITE_MS) {
      // Saved by a later scan, or by this timer if no scan comes.
      this.#cursorTimer ??= setTimeout(() => {
        this.#cursorTimer = undefined
        this.wake()
      }, CURSOR_WRITE_MS)
      this.#cursorTimer.unref?.()
      return
    }
    const cursor = this.#cursor
    await this.outbox.writeCursor(CURSOR, cursor)
    this.#cursorSaved = cursor
    this.#cursorSavedAt = now
  }

  /** Drop remembered ids no scan can reach again (scans start at most settleMs behind the cursor). */
  #forget() {
    if (!this.#cursor) return
    const line = idTime(this.#cursor) - 2 * this.#o.settleMs
    if (line <= this.#trustFrom) return
    for (const [id, t] of this.#known) if (t < line) this.#known.delete(id)
    this.#trustFrom = line
  }

  get stopSignal() {
    return this.#stop.signal
  }
}

/** How many rounds of an endpoint's attempts (its concurrency each) have their leases claimed ahead. */
const PREFETCH_ROUNDS = 4

type WorkerOptions = Required<Omit<DispatcherOptions, 'bus' | 'publicUrl' | 'leaseMode' | 'fetch'>> & Pick<DispatcherOptions, 'fetch'>

/**
 * One endpoint's deliveries: an in-memory schedule (the store holds the same state), at most
 * `concurrency` attempts in flight, a timer for the next due attempt.
 */
class EndpointWorker {
  webhook: WebhookRecord
  readonly #queue = new Map<string, DeliveryRecord>()
  /** Deliveries whose attempt another sender held: read back from the store before anything is done with them. */
  readonly #recheck = new Set<string>()
  readonly #inflight = new Map<string, Promise<void>>()
  #timer: ReturnType<typeof setTimeout> | undefined
  #overflow = false
  #loading = false
  #stopped = false

  constructor(
    webhook: WebhookRecord,
    private readonly dispatcher: Dispatcher,
    private readonly o: WorkerOptions,
  ) {
    this.webhook = webhook
  }

  get accepting() {
    return this.webhook.enabled && !this.webhook.deleted
  }

  update(w: WebhookRecord) {
    this.webhook = w
    this.#pump()
  }

  markOverflow() {
    this.#overflow = true
  }

  enqueue(d: DeliveryRecord) {
    if (this.#stopped || this.#inflight.has(d.id)) return
    if (this.#queue.size >= this.o.maxQueued && !this.#queue.has(d.id)) {
      // Recorded in the store; fetched back when the queue drains.
      this.#overflow = true
      return
    }
    this.#queue.set(d.id, d)
    this.#pump()
  }

  /** Stop for a shutdown: attempts in flight are aborted and recorded as interrupted. */
  async stop() {
    this.#stopped = true
    clearTimeout(this.#timer)
    await Promise.allSettled([...this.#inflight.values()])
  }

  /** The endpoint was deleted: nothing more is attempted; attempts in flight end on their own. */
  async retire() {
    this.#stopped = true
    clearTimeout(this.#timer)
    this.#queue.clear()
  }

  /** Stopped, or the dispatcher is shutting down (its stop signal fires before each worker's stop()). */
  get #halted() {
    return this.#stopped || this.dispatcher.stopSignal.aborted
  }

  #pump() {
    clearTimeout(this.#timer)
    this.#timer = undefined
    // Once the shutdown has begun nothing new starts: an attempt would end at once as
    // interrupted (due again immediately) and be restarted, a loop that never yields.
    if (this.#halted || !this.accepting) return
    const now = this.o.now()
    let started = false
    while (this.#inflight.size < this.o.concurrency) {
      let next: DeliveryRecord | undefined
      for (const d of this.#queue.values()) {
        const at = d.next_attempt_at ?? 0
        if (at <= now && (!next || at < (next.next_attempt_at ?? 0))) next = d
      }
      if (!next) break
      this.#queue.delete(next.id)
      this.#start(next)
      started = true
    }
    if (started) this.#prefetch(now)
    if (this.#inflight.size < this.o.concurrency && this.#queue.size > 0) {
      let soonest = Number.POSITIVE_INFINITY
      for (const d of this.#queue.values()) soonest = Math.min(soonest, d.next_attempt_at ?? 0)
      this.#timer = setTimeout(() => this.#pump(), Math.max(0, soonest - now))
      this.#timer.unref?.()
    }
    if (this.#overflow && this.#queue.size === 0 && this.#inflight.size === 0 && !this.#loading) void this.#refill()
  }

  /**
   * Claim the leases of the next few attempts ahead (those due before a lease claimed now would
   * run short), so that a queue of attempts pays one claim write per group instead of one per
   * attempt.
   */
  #prefetch(now: number) {
    const horizon = now + this.o.leaseMarginMs / 2
    const soon: DeliveryRecord[] = []
    for (const d of this.#queue.values()) if ((d.next_attempt_at ?? 0) <= horizon && !this.#recheck.has(d.id)) soon.push(d)
    if (soon.length === 0) return
    soon.sort((a, b) => (a.next_attempt_at ?? 0) - (b.next_attempt_at ?? 0))
    this.dispatcher.leases.prefetch(soon.slice(0, this.o.concurrency * PREFETCH_ROUNDS), now)
  }

  async #refill() {
    this.#loading = true
    try {
      // Outcomes still being written would otherwise be read back as open.
      await this.dispatcher.recorder.idle()
      const rows = await this.dispatcher.outbox.openFor(this.webhook.id, this.o.maxQueued, [...this.#inflight.keys()])
      this.#overflow = rows.length >= this.o.maxQueued
      for (const d of rows) this.#queue.set(d.id, d)
    } catch (err) {
      this.o.logger.warn({ err, webhook: this.webhook.id }, 'webhooks: could not load queued deliveries')
    } finally {
      this.#loading = false
    }
    this.#pump()
  }

  #start(d: DeliveryRecord) {
    const run = this.#attempt(d)
      .catch((err) => this.o.logger.error({ err, delivery: d.id }, 'webhooks: attempt failed unexpectedly'))
      .finally(() => {
        this.#inflight.delete(d.id)
        this.#pump()
      })
    this.#inflight.set(d.id, run)
  }

  async #attempt(queued: DeliveryRecord) {
    let d = queued
    if (this.#recheck.delete(d.id)) {
      // Another sender held the last attempt: the store says what became of it.
      await this.dispatcher.recorder.idle()
      const stored = await this.dispatcher.outbox.find(d.id)
      if (!stored || !OPEN_STATUSES.includes(stored.status) || this.#halted) return
      if ((stored.next_attempt_at ?? 0) > this.o.now()) {
        this.#queue.set(stored.id, stored)
        return
      }
      d = stored
    }
    // The lease must outlast the attempt (its timeout).
    const lease = await this.dispatcher.leases.claim(d, this.o.now(), this.o.timeoutMs)
    if (!lease.held) {
      // Made (or being made) by another sender: look again when its lease ends.
      if (this.#halted) return
      this.#recheck.add(d.id)
      this.#queue.set(d.id, { ...d, next_attempt_at: lease.until })
      return
    }
    const w = this.webhook
    const { next, attempt, result } = await attemptDelivery(d, w, { ...this.o, publicUrl: this.dispatcher.publicUrl, stop: this.dispatcher.stopSignal })
    this.dispatcher.leases.release(d)
    // The outcome is recorded in the background (group commit) and the slot is free at once: if the
    // process dies before the row is written, the delivery is attempted again after the restart
    // with the same webhook-id (at least once). Later states of a delivery are always written after
    // earlier ones (flushes run in order), so the newest row wins.
    this.dispatcher.recorder
      .record(next, attempt)
      .catch((err) => this.o.logger.warn({ err, delivery: d.id }, 'webhooks: could not record an attempt'))
    if (next.status === 'retrying' && !this.#halted) this.#queue.set(next.id, next)
    this.o.logger.debug({ delivery: d.id, webhook: w.id, status: next.status, code: result.statusCode, ms: result.durationMs }, 'webhook attempt')
  }
}

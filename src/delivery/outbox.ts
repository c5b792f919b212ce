import { encodeTime } from 'ulid'
import { z } from 'zod'
import { ApiError } from '../errors.js'
import type { Store } from '../store/store.js'
import { nextVersion } from './ids.js'
import { chTime, msFromCh } from '../time.js'

export const DeliveryStatus = z.enum(['pending', 'retrying', 'delivered', 'dead'])
export type DeliveryStatus = z.infer<typeof DeliveryStatus>
/** Statuses the dispatcher still works on. */
export const OPEN_STATUSES: readonly DeliveryStatus[] = ['pending', 'retrying']

/** A delivery as the dispatcher holds it (times in ms). */
export type DeliveryRecord = {
  id: string
  webhook_id: string
  event_id: string
  type: string
  signal_id: string
  kind: string
  rule_id: string
  payload: string
  status: DeliveryStatus
  attempts: number
  round_attempts: number
  next_attempt_at: number | null
  last_status_code: number | null
  last_error: string
  created_at: number
  updated_at: number
  delivered_at: number | null
}

export type AttemptRecord = {
  delivery_id: string
  webhook_id: string
  attempt: number
  at: number
  status_code: number | null
  error: string
  response: string
  duration_ms: number
}

type DeliveryRow = Omit<DeliveryRecord, 'next_attempt_at' | 'created_at' | 'updated_at' | 'delivered_at'> & {
  next_attempt_at: string | null
  created_at: string
  updated_at: string
  delivered_at: string | null
}
type AttemptRow = Omit<AttemptRecord, 'at'> & { at: string }

const DELIVERY_COLUMNS =
  'id, webhook_id, event_id, type, signal_id, kind, rule_id, payload, status, attempts, round_attempts, next_attempt_at, last_status_code, last_error, created_at, updated_at, delivered_at'

const toRow = (d: DeliveryRecord) => ({
  ...d,
  next_attempt_at: d.next_attempt_at === null ? null : chTime(d.next_attempt_at),
  created_at: chTime(d.created_at),
  updated_at: chTime(d.updated_at),
  delivered_at: d.delivered_at === null ? null : chTime(d.delivered_at),
  version: nextVersion(),
})

const fromRow = (r: DeliveryRow): DeliveryRecord => ({
  ...r,
  attempts: Number(r.attempts),
  round_attempts: Number(r.round_attempts),
  last_status_code: r.last_status_code === null ? null : Number(r.last_status_code),
  next_attempt_at: r.next_attempt_at === null ? null : msFromCh(r.next_attempt_at),
  created_at: msFromCh(r.created_at),
  updated_at: msFromCh(r.updated_at),
  delivered_at: r.delivered_at === null ? null : msFromCh(r.delivered_at),
})

/** One attempt as the API shows it. */
export const DeliveryAttempt = z.object({
  attempt: z.number().int(),
  at: z.iso.datetime(),
  status_code: z.number().int().nullable(),
  error: z.string(),
  response: z.string(),
  duration_ms: z.number().int(),
})
export type DeliveryAttempt = z.infer<typeof DeliveryAttempt>

/** A delivery as the API shows it: its state and every attempt with what the endpoint answered. */
export const Delivery = z.object({
  id: z.string(),
  webhook_id: z.string(),
  event_id: z.string(),
  type: z.string(),
  signal_id: z.string(),
  kind: z.string(),
  rule_id: z.string(),
  status: DeliveryStatus,
  attempt_count: z.number().int(),
  next_attempt_at: z.iso.datetime().nullable(),
  last_status_code: z.number().int().nullable(),
  last_error: z.string(),
  created_at: z.iso.datetime(),
  updated_at: z.iso.datetime(),
  delivered_at: z.iso.datetime().nullable(),
  attempts: z.array(DeliveryAttempt),
})
export type Delivery = z.infer<typeof Delivery>

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString())

export function publicDelivery(d: DeliveryRecord, attempts: AttemptRecord[]): Delivery {
  return {
    id: d.id,
    webhook_id: d.webhook_id,
    event_id: d.event_id,
    type: d.type,
    signal_id: d.signal_id,
    kind: d.kind,
    rule_id: d.rule_id,
    status: d.status,
    attempt_count: d.attempts,
    next_attempt_at: d.status === 'pending' || d.status === 'retrying' ? iso(d.next_attempt_at) : null,
    last_status_code: d.last_status_code,
    last_error: d.last_error,
    created_at: new Date(d.created_at).toISOString(),
    updated_at: new Date(d.updated_at).toISOString(),
    delivered_at: iso(d.delivered_at),
    attempts: attempts.map((a) => ({
      attempt: a.attempt,
      at: new Date(a.at).toISOString(),
      status_code: a.status_code,
      error: a.error,
      response: a.response,
      duration_ms: a.duration_ms,
    })),
  }
}

/** The outbox tables, one function per query. Delivery rows are rewritten whole (ReplacingMergeTree). */
export class OutboxStore {
  constructor(private readonly store: Store) {}

  async saveDeliveries(deliveries: readonly DeliveryRecord[]): Promise<void> {
    await this.store.insert('webhook_deliveries_v1', deliveries.map(toRow))
  }

  async saveAttempts(attempts: readonly AttemptRecord[]): Promise<void> {
    await this.store.insert(
      'webhook_attempts_v1',
      attempts.map((a) => ({ ...a, at: chTime(a.at) })),
    )
  }

  /** Which of these delivery ids are already recorded (for recovery after a crash, or a re-scan). */
  async existing(ids: readonly string[]): Promise<Set<string>> {
    const found = new Set<string>()
    for (let i = 0; i < ids.length; i += 5000) {
      const rows = await this.store.query<{ id: string }>('SELECT DISTINCT id FROM webhook_deliveries_v1 WHERE id IN {ids:Array(String)}', {
        ids: ids.slice(i, i + 5000),
      })
      for (const r of rows) found.add(r.id)
    }
    return found
  }

  /** Ids of the deliveries of events made at or after `ms` (delivery ids begin with their event's time). */
  async idsFrom(ms: number): Promise<{ id: string }[]> {
    return this.store.query<{ id: string }>('SELECT DISTINCT id FROM webhook_deliveries_v1 WHERE id >= {from:String}', {
      from: `dlv_${encodeTime(Math.max(0, ms), 10)}`,
    })
  }

  /** Deliveries still to be attempted, soonest first (at most `limit` per endpoint). */
  async open(limit: number): Promise<DeliveryRecord[]> {
    const rows = await this.store.query<DeliveryRow>(
      `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries_v1 FINAL
       WHERE status IN {open:Array(String)}
       ORDER BY webhook_id, next_attempt_at, id LIMIT {limit:UInt32} BY webhook_id`,
      { open: OPEN_STATUSES, limit },
    )
    return rows.map(fromRow)
  }

  async openFor(webhookId: string, limit: number, exclude: readonly string[]): Promise<DeliveryRecord[]> {
    const rows = await this.store.query<DeliveryRow>(
      `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries_v1 FINAL
       WHERE webhook_id = {webhook:String} AND status IN {open:Array(String)} AND id NOT IN {exclude:Array(String)}
       ORDER BY next_attempt_at, id LIMIT {limit:UInt32}`,
      { webhook: webhookId, open: OPEN_STATUSES, exclude, limit },
    )
    return rows.map(fromRow)
  }

  async find(id: string): Promise<DeliveryRecord | undefined> {
    const rows = await this.store.query<DeliveryRow>(`SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries_v1 FINAL WHERE id = {id:String}`, { id })
    return rows[0] ? fromRow(rows[0]) : undefined
  }

  async findMany(ids: readonly string[]): Promise<DeliveryRecord[]> {
    if (ids.length === 0) return []
    const rows = await this.store.query<DeliveryRow>(`SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries_v1 FINAL WHERE id IN {ids:Array(String)}`, { ids })
    return rows.map(fromRow)
  }

  async get(id: string): Promise<DeliveryRecord> {
    const found = await this.find(id)
    if (!found) throw new ApiError({ code: 'NOT_FOUND', message: `no delivery ${id}` })
    return found
  }

  /** An endpoint's deliveries, newest first, with their attempts; `before` pages on (a delivery id). */
  async list(webhookId: string, opts: { status?: DeliveryStatus; limit: number; before?: string }) {
    const rows = await this.store.query<DeliveryRow>(
      `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries_v1 FINAL
       WHERE webhook_id = {webhook:String}
         AND ({status:String} = '' OR status = {status:String})
         AND ({before:String} = '' OR id < {before:String})
       ORDER BY id DESC LIMIT {limit:UInt32}`,
      { webhook: webhookId, status: opts.status ?? '', before: opts.before ?? '', limit: opts.limit + 1 },
    )
    const page = rows.slice(0, opts.limit).map(fromRow)
    const attempts = await this.attempts(webhookId, page.map((d) => d.id))
    return {
      data: page.map((d) => publicDelivery(d, attempts.get(d.id) ?? [])),
      next_cursor: rows.length > opts.limit ? (page.at(-1)?.id ?? null) : null,
    }
  }

  async attempts(webhookId: string, deliveryIds: readonly string[]): Promise<Map<string, AttemptRecord[]>> {
    const byDelivery = new Map<string, AttemptRecord[]>()
    if (deliveryIds.length === 0) return byDelivery
    const rows = await this.store.query<AttemptRow>(
      `SELECT delivery_id, webhook_id, attempt, at, status_code, error, response, duration_ms FROM webhook_attempts_v1
       WHERE webhook_id = {webhook:String} AND delivery_id IN {ids:Array(String)} ORDER BY delivery_id, attempt, at`,
      { webhook: webhookId, ids: deliveryIds },
    )
    for (const r of rows) {
      const list = byDelivery.get(r.delivery_id) ?? []
      list.push({
        ...r,
        attempt: Number(r.attempt),
        status_code: r.status_code === null ? null : Number(r.status_code),
        duration_ms: Number(r.duration_ms),
        at: msFromCh(r.at),
      })
      byDelivery.set(r.delivery_id, list)
    }
    return byDelivery
  }

  async readCursor(name: string): Promise<string | undefined> {
    const rows = await this.store.query<{ event_id: string }>(
      'SELECT argMax(event_id, version) AS event_id FROM webhook_outbox_cursor_v1 WHERE name = {name:String} GROUP BY name',
      { name },
    )
    return rows[0]?.event_id || undefined
  }

  async writeCursor(name: string, eventId: string): Promise<void> {
    await this.store.insert('webhook_outbox_cursor_v1', [{ name, event_id: eventId, version: nextVersion() }])
  }
}



/**
 * Group commit for the outcome of attempts: rows that arrive while an insert runs share the next
 * one (one insert per table per flush instead of two per attempt), so recording does not limit
 * deliveries per second. Each caller is answered when its rows are stored.
 */
export class AttemptRecorder {
  #deliveries: DeliveryRecord[] = []
  #attempts: AttemptRecord[] = []
  #waiters: { resolve: () => void; reject: (err: unknown) => void }[] = []
  #flushing: Promise<void> | undefined

  constructor(private readonly outbox: OutboxStore) {}

  record(delivery: DeliveryRecord, attempt: AttemptRecord): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#deliveries.push(delivery)
      this.#attempts.push(attempt)
      this.#waiters.push({ resolve, reject })
      this.#kick()
    })
  }

  /** Resolves when everything recorded so far is stored (or failed). */
  async idle(): Promise<void> {
    while (this.#flushing) await this.#flushing
  }

  #kick() {
    if (this.#flushing || this.#waiters.length === 0) return
    const deliveries = this.#deliveries
    const attempts = this.#attempts
    const waiters = this.#waiters
    this.#deliveries = []
    this.#attempts = []
    this.#waiters = []
    this.#flushing = Promise.all([this.outbox.saveAttempts(attempts), this.outbox.saveDeliveries(deliveries)]).then(
      () => {
        for (const w of waiters) w.resolve()
      },
      (err) => {
        for (const w of waiters) w.reject(err)
      },
    )
    void this.#flushing.finally(() => {
      this.#flushing = undefined
      this.#kick()
    })
  }
}

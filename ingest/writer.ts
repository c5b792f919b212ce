import type { Logger } from 'pino'
import { StoreUnavailableError } from '../src/errors.js'
import type { Store } from '../src/store/store.js'
import { chTime, msFromCh } from '../src/time.js'
import { parseJson, stringifyJson } from './json.js'
import { EVENT_COLUMNS, type EventRow, eventsTsv } from './normalize.js'

export type IngestErrorRow = {
  id: string
  received_at: string
  source: string
  level: 'error' | 'warning'
  route: string
  batch_index: number
  message_id: string
  path: string
  message: string
  payload: string
}

export type WriteBatch = { events: EventRow[]; errors: IngestErrorRow[] }

/** A message the store refused on its own (found by splitting its block): its index in the write's `events`, and why. */
export type StoreRejection = { event: number; message: string }
/** What became of a write's events: all stored, but those listed. */
export type WriteResult = { rejected: StoreRejection[] }
const ALL_STORED: WriteResult = Object.freeze({ rejected: Object.freeze([]) as unknown as StoreRejection[] })

/**
 * Where accepted messages go. Resolving means durably stored: on Node, in ClickHouse; on the
 * edge, in a Cloudflare Queue. Rejecting means nothing may be acknowledged (the client retries).
 */
export interface EventSink {
  write(batch: WriteBatch): Promise<WriteResult>
  /** When blocks were last stored and last failed, where the sink writes to the store itself (readiness). */
  readonly health?: WriteHealth
  close(): Promise<void>
}

type Pending = WriteBatch & {
  /** The events encoded by `eventsTsv`, outside the JS heap: what the block inserts when none of them is a duplicate. */
  text: Buffer
  resolve: (result: WriteResult) => void
  reject: (err: unknown) => void
}

/**
 * Told of every block the writer stores, in order (the rules' per-day state, rules/state/keeper.ts):
 * `prepare` sees the block's derived identity rows before they are stored, `commit` runs the
 * block's events insert and then writes what it keeps, with nothing of its own in between.
 */
export interface StateHook<C = unknown> {
  prepare(derived: ReturnType<typeof deriveRows>): Promise<C>
  commit(events: readonly EventRow[], prepared: C | undefined, insert: () => Promise<void>): Promise<void>
}

/** Insert a block's events, through the state hook when there is one. */
const committed = (state: StateHook | undefined, events: readonly EventRow[], prepared: unknown, insert: () => Promise<void>) =>
  state ? state.commit(events, prepared, insert) : insert()

/** A block's outcome: the events newly stored, and the messages refused on their own (by dedup key) if it had to be split. */
type Flushed = { stored: EventRow[]; rejected?: Map<string, string> }

const LOOKUP_CHUNK = 10_000
/** A forming block is written at most this many `flushMs` after it began, however busy. */
const MAX_WAIT_FLUSHES = 10
/** Half of ClickHouse's default `http_max_uri_size` (1 MiB), for a server reached over HTTP. */
const LOOKUP_BYTES = 512 * 1024

/**
 * Group commit into ClickHouse. Concurrent requests share one insert, so throughput comes from
 * large blocks while every request is still answered only after its rows are stored. A block is
 * written when `maxRows` rows are waiting, or when no request has joined it for `flushMs` (the
 * burst of requests that follows each acknowledgement has ended), and at the latest
 * `MAX_WAIT_FLUSHES × flushMs` after it began to form. Two flushes overlap at most: a block's
 * dedup lookup and derived rows run while the previous block's events are inserted; events
 * inserts run one at a time, in order. That is what keeps deduplication exact: each flush drops
 * messages whose (source, message_id) is already stored, repeated in the block, or being stored
 * by the previous block, before inserting, so no count depends on background merges.
 */
export class GroupCommitWriter implements EventSink {
  #pending: Pending[] = []
  #pendingRows = 0
  #timer: ReturnType<typeof setTimeout> | undefined
  /** When the block now forming began to form (its first write, or the end of the last flush). */
  #formingSince: number | undefined
  /** A block is in its first stage (dedup lookup, derived rows); one at a time. */
  #preparing = false
  /** Blocks between their first stage and the end of their events insert (at most two). */
  #inFlight = 0
  /** Whether the last block's events insert succeeded, once it has ended. */
  #tail: Promise<boolean> = Promise.resolve(true)
  /** The messages the last block may still be storing. */
  #tailKeys: Set<string> | undefined
  #closed = false
  #idle: (() => void)[] = []
  #seen: SeenCache | undefined
  /** When blocks were last stored and last failed (readiness reads it). */
  readonly health = new WriteHealth()

  constructor(
    private readonly store: Store,
    private readonly opts: {
      flushMs: number
      maxRows: number
      /** Called after each flush with the events newly stored (e.g. to re-evaluate touched subjects). */
      onStored?: (events: EventRow[]) => void
      /** Each flush is logged at debug level (rows, new events, milliseconds); hook failures at error. */
      logger?: Pick<Logger, 'debug' | 'warn' | 'error'>
      /**
       * Rows allowed to wait (default 10 × maxRows). Beyond it the store is not keeping up: new
       * writes fail at once (503, the client retries later) instead of piling up in memory.
       */
      maxPendingRows?: number
      /**
       * Users/accounts/memberships rows remembered as stored, to skip rewriting them (default 0,
       * off: last_seen is then exact instead of trailing by up to SEEN_LAG_MS). The cache assumes
       * those tables are only appended to while the writer lives (no TRUNCATE behind its back).
       */
      seenCacheEntries?: number
      /** The clock of `health` (epoch ms). */
      now?: () => number
      /** Keeps the per-day state of the stored events (rules/state/keeper.ts). */
      state?: StateHook
    },
  ) {
    const entries = opts.seenCacheEntries ?? 0
    if (entries > 0) this.#seen = new SeenCache(entries)
  }

  write(batch: WriteBatch): Promise<WriteResult> {
    if (this.#closed) return Promise.reject(new StoreUnavailableError('the service is shutting down'))
    if (batch.events.length === 0 && batch.errors.length === 0) return Promise.resolve(ALL_STORED)
    const limit = this.opts.maxPendingRows ?? this.opts.maxRows * 10
    if (this.#pendingRows > 0 && this.#pendingRows + batch.events.length + batch.errors.length > limit) {
      return Promise.reject(new StoreUnavailableError(`the store is not keeping up: ${this.#pendingRows} rows are waiting to be written`))
    }
    return new Promise<WriteResult>((resolve, reject) => {
      // Encoded now: the text's pieces die young, and its bytes live off the heap (not copied by
      // every young-generation collection while the block forms and is stored).
      this.#pending.push({ ...batch, text: Buffer.from(eventsTsv(batch.events)), resolve, reject })
      this.#pendingRows += batch.events.length + batch.errors.length
      this.#schedule()
    })
  }

  /** Stop taking writes, flush what is waiting, and resolve when the last flush has ended. */
  async close(): Promise<void> {
    this.#closed = true
    if (this.#pending.length > 0) this.#kick()
    if (this.#inFlight === 0 && !this.#preparing && this.#pending.length === 0) return
    await new Promise<void>((resolve) => this.#idle.push(resolve))
  }

  /** Decide when the waiting rows are written: now, or after a quiet `flushMs`. */
  #schedule() {
    if (this.#preparing || this.#inFlight >= 2 || this.#pending.length === 0) return // a running flush reschedules when it ends
    const { flushMs, maxRows } = this.opts
    if (this.#pendingRows >= maxRows || flushMs === 0) return this.#kick()
    const now = performance.now()
    this.#formingSince ??= now
    const deadline = this.#formingSince + flushMs * MAX_WAIT_FLUSHES
    clearTimeout(this.#timer)
    this.#timer = setTimeout(() => this.#kick(), Math.max(0, Math.min(flushMs, deadline - now)))
  }

  #kick() {
    clearTimeout(this.#timer)
    this.#timer = undefined
    if (this.#preparing || this.#inFlight >= 2 || this.#pending.length === 0) return
    this.#formingSince = undefined
    const items: Pending[] = []
    let rows = 0
    while (this.#pending.length > 0 && (items.length === 0 || rows < this.opts.maxRows)) {
      const item = this.#pending.shift() as Pending
      rows += item.events.length + item.errors.length
      items.push(item)
    }
    this.#pendingRows -= rows
    this.#preparing = true
    this.#inFlight++
    const started = performance.now()
    void this.#flush(items).then(
      ({ stored, rejected }) => {
        for (const i of items) i.resolve(rejected?.size ? rejectionsOf(i.events, rejected) : ALL_STORED)
        this.health.stored((this.opts.now ?? Date.now)())
        this.opts.logger?.debug({ requests: items.length, rows, stored: stored.length, ms: Math.round(performance.now() - started) }, 'flushed')
        // A listener's failure (thrown or rejected) must not touch requests already acknowledged,
        // nor crash the process.
        const onStored = this.opts.onStored
        if (onStored && stored.length > 0) {
          Promise.resolve(stored)
            .then(onStored)
            .catch((err: unknown) => this.opts.logger?.error({ err }, 'the onStored hook failed'))
        }
      },
      (err) => {
        const failure = new StoreUnavailableError(err)
        this.health.failed((this.opts.now ?? Date.now)(), failure.message)
        for (const i of items) i.reject(failure)
      },
    ).finally(() => {
      this.#inFlight--
      this.#next()
    })
  }

  /** After a stage ends: start the next block if one waits, or report idle. */
  #next() {
    if (this.#pending.length > 0) {
      if (this.#closed) return this.#kick()
      // Requests that arrived during the flush form the next block, joined by those that the
      // clients just acknowledged send next: it is written once that burst is over.
      this.#formingSince ??= performance.now()
      return this.#schedule()
    }
    if (this.#inFlight === 0 && !this.#preparing) for (const done of this.#idle.splice(0)) done()
  }

  /**
   * Two flushes overlap: this block's dedup lookup and derived rows are written while the
   * previous block's events insert runs. Events inserts stay in order. Messages the previous
   * block is storing are held back ("deferred"); if that block fails, they are looked up again
   * once it has ended and stored here, so no message is stored twice or lost. If a stage fails
   * for a reason tied to the block's rows (the store refused their data), the block is stored
   * again in halves once the previous block has ended (`storeSplit`), so a message the store
   * refuses fails only itself.
   */
  async #flush(items: Pending[]): Promise<Flushed> {
    const events = items.flatMap((i) => i.events)
    let prepared: Prepared | undefined
    let text: Buffer | string = ''
    let refused: unknown
    try {
      prepared = await prepareBlock(this.store, { events, errors: items.flatMap((i) => i.errors) }, { state: this.opts.state }, this.#tailKeys, this.#seen)
      // Every event is new (the usual case): the block's text is its requests' texts, in order.
      text = prepared.fresh.length === events.length ? Buffer.concat(items.map((i) => i.text)) : eventsTsv(prepared.fresh)
    } catch (err) {
      if (!isRowFault(err)) throw err
      refused = err
    } finally {
      this.#preparing = false
    }
    const previous = this.#tail
    const keys = new Set<string>()
    for (const e of prepared ? prepared.fresh.concat(prepared.deferred) : events) keys.add(dedupKey(e))
    const commit = (async (): Promise<Flushed> => {
      const previousStored = await previous
      if (prepared) {
        try {
          let stored = prepared.fresh
          let changes = prepared.changes
          if (!previousStored && prepared.deferred.length > 0) {
            const back = await dropStored(this.store, prepared.deferred)
            const derived = deriveRows(back)
            // The state is told of these derived rows too (a block's changes are all it needs).
            const more = await this.opts.state?.prepare(derived)
            await insertDerived(this.store, derived) // not via the cache: rare, and always exact
            changes = mergeChanges(changes, more)
            stored = stored.concat(back)
            text = Buffer.concat([Buffer.from(text), Buffer.from(eventsTsv(back))])
          }
          const block = text
          await committed(this.opts.state, stored, changes, () => insertEvents(this.store, block))
          return { stored }
        } catch (err) {
          if (!isRowFault(err)) throw err
          refused = err
        }
      }
      this.opts.logger?.warn({ err: refused, rows: events.length }, 'the store refused a row of a block; storing the block in parts')
      const split = await storeSplit(this.store, events, (rows) => insertEvents(this.store, eventsTsv(rows)), { state: this.opts.state })
      // The error rows went with the derived rows, unless that stage is the one that failed.
      if (!prepared) await insertErrorRows(this.store, items.flatMap((i) => i.errors), undefined, this.opts.logger)
      return split
    })()
    this.#tail = commit.then(
      (r) => !r.rejected?.size,
      () => false,
    )
    this.#tailKeys = keys
    void this.#tail.then(() => {
      if (this.#tailKeys === keys) this.#tailKeys = undefined
    })
    // The next block may prepare while this one's events are inserted.
    this.#next()
    return commit
  }
}

/** A write's rejections: each of its events whose message (by dedup key) the store refused. */
function rejectionsOf(events: readonly EventRow[], refused: Map<string, string>): WriteResult {
  const rejected: StoreRejection[] = []
  events.forEach((e, event) => {
    const message = refused.get(dedupKey(e))
    if (message !== undefined) rejected.push({ event, message })
  })
  return { rejected }
}

/**
 * ClickHouse error codes that are about the data of an insert or a bound parameter, not about the
 * server: cannot parse (text, escape sequence, quoted string, number, date, date-time, input),
 * incorrect data, type mismatch, value out of range, string too large, bad query parameter.
 * A constraint violation (469) is not among them: signalbox declares none, so one is the
 * operator's, and refusing rows for it must not throw them away.
 */
const DATA_ERROR_CODES = new Set([6, 25, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 131, 321, 349, 407, 457])

/** The ClickHouse error code of a failure, from the client's error or the engine's message ("Code: 27. DB::Exception"). */
function clickhouseCode(err: unknown): number | undefined {
  if (!(err instanceof Error)) return undefined
  const code = (err as { code?: unknown }).code
  if (typeof code === 'string' && /^\d+$/.test(code)) return Number(code)
  const m = /\bCode: (\d+)\./.exec(err.message)
  return m ? Number(m[1]) : undefined
}

/**
 * Whether a failed insert failed because of the rows it carried (ClickHouse refused their data,
 * or encoding them threw), as opposed to a store that is down or full. Only the first kind is
 * worth splitting the block for; the second is a 503 for everyone.
 */
export function isRowFault(err: unknown): boolean {
  if (err instanceof SyntaxError || err instanceof RangeError || err instanceof URIError) return true
  const code = clickhouseCode(err)
  return code !== undefined && DATA_ERROR_CODES.has(code)
}

const firstLine = (err: unknown) => (err instanceof Error ? err.message : String(err)).split('\n')[0]?.slice(0, 300) ?? ''

/**
 * Store a block whose insert failed for a reason tied to its rows: each half is stored with the
 * whole step on its own (dedup lookup, derived rows, events), and a half that fails is split
 * again, down to single messages; a message that fails alone is refused. A failure of any other
 * kind (the store is down) ends it with that error: the caller answers 503, and whatever was
 * stored already is dropped as a duplicate when the client resends. Derived rows are idempotent,
 * so writing them again for the halves is harmless; a refused message may leave derived rows
 * (a users row, say) written by the failed attempt.
 */
async function storeSplit(
  store: Store,
  events: EventRow[],
  insertEventRows: (rows: EventRow[]) => Promise<void>,
  opts: StoreBlockOptions = {},
): Promise<Required<Flushed>> {
  const out = { stored: [] as EventRow[], rejected: new Map<string, string>() }
  const first = new Map<string, EventRow>()
  for (const e of events) if (!first.has(dedupKey(e))) first.set(dedupKey(e), e)
  const attempt = async (rows: EventRow[]): Promise<void> => {
    try {
      const fresh = await dropStored(store, rows, opts)
      const derived = deriveRows(fresh)
      const changes = await opts.state?.prepare(derived)
      await insertDerived(store, derived, [], opts.settings)
      await committed(opts.state, fresh, changes, async () => {
        if (fresh.length > 0) await insertEventRows(fresh)
      })
      out.stored.push(...fresh)
    } catch (err) {
      if (!isRowFault(err)) throw err
      if (rows.length === 1) {
        out.rejected.set(dedupKey(rows[0] as EventRow), `the store refused this message: ${firstLine(err)}`)
        return
      }
      const half = Math.ceil(rows.length / 2)
      await attempt(rows.slice(0, half))
      await attempt(rows.slice(half))
    }
  }
  await attempt([...first.values()])
  return out
}

/**
 * Insert ingestion-error rows, splitting them as `storeSplit` does when the store refuses one: a
 * row refused alone is tried once more without its payload, and logged if even that is refused.
 */
export async function insertErrorRows(store: Store, rows: IngestErrorRow[], settings?: InsertSettings, logger?: Pick<Logger, 'error'>): Promise<void> {
  const insert = (part: IngestErrorRow[]) => store.insert('ingest_errors_v1', part, part.length ? settings?.('ingest_errors_v1', part) : undefined)
  const attempt = async (part: IngestErrorRow[]): Promise<void> => {
    try {
      await insert(part)
    } catch (err) {
      if (!isRowFault(err)) throw err
      if (part.length > 1) {
        const half = Math.ceil(part.length / 2)
        await attempt(part.slice(0, half))
        await attempt(part.slice(half))
        return
      }
      const row = part[0] as IngestErrorRow
      try {
        await insert([{ ...row, payload: JSON.stringify(`(not kept: ${firstLine(err)})`) }])
      } catch (again) {
        if (!isRowFault(again)) throw again
        logger?.error({ err: again, id: row.id, message_id: row.message_id }, 'an ingestion error row could not be stored')
      }
    }
  }
  if (rows.length > 0) await attempt(rows)
}

/** When the store last took a block and last failed one, for readiness (`/ready`). */
export class WriteHealth {
  lastStoredAt: number | undefined
  lastFailedAt: number | undefined
  lastError: string | undefined
  stored(at: number) {
    this.lastStoredAt = at
  }
  failed(at: number, error: string) {
    this.lastFailedAt = at
    this.lastError = error
  }
  /** Failing now: the last block failed, and none was stored since. */
  get failing() {
    return this.lastFailedAt !== undefined && (this.lastStoredAt === undefined || this.lastStoredAt < this.lastFailedAt)
  }
}

type Prepared = { fresh: EventRow[]; deferred: EventRow[]; changes?: unknown }

/** Two blocks' state changes as one (the hook's own shape: lists of rows under the same keys). */
function mergeChanges(a: unknown, b: unknown): unknown {
  if (a === undefined) return b
  if (b === undefined) return a
  const x = a as Record<string, unknown[]>
  const y = b as Record<string, unknown[]>
  return Object.fromEntries([...new Set([...Object.keys(x), ...Object.keys(y)])].map((k) => [k, [...(x[k] ?? []), ...(y[k] ?? [])]]))
}

/** How far a stored last_seen may trail the newest event before its row is written again. */
export const SEEN_LAG_MS = 60_000

/**
 * The users, accounts and memberships rows known to be stored, so a flush skips rewriting a row
 * the store already covers: its stored first_seen is not later than the new one and its stored
 * last_seen is at most `SEEN_LAG_MS` older than the new one. So first_seen is always exact, and
 * a last_seen read from these tables may trail the newest event by up to `SEEN_LAG_MS` (while
 * events keep coming within that lag). Filled only after the rows' insert succeeded, empty after
 * a restart (the first flush rewrites), and bounded: the least recently written entries go first.
 */
export class SeenCache {
  /** One map per kind of row, so that keys are the ids themselves (no prefixed copy per lookup). */
  #rows: Record<SeenKind, Map<string, { first: string; lastLimit: string }>> = { user: new Map(), account: new Map(), membership: new Map() }
  constructor(private readonly maxEntries = 200_000) {}

  get size() {
    return this.#rows.user.size + this.#rows.account.size + this.#rows.membership.size
  }

  /** Whether a row with this span is already covered in the store. */
  covers(kind: SeenKind, key: string, row: Span): boolean {
    const seen = this.#rows[kind].get(key)
    return seen !== undefined && seen.first <= row.first_seen && row.last_seen <= seen.lastLimit
  }

  /** Record rows that were just stored (their span widened by what was stored before). */
  stored(kind: SeenKind, key: string, row: Span) {
    const rows = this.#rows[kind]
    const seen = rows.get(key)
    const first = seen && seen.first < row.first_seen ? seen.first : row.first_seen
    const lastLimit = chTime(msFromCh(row.last_seen) + SEEN_LAG_MS)
    if (seen) rows.delete(key)
    // Keep the larger limit: an older stored last_seen never lowers what the store holds.
    rows.set(key, { first, lastLimit: seen && seen.lastLimit > lastLimit ? seen.lastLimit : lastLimit })
    if (this.size > this.maxEntries) {
      // The least recently written entry of the largest kind goes.
      const { user, account, membership } = this.#rows
      const largest = user.size >= account.size && user.size >= membership.size ? user : account.size >= membership.size ? account : membership
      largest.delete(largest.keys().next().value as string)
    }
  }
}

type SeenKind = 'user' | 'account' | 'membership'

/** Drop the rows `seen` covers; returns the kept rows with their cache keys. */
function uncovered<R extends Span>(seen: SeenCache, kind: SeenKind, rows: R[], key: (r: R) => string): { kind: SeenKind; rows: R[]; keys: string[] } {
  const kept: R[] = []
  const keys: string[] = []
  for (const r of rows) {
    const k = key(r)
    if (seen.covers(kind, k, r)) continue
    kept.push(r)
    keys.push(k)
  }
  return { kind, rows: kept, keys }
}

/** Insert events rows encoded by `eventsTsv`. */
export const insertEvents = (store: Store, text: string | Uint8Array) => store.insertRaw('events_v1', text, { format: 'TabSeparated', columns: EVENT_COLUMNS })

export const dedupKey = (e: EventRow) => `${e.source}\u0000${e.message_id}`

async function insertDerived(store: Store, derived: ReturnType<typeof deriveRows>, errors: IngestErrorRow[] = [], settings?: InsertSettings) {
  const insert = (table: string, rows: readonly object[]) => store.insert(table, rows, rows.length ? settings?.(table, rows) : undefined)
  await Promise.all([
    insert('ingest_errors_v1', errors),
    insert('users_v1', derived.users),
    insert('accounts_v1', derived.accounts),
    insert('memberships_v1', derived.memberships),
    insert('identities_v1', derived.identities),
    insert('user_traits_v1', derived.userTraits),
    insert('account_traits_v1', derived.accountTraits),
  ])
}

/**
 * The first stage of storing a block: drop messages already stored, hold back those `inFlight`
 * (a previous block is storing them), and write the derived rows of the rest.
 */
async function prepareBlock(store: Store, batch: WriteBatch, opts: StoreBlockOptions, inFlight?: Set<string>, seen?: SeenCache): Promise<Prepared> {
  let events = batch.events
  const deferred: EventRow[] = []
  if (inFlight && inFlight.size > 0) {
    events = []
    for (const e of batch.events) (inFlight.has(dedupKey(e)) ? deferred : events).push(e)
  }
  const fresh = await dropStored(store, events, opts)
  // Derived rows first, events last: the events row is the commit record that dedup checks,
  // and every derived table is idempotent, so a crash between the two inserts followed by a
  // client retry rewrites the derived rows harmlessly and then stores the events once.
  const derived = deriveRows(fresh)
  // What the state needs to know of them, asked before they are stored (what is new in them).
  const changes = await opts.state?.prepare(derived)
  if (!seen) {
    await insertDerived(store, derived, batch.errors, opts.settings)
    return { fresh, deferred, changes }
  }
  const users = uncovered(seen, 'user', derived.users, (r) => r.user_id)
  const accounts = uncovered(seen, 'account', derived.accounts, (r) => r.account_id)
  const memberships = uncovered(seen, 'membership', derived.memberships, (r) => `${r.account_id}\u0000${r.user_id}`)
  await insertDerived(store, { ...derived, users: users.rows, accounts: accounts.rows, memberships: memberships.rows }, batch.errors, opts.settings)
  for (const t of [users, accounts, memberships]) t.rows.forEach((r, i) => seen.stored(t.kind, t.keys[i] as string, r))
  return { fresh, deferred, changes }
}

/** Per-insert ClickHouse settings (e.g. an insert deduplication token), chosen per table and rows. */
export type InsertSettings = (table: string, rows: readonly object[]) => Record<string, string | number> | undefined

export type StoreBlockOptions = {
  settings?: InsertSettings
  /**
   * Largest size of the message ids of one dedup lookup, URL-encoded: over HTTP, query parameters
   * travel in the URL, which ClickHouse caps at 1 MiB (`http_max_uri_size`) and Cloudflare
   * Workers at 16 KB.
   */
  lookupBytes?: number
  /** Dedup lookups in flight at once (Workers allow 6 open connections per invocation). */
  lookupConcurrency?: number
  /** Keeps the per-day state of the stored events (rules/state/keeper.ts). */
  state?: StateHook
}

/**
 * Store one block of accepted messages: drop those already stored, then write the derived rows
 * and the events. Shared by the Node group-commit writer and the Workers queue consumer; exact
 * when one writer runs at a time (the single flush on Node, `max_concurrency = 1` on the queue).
 * Returns the events newly stored, and the messages the store refused on their own (by dedup key;
 * see `storeSplit`).
 */
export async function storeBlock(store: Store, batch: WriteBatch, opts: StoreBlockOptions = {}): Promise<Required<Flushed>> {
  const insertEventRows = (rows: EventRow[]) => store.insert('events_v1', rows, rows.length ? opts.settings?.('events_v1', rows) : undefined)
  let prepared = false
  try {
    const { fresh, changes } = await prepareBlock(store, batch, opts)
    prepared = true
    await committed(opts.state, fresh, changes, () => insertEventRows(fresh))
    return { stored: fresh, rejected: new Map() }
  } catch (err) {
    if (!isRowFault(err)) throw err
    const split = await storeSplit(store, batch.events, insertEventRows, opts)
    if (!prepared) await insertErrorRows(store, batch.errors, opts.settings)
    return split
  }
}

/** Drop messages repeated within the block or already stored for their source. */
export async function dropStored(
  store: Store,
  events: EventRow[],
  { lookupBytes = LOOKUP_BYTES, lookupConcurrency = 1 }: Pick<StoreBlockOptions, 'lookupBytes' | 'lookupConcurrency'> = {},
): Promise<EventRow[]> {
  const unique = new Map<string, EventRow>()
  const bySource = new Map<string, string[]>()
  for (const e of events) {
    const key = `${e.source}\u0000${e.message_id}`
    if (unique.has(key)) continue
    unique.set(key, e)
    const ids = bySource.get(e.source) ?? []
    ids.push(e.message_id)
    bySource.set(e.source, ids)
  }
  const lookups: { source: string; ids: string[] }[] = []
  for (const [source, ids] of bySource) {
    let chunk: string[] = []
    let bytes = 0
    for (const id of ids) {
      // An id in the URL: quoted, escaped, percent-encoded, comma-separated.
      const size = encodeURIComponent(id).length + 9
      if (chunk.length > 0 && (bytes + size > lookupBytes || chunk.length >= LOOKUP_CHUNK)) {
        lookups.push({ source, ids: chunk })
        chunk = []
        bytes = 0
      }
      chunk.push(id)
      bytes += size
    }
    if (chunk.length > 0) lookups.push({ source, ids: chunk })
  }
  let next = 0
  const worker = async () => {
    while (next < lookups.length) {
      const { source, ids } = lookups[next++] as { source: string; ids: string[] }
      const stored = await store.query<{ message_id: string }>(
        'SELECT message_id FROM events_v1 WHERE source = {source:String} AND message_id IN {ids:Array(String)}',
        { source, ids },
      )
      for (const r of stored) unique.delete(`${source}\u0000${r.message_id}`)
      // Already stored: perhaps by an insert whose rollup rows were lost (see repairRollup).
      if (stored.length > 0) await repairRollup(store, source, stored.map((r) => r.message_id))
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(lookupConcurrency, lookups.length)) }, worker))
  return [...unique.values()]
}

/**
 * Write again the daily-rollup rows of messages found already stored. The rollup is filled by a
 * materialized view as part of the events insert, but not atomically with it: an insert that
 * failed after the events part was committed (a full disk, a kill between the two parts) left
 * events without their rollup rows, and the client's resend, finding the events stored, skipped
 * them for good (`npm run chaos` found it: a round's rollup short by 220 of 14,400). Rollup rows are
 * idempotent (a uniqExact state of the message key, min and max of the time), so writing them again
 * for a resend costs an INSERT … SELECT and changes nothing when they were there. The SELECT is
 * the view's (migrations/006_create_activity_daily_mv_v1.sql), for these messages only.
 */
async function repairRollup(store: Store, source: string, ids: string[]) {
  await store.command(
    `INSERT INTO activity_daily_v1
     SELECT account_id, user_id, anonymous_id, toDate(timestamp) AS day, event, source,
            uniqExactState(cityHash64(source, message_id)) AS messages, min(timestamp) AS first_seen, max(timestamp) AS last_seen
     FROM events_v1
     WHERE source = {source:String} AND message_id IN {ids:Array(String)} AND type IN ('track', 'page', 'screen')
     GROUP BY account_id, user_id, anonymous_id, day, event, source
     SETTINGS insert_deduplication_token = ''`,
    { source, ids },
  )
}

type Span = { first_seen: string; last_seen: string }
type UserRow = Span & { user_id: string }
type AccountRow = Span & { account_id: string }
type MembershipRow = Span & { account_id: string; user_id: string }
type IdentityRow = { previous_id: string; user_id: string; via: string; first_seen: string }

/** Each trait of a stored traits text with its value as JSON text, numbers kept as sent. */
function traitsOf(text: string): [string, string][] {
  if (text === '{}') return []
  const { value, lossless } = parseJson(text)
  return Object.entries(value as Record<string, unknown>).map(([key, v]) => [key, stringifyJson(v ?? null, lossless)])
}

/** Widen a row's first/last seen to include `ts` (DateTime64 texts of one width compare as times). */
function widen(row: Span, ts: string) {
  if (ts < row.first_seen) row.first_seen = ts
  if (ts > row.last_seen) row.last_seen = ts
}

/**
 * Users, accounts, memberships, identity links and traits touched by a block of new events.
 * On the ingestion hot path: one pass, no per-event closures.
 */
export function deriveRows(events: EventRow[]) {
  const users = new Map<string, UserRow>()
  const accounts = new Map<string, AccountRow>()
  const memberships = new Map<string, MembershipRow>()
  const identities = new Map<string, IdentityRow>()
  const userTraits: object[] = []
  const accountTraits: object[] = []
  const link = (previous_id: string, user_id: string, via: string, ts: string) => {
    const key = `${previous_id}\u0000${user_id}\u0000${via}`
    const cur = identities.get(key)
    if (!cur) identities.set(key, { previous_id, user_id, via, first_seen: ts })
    else if (ts < cur.first_seen) cur.first_seen = ts
  }
  for (const e of events) {
    const ts = e.timestamp
    const user_id = e.user_id
    const account_id = e.account_id
    if (user_id) {
      const u = users.get(user_id)
      if (u) widen(u, ts)
      else users.set(user_id, { user_id, first_seen: ts, last_seen: ts })
    }
    if (account_id) {
      const a = accounts.get(account_id)
      if (a) widen(a, ts)
      else accounts.set(account_id, { account_id, first_seen: ts, last_seen: ts })
      if (user_id) {
        const key = `${account_id}\u0000${user_id}`
        const m = memberships.get(key)
        if (m) widen(m, ts)
        else memberships.set(key, { account_id, user_id, first_seen: ts, last_seen: ts })
      }
    }
    if (e.type === 'alias' && e.previous_id && e.previous_id !== user_id) link(e.previous_id, user_id, 'alias', ts)
    if (user_id && e.anonymous_id) link(e.anonymous_id, user_id, 'anonymous', ts)
    if (e.type === 'identify' && user_id) {
      for (const [key, value] of traitsOf(e.traits)) {
        userTraits.push({ user_id, key, value, timestamp: ts, source: e.source, message_id: e.message_id })
      }
    }
    if (e.type === 'group') {
      for (const [key, value] of traitsOf(e.traits)) {
        accountTraits.push({ account_id, key, value, timestamp: ts, source: e.source, message_id: e.message_id })
      }
    }
  }
  return {
    users: [...users.values()],
    accounts: [...accounts.values()],
    memberships: [...memberships.values()],
    identities: [...identities.values()],
    userTraits,
    accountTraits,
  }
}

import type { Logger } from 'pino'
import type { EventRow } from '../../ingest/normalize.js'
import type { StateHook } from '../../ingest/writer.js'
import { SerialQueue } from '../../src/store/versions.js'
import type { Store } from '../../src/store/store.js'
import { idChunks } from '../../src/store/ids.js'
import { chTime } from '../../src/time.js'
import { stateMeasures } from '../compile/state.js'
import type { StateStatus } from '../plan.js'
import type { Rule } from '../schema.js'
import { loadMeasures, type Measure, saveMeasures, uniqueMeasures } from './measures.js'
import { rebuildSlices } from './rebuild.js'
import { isActivity, rawIdOf, restate, writeBlock } from './write.js'

/** The identity rows a block derives (ingest/writer.ts deriveRows), as far as the state cares. */
export type DerivedIdentity = {
  identities: readonly { previous_id: string; user_id: string }[]
  memberships: readonly { account_id: string; user_id: string }[]
}

/** What a block changes in who owns which id: its links and memberships not stored before it. */
export type OwnershipChanges = { links: { previous_id: string; user_id: string }[]; memberships: { account_id: string; user_id: string }[] }

const NONE: OwnershipChanges = { links: [], memberships: [] }

/**
 * Keeps state_daily_v1 in step with the stored events (rules/state/write.ts does the writing):
 *
 * - each block's activity is written right after its events, in the same step of the writer's
 *   commit chain;
 * - a block that stores a NEW identity link (identify with an anonymous id, alias) or a NEW
 *   membership (group, or a first `context.groupId`) re-attributes history: the raw ids whose
 *   owner it can change are restated (cancelled and written again from events_v1) before the
 *   block's own rows, which then skip those ids (the restate read them already). New link
 *   P → U: P, and the ids linked to P (their second hop now ends at U). New membership (A, U):
 *   U and the ids linked to U in one or two hops (their untagged events now reach A).
 * - state work of its own (backfilling a measure, repairing after a failed write) runs on the
 *   same queue, between blocks, never between a block's events and its state.
 *
 * A failed state write does not fail the block (its events are stored): the ids are restated
 * with the next block.
 */
export class StateKeeper implements StateHook<OwnershipChanges> {
  readonly #queue = new SerialQueue()
  /** The measures every write keeps (ready or still being backfilled). */
  measures: Measure[]
  /** Raw ids whose state write failed, restated with the next block. */
  readonly #repair = new Set<string>()

  constructor(
    private readonly store: Store,
    opts: { measures?: Measure[]; logger?: Pick<Logger, 'error' | 'warn' | 'debug'> } = {},
  ) {
    this.measures = opts.measures ?? []
    this.#log = opts.logger
  }

  readonly #log: Pick<Logger, 'error' | 'warn' | 'debug'> | undefined

  /** Run a task of the state's own between blocks. */
  run<T>(task: () => Promise<T>): Promise<T> {
    return this.#queue.run(task)
  }

  #built = false
  readonly #ready = new Set<number>()
  #backfills: Promise<void> = Promise.resolve()

  /** Load what the store records of the state (its measures, whether it is built); an empty store is built. */
  async start(now: number): Promise<this> {
    this.#built = await markBuiltIfEmpty(this.store, now)
    const recorded = await loadMeasures(this.store)
    this.measures = uniqueMeasures([...this.measures, ...recorded.map((r) => r.measure)])
    for (const r of recorded) if (r.status === 'ready') this.#ready.add(r.measure.key)
    const building = recorded.filter((r) => r.status !== 'ready').map((r) => r.measure)
    if (building.length) this.#backfill(building)
    return this
  }

  /**
   * Keep what these rules read (the enabled ones): a measure the state does not keep yet is kept
   * by every write from now on and backfilled — every raw id restated, slice by slice, between
   * blocks — then marked ready. Returns what the state holds now, for the rules' plans.
   */
  async sync(rules: readonly Rule[]): Promise<StateStatus> {
    const known = new Set(this.measures.map((m) => m.key))
    const fresh = stateMeasures([...rules]).filter((m) => !known.has(m.key))
    if (fresh.length) {
      this.measures = uniqueMeasures([...this.measures, ...fresh])
      await saveMeasures(this.store, fresh, 'building')
      this.#backfill(fresh)
    }
    // A rebuild run elsewhere (the CLI against a ClickHouse server) is seen here.
    if (!this.#built) this.#built = await stateBuilt(this.store)
    return { built: this.#built, ready: new Set(this.#ready) }
  }

  /** Wait for the backfills under way (tests). */
  settled(): Promise<void> {
    return this.#backfills
  }

  #stopped = false

  /** Stop backfilling after the slice under way (the next start resumes what is still `building`). */
  stop(): void {
    this.#stopped = true
  }

  #backfill(measures: Measure[]) {
    this.#backfills = this.#backfills.then(async () => {
      try {
        const slices = await rebuildSlices(this.store)
        for (let index = 0; index < slices; index++) {
          if (this.#stopped) return
          await this.run(() => restate(this.store, { hashSlice: { count: slices, index } }, this.measures))
        }
        await saveMeasures(this.store, measures, 'ready')
        for (const m of measures) this.#ready.add(m.key)
        this.#log?.debug({ measures: measures.length, slices }, 'per-day state backfilled')
      } catch (err) {
        this.#log?.error({ err }, 'backfilling the per-day state failed; the rules that need it read events until the next start')
      }
    })
  }

  async prepare(derived: DerivedIdentity): Promise<OwnershipChanges> {
    const links = [...new Map(derived.identities.filter((l) => l.previous_id !== l.user_id).map((l) => [`${l.previous_id}\u0000${l.user_id}`, l])).values()]
    const memberships = [...new Map(derived.memberships.map((m) => [`${m.account_id}\u0000${m.user_id}`, m])).values()]
    if (!links.length && !memberships.length) return NONE
    const known = new Set<string>()
    for (const ids of idChunks([...new Set(links.map((l) => l.previous_id))])) {
      const rows = await this.store.query<{ previous_id: string; user_id: string }>(
        'SELECT DISTINCT previous_id, user_id FROM identities_v1 WHERE previous_id IN {ids:Array(String)}',
        { ids },
      )
      for (const r of rows) known.add(`l\u0000${r.previous_id}\u0000${r.user_id}`)
    }
    for (const users of idChunks([...new Set(memberships.map((m) => m.user_id))])) {
      const rows = await this.store.query<{ account_id: string; user_id: string }>(
        'SELECT DISTINCT account_id, user_id FROM memberships_v1 WHERE account_id IN {accounts:Array(String)} AND user_id IN {users:Array(String)}',
        { accounts: [...new Set(memberships.map((m) => m.account_id))], users },
      )
      for (const r of rows) known.add(`m\u0000${r.account_id}\u0000${r.user_id}`)
    }
    return {
      links: links.filter((l) => !known.has(`l\u0000${l.previous_id}\u0000${l.user_id}`)),
      memberships: memberships.filter((m) => !known.has(`m\u0000${m.account_id}\u0000${m.user_id}`)),
    }
  }

  commit(events: readonly EventRow[], changes: OwnershipChanges | undefined, insert: () => Promise<void>): Promise<void> {
    return this.#queue.run(async () => {
      await insert()
      const repair = [...this.#repair]
      this.#repair.clear()
      try {
        const moved = new Set([...repair, ...(await this.#reattributed(changes ?? NONE))])
        for (const ids of idChunks([...moved])) await restate(this.store, ids, this.measures)
        await writeBlock(this.store, events, this.measures, moved)
      } catch (err) {
        for (const id of repair) this.#repair.add(id)
        for (const e of events) if (isActivity(e) && rawIdOf(e)) this.#repair.add(rawIdOf(e))
        for (const l of changes?.links ?? []) this.#repair.add(l.previous_id)
        for (const m of changes?.memberships ?? []) this.#repair.add(m.user_id)
        this.#log?.error({ err, ids: this.#repair.size }, 'the per-day state of a block could not be written; its ids are restated with the next block')
      }
    })
  }

  /** The raw ids whose owner the changes can move (see the class comment). */
  async #reattributed(changes: OwnershipChanges): Promise<string[]> {
    const out = new Set<string>()
    const linkedTo = async (targets: string[]) => {
      const found: string[] = []
      for (const ids of idChunks(targets)) {
        const rows = await this.store.query<{ previous_id: string }>(
          'SELECT DISTINCT previous_id FROM identities_v1 WHERE user_id IN {ids:Array(String)} AND previous_id != user_id',
          { ids },
        )
        found.push(...rows.map((r) => r.previous_id))
      }
      return found
    }
    const previous = [...new Set(changes.links.map((l) => l.previous_id))]
    for (const id of previous) out.add(id)
    if (previous.length) for (const id of await linkedTo(previous)) out.add(id)
    const members = [...new Set(changes.memberships.map((m) => m.user_id))]
    if (members.length) {
      for (const id of members) out.add(id)
      const hop1 = await linkedTo(members)
      for (const id of hop1) out.add(id)
      if (hop1.length) for (const id of await linkedTo(hop1)) out.add(id)
    }
    return [...out]
  }
}

/** Whether the state holds every stored event (a rebuild finished, or the store started empty). */
export async function stateBuilt(store: Store): Promise<boolean> {
  const [row] = await store.query<{ status: string }>("SELECT argMax(status, version) AS status FROM state_builds_v1 WHERE name = 'state' HAVING count() > 0")
  return row?.status === 'ready'
}

let lastBuildVersion = 0

/** The status row's version: wall-clock based and increasing in this process (it orders rows; `now` is the rules' time). */
const buildVersion = () => (lastBuildVersion = Math.max(lastBuildVersion + 1, Date.now() * 1000))

/** Record that the state holds every stored event. */
export async function markStateBuilt(store: Store, now: number): Promise<void> {
  await store.insert('state_builds_v1', [{ name: 'state', status: 'ready', built_at: chTime(now), version: buildVersion() }])
}

/** Record that the state no longer holds every stored event (a writer runs without keeping it): the rules read events until a rebuild. */
export async function markStateStale(store: Store, now: number): Promise<void> {
  await store.insert('state_builds_v1', [{ name: 'state', status: 'stale', built_at: chTime(now), version: buildVersion() }])
}

/**
 * On start: a store with no activity stored yet has a complete (empty) state. A store with
 * events from before the state existed needs `signalbox state rebuild` first.
 */
export async function markBuiltIfEmpty(store: Store, now: number): Promise<boolean> {
  if (await stateBuilt(store)) return true
  const [row] = await store.query<{ n: number }>("SELECT count() AS n FROM events_v1 WHERE type IN ('track', 'page', 'screen')")
  if (Number(row?.n ?? 0) > 0) return false
  await markStateBuilt(store, now)
  return true
}

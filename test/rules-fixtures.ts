import { loadConfig } from '../src/config.js'
import { migrate } from '../src/store/migrate.js'
import { openStore } from '../src/store/node.js'
import type { Store } from '../src/store/store.js'
import { type EventRow } from '../ingest/normalize.js'
import { chTime } from '../src/time.js'
import { GroupCommitWriter } from '../ingest/writer.js'
import { stateMeasures } from '../rules/compile/state.js'
import type { Rule } from '../rules/schema.js'
import { markBuiltIfEmpty, StateKeeper } from '../rules/state/keeper.js'
import { uniqueMeasures } from '../rules/state/measures.js'
import { rebuildState } from '../rules/state/rebuild.js'
import { removeDir, tempDir } from './harness.js'

export const DAY = 86_400_000
export const HOUR = 3_600_000
/** The fixed "now" of the rule tests: 2026-03-01T12:00:00Z. */
export const NOW = Date.UTC(2026, 2, 1, 12)

/** A store on a temp DATA_DIR with every migration applied (one per test file: chDB is one engine per process). */
export async function openRuleStore() {
  const dir = tempDir('signalbox-rules-')
  const store = await openStore(loadConfig({ DATA_DIR: dir }))
  await migrate(store)
  await markBuiltIfEmpty(store, NOW)
  // The writer keeps the per-day state as the service's does (rules/state/keeper.ts).
  const keeper = new StateKeeper(store)
  const writer = new GroupCommitWriter(store, { flushMs: 0, maxRows: 100_000, state: keeper })
  return {
    store,
    keeper,
    /** Store events through the real ingestion writer (dedup, memberships, identities, traits, the per-day state). */
    put: (rows: EventRow[]) => writer.write({ events: rows, errors: [] }),
    /**
     * Make the state keep what these rules read: measures the writer does not keep yet are added,
     * and the state is rebuilt from the stored events (what the service does for a new rule).
     */
    async stateFor(rules: Rule[]) {
      const wanted = stateMeasures(rules)
      const have = new Set(keeper.measures.map((m) => m.key))
      if (wanted.every((m) => have.has(m.key))) return
      keeper.measures = uniqueMeasures([...keeper.measures, ...wanted])
      await rebuildState(store, { now: NOW, slices: 1, measures: keeper.measures })
    },
    /** Rebuild the state from the stored events (what `signalbox state rebuild` does). */
    rebuild: () => rebuildState(store, { now: NOW, slices: 1, measures: keeper.measures }),
    async reset() {
      for (const t of ['events_v1', 'users_v1', 'accounts_v1', 'memberships_v1', 'identities_v1', 'user_traits_v1', 'account_traits_v1', 'state_owners_v1']) {
        await store.command(`TRUNCATE TABLE IF EXISTS ${t}`)
      }
      for (const t of await rollupTables(store)) await store.command(`TRUNCATE TABLE ${t}`)
    },
    async close() {
      await writer.close()
      await store.close()
      removeDir(dir)
    },
  }
}

async function rollupTables(store: Store): Promise<string[]> {
  const rows = await store.query<{ name: string }>(
    "SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE '%daily%' AND engine NOT LIKE '%View%'",
  )
  return rows.map((r) => r.name)
}

let seq = 0

/** One events_v1 row, as ingestion would store it. */
export function ev(e: {
  at: number
  type?: 'track' | 'page' | 'screen' | 'identify' | 'group' | 'alias'
  event?: string
  userId?: string
  anonymousId?: string
  accountId?: string
  properties?: Record<string, unknown>
  traits?: Record<string, unknown>
  previousId?: string
  source?: string
  messageId?: string
}): EventRow {
  const type = e.type ?? 'track'
  return {
    source: e.source ?? 'web',
    message_id: e.messageId ?? `m${++seq}`,
    type,
    event: type === 'page' ? 'Page Viewed' : type === 'screen' ? 'Screen Viewed' : (e.event ?? ''),
    user_id: e.userId ?? '',
    anonymous_id: e.anonymousId ?? '',
    account_id: e.accountId ?? '',
    timestamp: chTime(e.at),
    original_timestamp: null,
    sent_at: null,
    received_at: chTime(e.at),
    properties: JSON.stringify(e.properties ?? {}),
    traits: JSON.stringify(e.traits ?? {}),
    context: '{}',
    previous_id: e.previousId ?? '',
  }
}

/** `n` track events spread evenly over (from, to]. */
export function many(n: number, from: number, to: number, base: Omit<Parameters<typeof ev>[0], 'at'>): EventRow[] {
  return Array.from({ length: n }, (_, i) => ev({ ...base, at: to - Math.floor(((to - from - 1) * i) / Math.max(1, n)) }))
}

export const identify = (userId: string, traits: Record<string, unknown>, at: number, anonymousId?: string) =>
  ev({ type: 'identify', userId, anonymousId, traits, at })
export const group = (userId: string, accountId: string, traits: Record<string, unknown>, at: number) =>
  ev({ type: 'group', userId, accountId, traits, at })

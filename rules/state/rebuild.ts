import type { Store } from '../../src/store/store.js'
import { stateMeasures } from '../compile/state.js'
import { listRules } from '../store.js'
import { markStateBuilt } from './keeper.js'
import { loadMeasures, type Measure, saveMeasures, uniqueMeasures } from './measures.js'
import { restate } from './write.js'

/** Raw identities' events per slice of a rebuild: each slice is one restate over events_v1. */
const EVENTS_PER_SLICE = 2_000_000

/** How many slices a rebuild of this store takes. */
export async function rebuildSlices(store: Store): Promise<number> {
  const [row] = await store.query<{ n: number }>("SELECT count() AS n FROM events_v1 WHERE type IN ('track', 'page', 'screen')")
  return Math.max(1, Math.ceil(Number(row?.n ?? 0) / EVENTS_PER_SLICE))
}

export type RebuildProgress = { slice: number; slices: number }

/**
 * Rebuild the per-day state from events_v1: every raw identity restated (its rows cancelled and
 * written again with the current identity links and memberships), in slices of the ids by hash,
 * each one insert. `fromDay` (YYYY-MM-DD) restates only that day and later. The measures kept are
 * those of the enabled rules and those already recorded; all are `ready` afterwards, and so is
 * the state. For recovery and for the first migration of a store that has events (the command
 * `signalbox state rebuild`); it must not run beside a writer of the same store (a block stored
 * between a slice's read and its write would be counted twice).
 */
export async function rebuildState(
  store: Store,
  opts: { now: number; fromDay?: string; slices?: number; measures?: Measure[]; onStart?: (slices: number) => void; onProgress?: (p: RebuildProgress) => void },
): Promise<{ slices: number; measures: number }> {
  const measures = opts.measures ?? (await measuresToKeep(store))
  const slices = opts.slices ?? (await rebuildSlices(store))
  await saveMeasures(store, measures, 'building')
  opts.onStart?.(slices)
  for (let index = 0; index < slices; index++) {
    await restate(store, { hashSlice: { count: slices, index } }, measures, opts.fromDay)
    opts.onProgress?.({ slice: index + 1, slices })
  }
  await saveMeasures(store, measures, 'ready')
  await markStateBuilt(store, opts.now)
  return { slices, measures: measures.length }
}

/** The measures of the enabled rules, with those already recorded. */
export async function measuresToKeep(store: Store): Promise<Measure[]> {
  const rules = (await listRules(store)).filter((r) => r.enabled && !r.deleted).map((r) => r.rule)
  const recorded = (await loadMeasures(store)).map((r) => r.measure)
  return uniqueMeasures([...stateMeasures(rules), ...recorded])
}

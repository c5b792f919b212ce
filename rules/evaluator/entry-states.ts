import { latestSignals } from '../../src/signals/queries.js'
import type { Shard } from '../../src/store/shard.js'
import type { Store } from '../../src/store/store.js'
import type { EntryState } from './decide.js'

/** Rule id → subject id → its latest signal, for some rules of one subject type (one query) and all or some subjects of one shard. */
export async function loadEntryStates(
  store: Store,
  ruleIds: string[],
  subjectType: string,
  ids: string[] | undefined,
  shard?: Shard,
): Promise<Map<string, Map<string, EntryState>>> {
  const out = new Map(ruleIds.map((id) => [id, new Map<string, EntryState>()]))
  for (const l of await latestSignals(store, ruleIds, subjectType, ids, shard)) {
    out.get(l.ruleId)?.set(l.subjectId, { id: l.id, status: l.status, firedAt: l.firedAt })
  }
  return out
}

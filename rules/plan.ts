import { z } from 'zod'
import type { Store } from '../src/store/store.js'
import { stateMeasures } from './compile/state.js'
import type { Rule } from './schema.js'

/**
 * Which backend answers a rule (rules/compile.ts `backend`): the per-day state when it holds
 * everything the rule reads, the raw events otherwise, for that rule only. `GET /v1/rules/:id`
 * reports it as `plan`.
 */
export type Plan = { backend: 'state' | 'events'; why: string }

/** What the state holds: whether it has every stored event, and which measures are complete. */
export type StateStatus = { built: boolean; ready: ReadonlySet<number> }

export function planOf(rule: Rule, status: StateStatus | undefined): Plan {
  if (!status?.built) return { backend: 'events', why: 'the per-day state is not built yet: run `signalbox state rebuild`' }
  if (rule.sources) return { backend: 'events', why: 'the rule narrows to sources, which the per-day state does not keep' }
  const missing = stateMeasures([rule]).filter((m) => !status.ready.has(m.key))
  if (missing.length) {
    const what = [...new Set(missing.map((m) => m.kind))].join(', ')
    return { backend: 'events', why: `the per-day state is still backfilling what the rule reads (${what}); it switches when that is done` }
  }
  return { backend: 'state', why: 'whole days from the per-day state, the partial days at the window edges from events_v1' }
}

const Status = z.object({ built: z.string(), ready: z.array(z.coerce.number()) })

/** The state's status as recorded in the store (state_builds_v1, state_measures_v1), in one query. */
export async function loadStateStatus(store: Store): Promise<StateStatus> {
  const [row] = await store.query(
    `SELECT (SELECT argMax(status, version) FROM state_builds_v1 WHERE name = 'state') AS built,
            (SELECT groupArray(key) FROM (SELECT key, argMax(status, version) AS status FROM state_measures_v1 GROUP BY key) WHERE status = 'ready') AS ready`,
  )
  const s = Status.parse(row)
  return { built: s.built === 'ready', ready: new Set(s.ready) }
}

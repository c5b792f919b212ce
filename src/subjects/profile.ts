import type { Lifecycle, Transition } from '../lifecycle/lifecycle.js'
import type { Signal, SubjectType } from '../signals.js'
import { openSignalsOf } from '../signals/queries.js'
import type { Store } from '../store/store.js'
import { latestTraits, type Member, membersOf, subjectSeen, USAGE_DAYS, type UsageDay, usagePerDay } from './queries.js'

export type SubjectProfile = {
  type: SubjectType
  id: string
  first_seen: string | null
  last_seen: string | null
  stage: { name: string; since: string | null }
  stages: Transition[]
  traits: Record<string, unknown>
  /** The last 30 days (UTC; `?days=` up to 365), oldest first, days without activity included. */
  usage: UsageDay[]
  signals: Signal[]
  /** An account's users, or a user's accounts. */
  members: Member[]
}

/** An account or user as sales and CS see it (GET /v1/accounts/:id, the workspace's subject page); undefined if nothing is known of it. */
export async function subjectProfile(
  store: Store,
  lifecycle: Lifecycle,
  type: SubjectType,
  id: string,
  now: number,
  days: number = USAGE_DAYS,
): Promise<SubjectProfile | undefined> {
  const [seen, traits, signals, members, stages, current] = await Promise.all([
    subjectSeen(store, type, id),
    latestTraits(store, type, id, now),
    openSignalsOf(store, type, id),
    membersOf(store, type, id),
    lifecycle.history(type, id),
    lifecycle.current(type, [id]),
  ])
  if (!seen && Object.keys(traits).length === 0 && stages.length === 0 && signals.length === 0) return undefined
  const stage = current.get(id)
  return {
    type,
    id,
    first_seen: seen?.first_seen ?? null,
    last_seen: seen?.last_seen ?? null,
    stage: { name: stage?.stage ?? lifecycle.first, since: stage?.since ?? null },
    stages,
    traits,
    usage: await usagePerDay(store, type, id, now, days),
    signals,
    members,
  }
}

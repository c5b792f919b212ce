import type { EventRow } from '../../ingest/normalize.js'
import type { Store } from '../../src/store/store.js'
import { accountsOfUsers, usersJoinedTo } from '../../src/subjects/queries.js'
import { IDENTITY_CHANGE, ruleEvents, touches } from '../relevance.js'
import type { Rule } from '../schema.js'

/**
 * Which subjects a block of stored events touches, and by what: the one definition both runtimes
 * use (Node debounces blocks into one run, the Worker's queue consumer evaluates each block; see
 * Evaluator.touch and Evaluator.evaluateTouched).
 */

export type Subjects = { account: string[]; user: string[] }

/** What touched each id: activity event names, or IDENTITY_CHANGE (identify / group / alias). */
export type Touched = { account: Map<string, Set<string>>; user: Map<string, Set<string>>; anonymous: Map<string, Set<string>> }
/** The same for the subjects they lead to. */
export type TouchedBy = { account: Map<string, Set<string>>; user: Map<string, Set<string>> }

export type EvaluateOptions = {
  /** Only these subjects (an incremental run); absent = every subject. */
  subjects?: Subjects
  /** With `subjects`: what touched each of them; a rule then runs only for the subjects touched by what it reads. */
  touchedBy?: TouchedBy
  ruleIds?: string[]
}

/** Past this many subjects a full run is cheaper than shipping the id lists. */
export const MAX_INCREMENTAL_SUBJECTS = 5_000

export const emptyTouched = (): Touched => ({ account: new Map(), user: new Map(), anonymous: new Map() })
export const isEmpty = (t: Touched) => t.account.size === 0 && t.user.size === 0 && t.anonymous.size === 0

function addTouch(map: Map<string, Set<string>>, id: string, what: string) {
  const set = map.get(id)
  if (set) set.add(what)
  else map.set(id, new Set([what]))
}

/** Add the ids these stored events touch (their account, their user, or their anonymous id when they have no user) to `into`. */
export function addTouches(into: Touched, events: readonly EventRow[]): Touched {
  for (const e of events) {
    const what = e.type === 'track' || e.type === 'page' || e.type === 'screen' ? e.event : IDENTITY_CHANGE
    if (e.account_id) addTouch(into.account, e.account_id, what)
    if (e.user_id) addTouch(into.user, e.user_id, what)
    else if (e.anonymous_id) addTouch(into.anonymous, e.anonymous_id, what)
  }
  return into
}

/**
 * Anonymous ids and aliased user ids → the users they were joined to (two hops, as the rules
 * follow them: anonymous → id → alias); users → their accounts. What touched an id touches
 * the subjects it leads to.
 */
export async function expandTouched(store: Store, t: Touched): Promise<TouchedBy> {
  const users = new Map<string, Set<string>>()
  for (const [id, what] of t.user) users.set(id, new Set(what))
  const accounts = new Map<string, Set<string>>()
  for (const [id, what] of t.account) accounts.set(id, new Set(what))
  let frontier = new Map([...t.anonymous, ...t.user])
  for (let hop = 0; hop < 2 && frontier.size; hop++) {
    const next = new Map<string, Set<string>>()
    for (const r of await usersJoinedTo(store, [...frontier.keys()])) {
      const what = frontier.get(r.previous_id) as Set<string>
      const fresh = !users.has(r.user_id) || next.has(r.user_id)
      for (const w of what) {
        addTouch(users, r.user_id, w)
        if (fresh) addTouch(next, r.user_id, w)
      }
    }
    frontier = next
  }
  for (const [userId, accountIds] of await accountsOfUsers(store, [...users.keys()])) {
    for (const accountId of accountIds) for (const w of users.get(userId) as Set<string>) addTouch(accounts, accountId, w)
  }
  return { account: accounts, user: users }
}

/**
 * The evaluation the touched ids call for: the subjects they lead to with what touched them, a
 * full run past MAX_INCREMENTAL_SUBJECTS, or none when they lead to no subject.
 */
export async function touchedEvaluation(store: Store, touched: Touched): Promise<EvaluateOptions | undefined> {
  const by = await expandTouched(store, touched)
  const subjects = { account: [...by.account.keys()], user: [...by.user.keys()] }
  const n = subjects.account.length + subjects.user.length
  if (n === 0) return undefined
  return n > MAX_INCREMENTAL_SUBJECTS ? {} : { subjects, touchedBy: by }
}

/** The subjects a rule runs for: all (undefined), the given ones, or those of them touched by what it reads. */
export function relevantSubjects(rule: Rule, opts: EvaluateOptions): string[] | undefined {
  const ids = opts.subjects?.[rule.subject]
  const by = opts.touchedBy?.[rule.subject]
  if (!ids || !by) return ids
  const wanted = ruleEvents(rule)
  return ids.filter((id) => {
    const what = by.get(id)
    return what === undefined || touches(what, wanted)
  })
}

/** Plan traits change only by identify / group: an incremental run syncs the subjects those touched. */
export function traitSubjects(opts: EvaluateOptions): Subjects | undefined {
  const { subjects, touchedBy } = opts
  if (!subjects || !touchedBy) return subjects
  const changed = (type: 'account' | 'user') => subjects[type].filter((id) => touchedBy[type].get(id)?.has(IDENTITY_CHANGE) ?? true)
  return { account: changed('account'), user: changed('user') }
}

import { z } from 'zod'
import { chTime } from '../src/time.js'
import type { Store } from '../src/store/store.js'
import { idChunks } from '../src/store/ids.js'
import { identityLinks } from './attribution.js'

/**
 * What an incremental evaluation reads for a set of subjects, found once per evaluation and
 * subject type and shared by every rule of that type (rules/compile.ts, `scope`).
 *
 * - `keys`: the raw identities whose untagged events can belong to the subjects: the users
 *   (an account's members, from memberships_v1) and every id linked to one of them in one or two
 *   hops in identities_v1 (an anonymous id, an earlier user id). Any link counts here, not only
 *   the earliest one that decides attribution: reading a few more events is harmless, because the
 *   rule query attributes each one exactly and keeps only the requested subjects.
 * - `links`: the identity resolution (previous id → the user it became, following two hops, the
 *   earliest link of an id winning) for every id the rule query can meet: `keys`, and for
 *   accounts the ids on events tagged with the account, which any user may send. Every link row
 *   of those ids is read, so each earliest link is exact.
 *
 * Computing these inside each rule query instead meant resolving the whole identities_v1 table
 * several times per query (ClickHouse inlines a CTE at each reference); bound as parameters, the
 * ids also let the sorting key of events_v1 prune.
 */
export type Scope = {
  keys: string[]
  links: { from: string[]; to: string[] }
  /**
   * Whether the rule queries should read whole days from the daily rollup. A scoped read of the
   * rollup costs as many granules as one of events_v1 (both are sorted by identity first), so it
   * pays only when the rollup holds far fewer rows than the events it sums (many events per
   * identity, day and event name). With sparse activity it is a second scan for nothing: on the
   * rules benchmark's data (0.82 rollup rows per event) reading events_v1 alone took a fifth less CPU.
   */
  rollups: boolean
}

/** The rollup is read by scoped runs when it has at most this many rows per stored event. */
const SCOPED_ROLLUP_MAX_DENSITY = 0.5

const Keys = z.object({ keys: z.array(z.string()) })
const Links = z.object({ from: z.array(z.string()), to: z.array(z.string()) })
const Sizes = z.object({ rollup: z.coerce.number(), events: z.coerce.number() })

export async function loadScope(store: Store, subject: 'account' | 'user', ids: string[], asOf: number): Promise<Scope> {
  if (ids.length === 0) return { keys: [], links: { from: [], to: [] }, rollups: true }
  const account = subject === 'account'
  // Small queries rather than one: ClickHouse would evaluate a shared CTE once per reference.
  const [scope] = await store.query(
    `WITH
  scope_users AS (${account ? 'SELECT DISTINCT user_id FROM memberships_v1 WHERE account_id IN {ids:Array(String)}' : 'SELECT arrayJoin({ids:Array(String)}) AS user_id'}),
  hop1 AS (SELECT DISTINCT previous_id FROM identities_v1 WHERE previous_id != user_id AND user_id IN (SELECT user_id FROM scope_users))
SELECT groupUniqArray(k) AS keys FROM (
  SELECT user_id AS k FROM scope_users
  UNION ALL SELECT previous_id AS k FROM hop1
  UNION ALL SELECT previous_id AS k FROM identities_v1 WHERE previous_id != user_id AND user_id IN (SELECT previous_id FROM hop1))`,
    { ids },
  )
  const keys = Keys.parse(scope).keys
  let linkIds = keys
  if (account) {
    const [tagged] = await store.query(
      `SELECT groupUniqArray(if(user_id != '', user_id, anonymous_id)) AS keys FROM events_v1
  WHERE account_id IN {ids:Array(String)} AND type IN ('track', 'page', 'screen') AND timestamp <= {asOf:DateTime64(3, 'UTC')}`,
      { ids, asOf: chTime(asOf) },
    )
    linkIds = [...new Set([...keys, ...Keys.parse(tagged).keys])]
  }
  // Exact in slices too: each slice reads every link row of its ids.
  const links: Scope['links'] = { from: [], to: [] }
  for (const part of idChunks(linkIds)) {
    const [row] = await store.query(
      `SELECT groupArray(previous_id) AS from, groupArray(user_id) AS to FROM (${identityLinks('{ids:Array(String)}')})
SETTINGS join_use_nulls = 0`,
      { ids: part },
    )
    const r = Links.parse(row)
    links.from.push(...r.from)
    links.to.push(...r.to)
  }
  // Both counts come from part metadata (no scan).
  const [sizes] = await store.query('SELECT (SELECT count() FROM activity_daily_v1) AS rollup, (SELECT count() FROM events_v1) AS events')
  const { rollup, events } = Sizes.parse(sizes)
  return { keys, links, rollups: rollup <= events * SCOPED_ROLLUP_MAX_DENSITY }
}

/** A slice of an incremental run's subjects of one type, with its scope. */
export type ScopePart = { ids: string[]; scope: Scope }

/**
 * Bytes a scope's lists may take as query parameters: a ClickHouse server reached over HTTP takes
 * them in the URL, capped at 1 MiB (`http_max_uri_size`). The embedded engine has no such cap, and
 * splitting costs a scan of the events per slice and rule, so there a scope is never split.
 */
const SERVER_PART_BYTES = 600_000

const listBytes = (xs: readonly string[]) => xs.reduce((n, x) => n + encodeURIComponent(x).length + 3, 0)
const scopeBytes = (ids: string[], s: Scope) => listBytes(ids) + listBytes(s.keys) + listBytes(s.links.from) + listBytes(s.links.to)

/**
 * The scopes of `ids`, in slices small enough to bind (halved while a slice's lists are too
 * large). A single subject whose scope is still too large keeps it; a server may then refuse the
 * query, which is reported as that rule's error.
 */
export async function loadScopes(
  store: Store,
  subject: 'account' | 'user',
  ids: string[],
  asOf: number,
  maxBytes = store.kind === 'server' ? SERVER_PART_BYTES : Number.POSITIVE_INFINITY,
): Promise<ScopePart[]> {
  const parts: ScopePart[] = []
  const queue = ids.length ? [ids] : []
  for (let chunk = queue.shift(); chunk; chunk = queue.shift()) {
    const scope = await loadScope(store, subject, chunk, asOf)
    if (chunk.length > 1 && scopeBytes(chunk, scope) > maxBytes) {
      const half = chunk.length >> 1
      queue.unshift(chunk.slice(0, half), chunk.slice(half))
      continue
    }
    parts.push({ ids: chunk, scope })
  }
  return parts
}

/**
 * Attribution: which subjects an activity event belongs to. This is the one definition, used by
 * the rule compiler (rules/compile/), the subjects API's usage series (src/subjects/) and the
 * per-day state's write path (rules/state/), so a chart and the figure a rule fired on agree.
 *
 * - An event's raw identity is its user id, or its anonymous id when it has none.
 * - Identity links (identities_v1: `identify` with an anonymous id, `alias`) join a previous id to
 *   a user. The earliest link of an id decides (argMin by first_seen), and the resolution follows
 *   two hops: anonymous id → first user id → the id it was aliased to. An event's user is its raw
 *   identity resolved that way; an anonymous id never linked to a user is not a user.
 * - An event carrying an account id (a `group` call, `context.groupId`) belongs to that account
 *   only. An event without one belongs to every account its user is a member of (memberships_v1),
 *   so a member's anonymous history, once joined to the member, counts for the account too.
 *
 * The functions below write that definition as SQL over a row source with `user_id`,
 * `anonymous_id` and (for accounts) `account_id` columns; every value is a bound parameter.
 */
import type { Params } from './compile/sql.js'

/** The raw identity of an event row (or of a row aggregated per raw identity), as SQL. */
export const rawIdentity = (row: string) => `if(${row}.user_id != '', ${row}.user_id, ${row}.anonymous_id)`

/** The earliest link of each previous id (restricted to `restrict`, an SQL set, when given). */
const earliestLinks = (restrict?: string) =>
  `SELECT previous_id, argMin(user_id, first_seen) AS target FROM identities_v1 WHERE previous_id != user_id${restrict ? ` AND previous_id IN ${restrict}` : ''} GROUP BY previous_id`

/**
 * `(previous_id, user_id)`: every linked id and the user it resolves to (two hops), as a SELECT.
 * With `ids` (an SQL set), only those previous ids, each still resolved exactly: the second hop
 * reads every link row of the first hop's targets.
 */
export function identityLinks(ids?: string): string {
  const second = ids ? earliestLinks(`(SELECT user_id FROM identities_v1 WHERE previous_id IN ${ids})`) : earliestLinks()
  return `SELECT first_hop.previous_id AS previous_id, if(second_hop.target != '', second_hop.target, first_hop.target) AS user_id
  FROM (${earliestLinks(ids)}) AS first_hop
  LEFT ANY JOIN (${second}) AS second_hop ON second_hop.previous_id = first_hop.target`
}

/** The same resolution already found (rules/scope.ts), bound as two parallel arrays. */
export function boundLinks(p: Params, links: { from: string[]; to: string[] }): string {
  return `SELECT previous_id, user_id FROM (SELECT ${p.bind(links.from, 'Array(String)')} AS previous_id, ${p.bind(links.to, 'Array(String)')} AS user_id)
  ARRAY JOIN previous_id, user_id`
}

/** `user_id → accounts`: the accounts of each member (of `accounts` only, an SQL set, when given). */
export function memberAccounts(accounts?: string): string {
  return `SELECT user_id, groupUniqArray(account_id) AS accounts FROM memberships_v1${accounts ? ` WHERE account_id IN ${accounts}` : ''} GROUP BY user_id`
}

/**
 * The resolved user of row `row` joined to its link row `link` (LEFT ANY JOIN on the raw
 * identity): `user_key` (the user, or the raw anonymous id when it resolves to none) and `known`
 * (whether it is a user).
 */
export const userKey = (row: string, link: string) => `if(${link}.user_id != '', ${link}.user_id, ${rawIdentity(row)})`
export const isKnown = (row: string, link: string) => `(${row}.user_id != '' OR ${link}.user_id != '')`

/** The accounts an event row belongs to, given its members row `members` (joined on its user_key). */
export const accountsOf = (row: string, members: string) => `if(${row}.account_id != '', [${row}.account_id], ${members}.accounts)`

/**
 * The raw identities that can belong to some subjects, as a filter on an events row: `keys` (an
 * SQL set of user ids and linked ids, rules/scope.ts), and for accounts `accounts` (an SQL set) on
 * tagged events. Bound as constant sets, they let events_v1's sorting key prune.
 */
export function ownedBy(keys: string, accounts?: string): string {
  const byKey = `(user_id IN ${keys} OR (user_id = '' AND anonymous_id IN ${keys}))`
  return accounts ? `(account_id IN ${accounts} OR (account_id = '' AND ${byKey}))` : byKey
}

/**
 * Event rows attributed to their subjects, one row per (event, subject): the columns `cols` of
 * `source` (an SQL table expression over events rows, aliased `event`) with `subject_id` and
 * `user_key`. `links` is a SELECT of (previous_id, user_id) covering the rows' raw identities;
 * `ids` (an SQL set) keeps those subjects. A per-event join: for a few subjects (a profile's
 * usage series); the rule queries aggregate per raw identity first (rules/compile/query.ts).
 */
export function attributedEvents(subject: 'account' | 'user', opts: { source: string; links: string; ids: string; cols: string[] }): string {
  const cols = opts.cols.map((c) => `event.${c} AS ${c}`).join(', ')
  const resolved = `SELECT ${cols}, event.account_id AS account_id, ${userKey('event', 'link')} AS user_key, ${isKnown('event', 'link')} AS known
    FROM ${opts.source}
    LEFT ANY JOIN (${opts.links}) AS link ON link.previous_id = ${rawIdentity('event')}`
  const names = opts.cols.join(', ')
  return subject === 'account'
    ? `SELECT subject_id, user_key, ${names} FROM (
    SELECT resolved.*, ${accountsOf('resolved', 'members')} AS accounts
    FROM (${resolved}) AS resolved
    LEFT ANY JOIN (${memberAccounts(opts.ids)}) AS members ON members.user_id = resolved.user_key
  ) ARRAY JOIN accounts AS subject_id
  WHERE subject_id IN ${opts.ids}`
    : `SELECT user_key AS subject_id, user_key, ${names} FROM (${resolved}) WHERE known AND user_key IN ${opts.ids}`
}

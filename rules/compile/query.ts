import { shardPredicate } from '../../src/store/shard.js'
import { accountsOf, boundLinks, identityLinks, isKnown, memberAccounts, ownedBy, rawIdentity, userKey } from '../attribution.js'
import type { Rule } from '../schema.js'
import type { Scope } from '../scope.js'
import { detailCol, type Leaf, type Leaves, measuredCol, passedCol, type ReasonHead } from './leaves.js'
import { MERGE, neutral, type Part, type ScanPlan } from './parts.js'
import type { Params } from './sql.js'

/**
 * Query assembly. A compiled query is a chain of named CTEs, each one level of aggregation:
 *
 * | CTE | one row per | what |
 * | --- | --- | --- |
 * | `subjects` | subject | the subjects evaluated (all seen by asOf, or the requested ids) |
 * | `identity_links` | linked id | previous id → the user it resolves to (rules/attribution.ts) |
 * | `raw_by_identity`, `rollup_by_identity` | raw identity | the parts over events_v1 and the daily rollup |
 * | `by_identity` | raw identity (per scan) | their union (or the raw scan alone) |
 * | `attributed` | (subject, user, raw identity) | each identity's parts under its user and subjects |
 * | `by_subject_user` | (subject, user) | parts merged per subject and user (`part_<n>`) |
 * | `by_subject` | subject | finals: aggregates of parts over the subject's users (`final_<n>`) |
 * | `traits` | subject | the latest traits as of asOf (`trait_<n>`) |
 * | `champions_<n>` | (account, user) | members with a champion trait |
 *
 * The final SELECT joins `subjects AS subject` to `by_subject` and `traits`, computes each leaf's
 * `measured_<i>`, `passed_<i>` and `detail_<i>_<j>`, then each rule's `rule<k>_matched` and
 * `rule<k>_score` (`rule_matched`, `rule_score` for a single rule), and returns the contract's
 * columns (rules/compile.ts).
 */

export const cte = (name: string, sql: string) => `${name} AS (\n  ${sql.trim()}\n)`

export type QueryOptions = {
  asOf: number
  subjectIds?: string[]
  scope?: Scope
  shard?: { count: number; index: number }
}

/** The shard filter on a subject id column ('' without sharding). */
export function shardFilter(p: Params, opts: QueryOptions, col: string): string {
  return opts.shard ? shardPredicate(col, opts.shard, (v, t) => p.bind(v, t)) : ''
}

/** `subjects`: the requested ids, or every subject seen by asOf. */
export function subjectsCte(p: Params, account: boolean, opts: QueryOptions): string {
  const ids = opts.subjectIds
  return cte(
    'subjects',
    ids
      ? `SELECT DISTINCT arrayJoin(${p.bind(ids, 'Array(String)')}) AS subject_id`
      : account
        ? `SELECT DISTINCT account_id AS subject_id FROM accounts_v1 WHERE account_id != '' AND first_seen <= ${p.time(opts.asOf)}`
        : `SELECT DISTINCT user_id AS subject_id FROM users_v1 WHERE user_id != '' AND first_seen <= ${p.time(opts.asOf)}`,
  )
}

/**
 * The reference's activity CTEs, ending in `by_subject_user`: events aggregated per raw identity
 * (the prefix of events_v1's sorting key) with one part per measurement, then resolved to users
 * and attributed to accounts, so no join ever runs per event.
 */
export function referenceActivity(p: Params, plan: ScanPlan, rule: Rule, opts: QueryOptions): string[] {
  const parts = plan.parts
  if (!parts.length) return []
  const account = rule.subject === 'account'
  const ids = opts.subjectIds
  const idsSql = ids ? p.bind(ids, 'Array(String)') : ''
  const scope = ids ? opts.scope : undefined
  if (ids && !scope) throw new Error('compileRule: subjectIds needs a scope (rules/scope.ts, loadScope)')
  const ctes: string[] = []
  // Incremental: the resolution of the ids this query can meet, found by loadScope.
  ctes.push(cte('identity_links', scope ? boundLinks(p, scope.links) : identityLinks()))
  const keyCols = account ? ['account_id', 'user_id', 'anonymous_id'] : ['user_id', 'anonymous_id']
  const keys = keyCols.join(', ')
  const filters: string[] = []
  if (rule.sources) filters.push(`source IN ${p.bind(rule.sources, 'Array(String)')}`)
  // Incremental: read only what can belong to the requested subjects.
  if (scope) filters.push(ownedBy(p.bind(scope.keys, 'Array(String)'), account ? idsSql : undefined))
  const events = (set: Set<string> | null) => (set ? [`event IN ${p.bind([...set].sort(), 'Array(String)')}`] : [])
  const asOf = p.time(opts.asOf)
  const rawWhere = [
    `type IN ('track', 'page', 'screen')`,
    `timestamp > ${p.time(plan.rawFrom)}`,
    `timestamp <= ${asOf}`,
    `(${[...new Set(plan.rawRanges)].join(' OR ')})`,
    ...events(plan.rawEvents),
    ...filters,
  ]
  const select = (f: (x: Part) => string) => parts.map((x) => `${f(x)} AS ${x.name}`).join(',\n    ')
  const raw = `SELECT ${keys},\n    ${select((x) => x.raw)}\n  FROM events_v1\n  WHERE ${rawWhere.join('\n    AND ')}\n  GROUP BY ${keys}`
  if (parts.some((x) => x.roll)) {
    const rollWhere = [`day >= ${p.date(plan.rollFrom)}`, `day < ${p.date(plan.rollTo)}`, ...events(plan.rollEvents), ...filters]
    const roll = `SELECT ${keys},\n    ${select((x) => x.roll ?? neutral(x))}\n  FROM activity_daily_v1 FINAL\n  WHERE ${rollWhere.join('\n    AND ')}\n  GROUP BY ${keys}`
    // A raw identity may appear once from each side; merging per (subject, user) below sums them.
    ctes.push(cte('raw_by_identity', raw), cte('rollup_by_identity', roll), cte('by_identity', 'SELECT * FROM raw_by_identity UNION ALL SELECT * FROM rollup_by_identity'))
  } else {
    ctes.push(cte('by_identity', raw))
  }
  const names = parts.map((x) => x.name)
  const resolved = `SELECT ${account ? 'identity.account_id AS account_id, ' : ''}${userKey('identity', 'link')} AS user_key,
      ${isKnown('identity', 'link')} AS known, ${names.map((x) => `identity.${x} AS ${x}`).join(', ')}
    FROM by_identity AS identity LEFT ANY JOIN identity_links AS link ON link.previous_id = ${rawIdentity('identity')}`
  const subjectFilter = [ids ? `subject_id IN ${idsSql}` : '', shardFilter(p, opts, 'subject_id')].filter(Boolean)
  ctes.push(
    cte(
      'attributed',
      account
        ? `SELECT subject_id, user_key, ${names.join(', ')} FROM (
    SELECT resolved.user_key AS user_key, ${names.map((x) => `resolved.${x} AS ${x}`).join(', ')}, ${accountsOf('resolved', 'members')} AS accounts
    FROM (${resolved}) AS resolved
    LEFT ANY JOIN (${memberAccounts(ids ? idsSql : undefined)}) AS members ON members.user_id = resolved.user_key
  ) ARRAY JOIN accounts AS subject_id${subjectFilter.length ? `\n  WHERE ${subjectFilter.join(' AND ')}` : ''}`
        : `SELECT user_key AS subject_id, user_key, ${names.join(', ')} FROM (${resolved})\n  WHERE known${subjectFilter.map((f) => ` AND ${f}`).join('')}`,
    ),
  )
  ctes.push(cte('by_subject_user', `SELECT subject_id, user_key, ${parts.map((x) => `${MERGE[x.kind](x.name)} AS ${x.name}`).join(', ')}\n  FROM attributed GROUP BY subject_id, user_key`))
  return ctes
}

/** `by_subject`: the finals, over each subject's `by_subject_user` rows (and the champion joins). */
export function bySubjectCte(leaves: Leaves): string[] {
  if (!leaves.finals.length) return []
  return [
    cte(
      'by_subject',
      `SELECT by_subject_user.subject_id AS subject_id,\n    ${leaves.finals.map(([name, sql]) => `${sql} AS ${name}`).join(',\n    ')}
  FROM by_subject_user${leaves.aggJoins.map((j) => `\n  ${j}`).join('')}
  GROUP BY by_subject_user.subject_id`,
    ),
  ]
}

/** `traits`: the subject's latest value of each trait key a leaf reads, as of asOf. */
export function traitsCte(p: Params, leaves: Leaves, account: boolean, opts: QueryOptions): string[] {
  if (!leaves.traits.size) return []
  const [table, idCol] = account ? ['account_traits_v1', 'account_id'] : ['user_traits_v1', 'user_id']
  const ids = opts.subjectIds
  return [
    cte(
      'traits',
      `SELECT subject_id, ${[...leaves.traits].map(([k, col]) => `anyIf(value, key = ${p.str(k)}) AS ${col}`).join(', ')}
  FROM (
    SELECT ${idCol} AS subject_id, key, argMax(value, (timestamp, message_id)) AS value FROM ${table}
    WHERE key IN ${p.bind([...leaves.traits.keys()], 'Array(String)')} AND timestamp <= ${p.time(opts.asOf)}${ids ? ` AND ${idCol} IN ${p.bind(ids, 'Array(String)')}` : ''}
    GROUP BY subject_id, key)
  GROUP BY subject_id`,
    ),
  ]
}

/** A reason's figures as JSON array elements: measured, passed, then the detail values. */
function figuresSql(leaf: Leaf, i: number): string[] {
  const num = (sql: string) => `ifNull(toJSONString(round(${sql}, 4)), 'null')`
  const parts = [leaf.measuredIsJson ? measuredCol(i) : num(measuredCol(i)), `if(${passedCol(i)}, 'true', 'false')`]
  leaf.detail?.forEach(([, , type], j) => {
    const col = detailCol(i, j)
    parts.push(type === 'json' ? col : type === 'str' ? `toJSONString(toString(${col}))` : num(col))
  })
  return parts
}

/** A reason without its figures; `detail` names the detail values that follow them. */
export type ReasonTemplate = ReasonHead & { detail: string[] }

const templateOf = (leaf: Leaf): ReasonTemplate => ({ ...leaf.reason, detail: (leaf.detail ?? []).map(([key]) => key) })

export type CompiledLeaves = { conjuncts: string[]; score: string; from: number; to: number }

/**
 * The final SELECT over `subjects`, after `ctes`: each leaf's columns, each rule's matched and
 * score, and its figures; a full run keeps the subjects matching some rule.
 */
export function finalSelect(
  p: Params,
  leaves: Leaves,
  rules: CompiledLeaves[],
  ctes: string[],
  opts: QueryOptions,
): { sql: string; reasons: ReasonTemplate[][] } {
  const ids = opts.subjectIds
  const joins = [
    ...(leaves.finals.length ? ['LEFT JOIN by_subject ON by_subject.subject_id = subject.subject_id'] : []),
    ...(leaves.traits.size ? ['LEFT JOIN traits ON traits.subject_id = subject.subject_id'] : []),
    ...leaves.finalJoins,
  ]
  const cols = leaves.leaves.flatMap((l, i) => [
    `${l.measured} AS ${measuredCol(i)}`,
    `${l.pass} AS ${passedCol(i)}`,
    ...(l.hidden ? [] : (l.detail ?? []).map(([, sql], j) => `${sql} AS ${detailCol(i, j)}`)),
  ])
  const shard = shardFilter(p, opts, 'subject.subject_id')
  // One rule: matched / score / figures; several: matched0 / score0 / figures0, matched1, …
  const suffix = (k: number) => (rules.length === 1 ? '' : String(k))
  const inner = (k: number, what: 'matched' | 'score') => `rule${suffix(k)}_${what}`
  const reported = rules.map(({ from, to }) => leaves.leaves.map((l, i) => [l, i] as const).filter(([l, i]) => !l.hidden && i >= from && i < to))
  const outer = rules.map((_, k) => {
    const s = suffix(k)
    const json = `concat('[', ${(reported[k] ?? []).flatMap(([l, i]) => figuresSql(l, i)).join(", ',', ")}, ']')`
    // A full run of several rules returns the subjects matching any of them; the others' figures
    // for a subject are not read (runRules keeps each rule's matches only), so not built.
    return `toUInt8(${inner(k, 'matched')}) AS matched${s}, ${inner(k, 'score')} AS score${s},\n  ${ids || rules.length === 1 ? json : `if(${inner(k, 'matched')}, ${json}, '[]')`} AS figures${s}`
  })
  const decided = rules.map(({ conjuncts, score }, k) => `${conjuncts.join(' AND ')} AS ${inner(k, 'matched')},\n    ${score} AS ${inner(k, 'score')}`)
  // A full run keeps the matched subjects before their figures are built (most subjects match nothing).
  const keep = [shard, ids ? '' : `(${rules.map((_, k) => inner(k, 'matched')).join(' OR ')})`].filter(Boolean)
  const sql = `WITH
${ctes.join(',\n')}
SELECT subject_id, ${outer.join(',\n  ')}
FROM (
  SELECT subject.subject_id AS subject_id,
    ${cols.join(',\n    ')},
    ${decided.join(',\n    ')}
  FROM subjects AS subject${joins.map((j) => `\n  ${j}`).join('')}${keep.length ? `\n  WHERE ${keep.join(' AND ')}` : ''}
)
ORDER BY subject_id
SETTINGS join_use_nulls = 0`
  return { sql, reasons: reported.map((list) => list.map(([l]) => templateOf(l))) }
}

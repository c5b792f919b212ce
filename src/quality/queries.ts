import { chTime } from '../time.js'
import { accountsOf, identityLinks, isKnown, memberAccounts, rawIdentity, userKey } from '../../rules/attribution.js'
import { Params, documentPredicate, valuePredicate } from '../../rules/compile/sql.js'
import type { PropertyFilter, TraitFilter } from '../../rules/schema.js'
import type { SubjectType } from '../signals.js'
import type { Store } from '../store/store.js'
import { CHANGE_OPS, type Criterion, criteriaOf, type Outcome, type TraitReached } from './outcomes.js'

/**
 * The SQL of the quality report (src/quality/quality.ts), run inside ClickHouse with every value
 * and name bound as a `{pN:Type}` parameter. One query answers, per group (fired / not fired):
 * how many subjects, how many still pending, how many reached the outcome within the horizon, and
 * the lead-time quantiles.
 */

const SUBJECT = {
  account: { seen: 'accounts_v1', column: 'account_id', traits: 'account_traits_v1' },
  user: { seen: 'users_v1', column: 'user_id', traits: 'user_traits_v1' },
} as const

const ACTIVITY = "type IN ('track', 'page', 'screen')"

/** Where the fires come from: the rule's stored signals, or a list (a backtest's would-be fires). */
export type FireSource = { rule_id: string } | { subjects: string[]; at: number[] }

export type QualitySpec = {
  subject: SubjectType
  /** The rule's trait filters: who is eligible. */
  where: readonly TraitFilter[]
  outcome: Outcome
  fires: FireSource
  /** Fires from ≤ fired_at ≤ to count. */
  from: number
  to: number
  /** Outcomes are known up to here. */
  now: number
  horizonMs: number
}

export type GroupRow = { fired: number; subjects: number; pending: number; reached: number; pending_reached: number; lead: (number | null)[] }

/** `(subject_id, at)` of every way `outcome` is reached, as subjects of type `type`, between `lo` and `hi`. */
export function outcomeSql(p: Params, outcome: Outcome, type: SubjectType, lo: string, hi: string): string {
  const arms = criteriaOf(outcome).map((c) => criterionSql(p, c, outcome.subject, lo, hi))
  const rows = arms.join('\n  UNION ALL\n  ')
  if (outcome.subject === type) return rows
  // A user's rule reaches an account outcome through the user's accounts, and the reverse.
  const [from, to] = outcome.subject === 'account' ? ['account_id', 'user_id'] : ['user_id', 'account_id']
  return `SELECT m.${to} AS subject_id, o.at AS at FROM (${rows}) AS o
    INNER JOIN (SELECT DISTINCT account_id, user_id FROM memberships_v1) AS m ON m.${from} = o.subject_id`
}

function criterionSql(p: Params, c: Criterion, type: SubjectType, lo: string, hi: string): string {
  if ('stage' in c) {
    const stages = Array.isArray(c.stage) ? c.stage : [c.stage]
    return `SELECT subject_id, at FROM stage_transitions_v1
    WHERE subject_type = ${p.str(type)} AND to_stage IN ${p.bind(stages, 'Array(String)')} AND at >= ${lo} AND at <= ${hi}`
  }
  if ('event' in c) return eventSql(p, c.event, c.where ?? [], type, lo, hi)
  return traitSql(p, c, type, lo, hi)
}

function eventSql(p: Params, event: string | string[], where: readonly PropertyFilter[], type: SubjectType, lo: string, hi: string): string {
  const names = Array.isArray(event) ? event : [event]
  const filters = [
    ACTIVITY,
    `event IN ${p.bind(names, 'Array(String)')}`,
    `timestamp >= ${lo}`,
    `timestamp <= ${hi}`,
    ...where.map((f) => documentPredicate(p, 'properties', f.property, f)),
  ].join(' AND ')
  // Events belong to subjects as the rules see them (rules/attribution.ts).
  const resolved = `SELECT ${userKey('e', 'link')} AS user_key, ${isKnown('e', 'link')} AS known, e.account_id AS account_id, e.at AS at
    FROM (SELECT user_id, anonymous_id, account_id, timestamp AS at FROM events_v1 WHERE ${filters}) AS e
    LEFT ANY JOIN (${identityLinks()}) AS link ON link.previous_id = ${rawIdentity('e')}`
  if (type === 'user') return `SELECT user_key AS subject_id, at FROM (${resolved}) WHERE known`
  return `SELECT subject_id, at FROM (
      SELECT ${accountsOf('resolved', 'members')} AS accounts, resolved.at AS at
      FROM (${resolved}) AS resolved
      LEFT ANY JOIN (${memberAccounts()}) AS members ON members.user_id = resolved.user_key
    ) ARRAY JOIN accounts AS subject_id`
}

/** A trait row is a change into the outcome when its value passes and the value before did not. */
function traitSql(p: Params, c: TraitReached, type: SubjectType, lo: string, hi: string): string {
  const t = SUBJECT[type]
  let change: string
  if ((CHANGE_OPS as readonly string[]).includes(c.op)) {
    const up = c.op === 'rises'
    if (c.order) {
      const order = p.bind(c.order, 'Array(String)')
      const rank = (x: string) => `indexOf(${order}, JSONExtractString(${x}))`
      change = up ? `${rank('prev')} > 0 AND ${rank('value')} > ${rank('prev')}` : `${rank('value')} > 0 AND ${rank('value')} < ${rank('prev')}`
    } else {
      const num = (x: string) => `JSONExtract(${x}, 'Nullable(Float64)')`
      change = `ifNull(${num('value')} ${up ? '>' : '<'} ${num('prev')}, 0)`
    }
  } else {
    const f = c as { op: TraitFilter['op']; value?: unknown }
    change = `${valuePredicate(p, 'value', f)} AND NOT ${valuePredicate(p, 'prev', f)}`
  }
  return `SELECT subject_id, at FROM (
      SELECT ${t.column} AS subject_id, timestamp AS at, value,
             lagInFrame(value, 1, '') OVER (PARTITION BY ${t.column} ORDER BY timestamp, message_id
                                            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS prev
      FROM ${t.traits} WHERE key = ${p.str(c.trait)}
    ) WHERE at >= ${lo} AND at <= ${hi} AND ${change}`
}

/**
 * Eligible subjects and the moment each became eligible in the period: the first moment from
 * `from` (or its first sighting, if later) to `to` at which its traits pass every `where` filter.
 * A subject's traits change only at its trait rows, so those are the moments to test; each test
 * reads the latest value of every key at that moment, as the rules do.
 */
function eligibleSql(p: Params, type: SubjectType, where: readonly TraitFilter[], from: string, to: string, seen: string): string {
  const t = SUBJECT[type]
  if (where.length === 0) return `SELECT subject_id, greatest(first_seen, ${from}) AS ref FROM (${seen})`
  const keys = [...new Set(where.map((f) => f.trait))]
  const col = (k: string) => `k${keys.indexOf(k)}`
  const pass = where.map((f) => valuePredicate(p, `ifNull(${col(f.trait)}, '')`, f)).join(' AND ')
  return `SELECT subject_id, min(moment) AS ref FROM (
      SELECT subject_id, moment, probe, ${keys.map((k) => `last_value(v_${col(k)}) OVER w AS ${col(k)}`).join(', ')}
      FROM (
        SELECT ${t.column} AS subject_id, timestamp AS moment, 0 AS probe, message_id AS mid,
               ${keys.map((k) => `if(key = ${p.str(k)}, value, NULL) AS v_${col(k)}`).join(', ')}
        FROM ${t.traits}
        WHERE key IN ${p.bind(keys, 'Array(String)')} AND timestamp <= ${to} AND ${t.column} IN (SELECT subject_id FROM (${seen}))
        UNION ALL
        SELECT subject_id, greatest(first_seen, ${from}) AS moment, 1 AS probe, '' AS mid,
               ${keys.map((k) => `CAST(NULL AS Nullable(String)) AS v_${col(k)}`).join(', ')}
        FROM (${seen})
      )
      -- A trait row at the very moment of a probe is already in force then (traits at or before).
      WINDOW w AS (PARTITION BY subject_id ORDER BY moment, probe, mid ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
    )
    WHERE (probe = 1 OR moment > ${from}) AND ${pass}
    GROUP BY subject_id`
}

function firesSql(p: Params, type: SubjectType, fires: FireSource, from: string, to: string): string {
  if ('rule_id' in fires) {
    return `SELECT subject_id, min(fired_at) AS ref FROM signals_v1
      WHERE rule_id = ${p.str(fires.rule_id)} AND subject_type = ${p.str(type)} AND fired_at >= ${from} AND fired_at <= ${to}
      GROUP BY subject_id`
  }
  const subjects = p.bind(fires.subjects, 'Array(String)')
  const at = p.bind(fires.at.map(chTime), "Array(DateTime64(3, 'UTC'))")
  return `SELECT f.1 AS subject_id, min(f.2) AS ref FROM (SELECT arrayJoin(arrayZip(${subjects}, ${at})) AS f)
      WHERE f.2 >= ${from} AND f.2 <= ${to} GROUP BY subject_id`
}

/** The quality query and its parameters. */
export function qualityQuery(s: QualitySpec): { sql: string; params: Record<string, unknown> } {
  const p = new Params()
  const t = SUBJECT[s.subject]
  const from = p.time(s.from)
  const to = p.time(s.to)
  const now = p.time(s.now)
  // Outcomes after the last horizon that can matter, or not yet known, never count.
  const until = p.time(Math.min(s.now, s.to + s.horizonMs))
  const h = p.int(s.horizonMs)
  const seen = `SELECT ${t.column} AS subject_id, min(first_seen) AS first_seen FROM ${t.seen} GROUP BY ${t.column} HAVING first_seen <= ${to}`
  const sql = `WITH
  fires AS (${firesSql(p, s.subject, s.fires, from, to)}),
  cohort AS (
    SELECT subject_id, ref, 1 AS fired FROM fires
    UNION ALL
    SELECT subject_id, ref, 0 AS fired FROM (${eligibleSql(p, s.subject, s.where, from, to, seen)})
    WHERE subject_id NOT IN (SELECT subject_id FROM fires)
  )
SELECT is_fired AS fired,
       count() AS subjects,
       countIf(is_pending) AS pending,
       countIf(NOT is_pending AND is_hit) AS reached,
       countIf(is_pending AND is_hit) AS pending_reached,
       quantilesExactInclusiveIf(0.5, 0.9)(lead_s, NOT is_pending AND is_hit) AS lead
FROM (
  SELECT c.subject_id, any(c.fired) AS is_fired,
         -- The horizon has not elapsed: neither a success nor a failure yet.
         dateDiff('millisecond', any(c.ref), ${now}) < ${h} AS is_pending,
         -- An outcome counts strictly after the fire (or the moment of eligibility): one at that very
         -- moment was not predicted. A subject without outcomes meets the join's default row (an
         -- empty id), which never counts.
         countIf(o.subject_id != '' AND o.at > c.ref AND dateDiff('millisecond', c.ref, o.at) <= ${h}) > 0 AS is_hit,
         toFloat64(dateDiff('millisecond', any(c.ref), minIf(o.at, o.subject_id != '' AND o.at > c.ref AND dateDiff('millisecond', c.ref, o.at) <= ${h}))) / 1000 AS lead_s
  FROM cohort AS c
  LEFT JOIN (${outcomeSql(p, s.outcome, s.subject, from, until)}) AS o ON o.subject_id = c.subject_id
  GROUP BY c.subject_id
)
GROUP BY is_fired`
  return { sql, params: p.values }
}

export async function qualityGroups(store: Store, s: QualitySpec): Promise<{ fired?: GroupRow; not_fired?: GroupRow }> {
  const { sql, params } = qualityQuery(s)
  const rows = await store.query<GroupRow>(sql, params)
  const out: { fired?: GroupRow; not_fired?: GroupRow } = {}
  for (const r of rows) out[Number(r.fired) === 1 ? 'fired' : 'not_fired'] = r
  return out
}

/** The latest verdict on each signal of the rule fired in the period: how many judged, how many useful. */
export async function feedbackCounts(store: Store, ruleId: string, type: SubjectType, from: number, to: number): Promise<{ judged: number; useful: number }> {
  const p = new Params()
  const [row] = await store.query<{ judged: number; useful: number }>(
    `SELECT count() AS judged, countIf(verdict = 'useful') AS useful FROM (
       SELECT signal_id, argMax(verdict, (created_at, id)) AS verdict FROM signal_feedback_v1
       WHERE signal_id IN (
         SELECT id FROM signals_v1
         WHERE rule_id = ${p.str(ruleId)} AND subject_type = ${p.str(type)} AND fired_at >= ${p.time(from)} AND fired_at <= ${p.time(to)}
       )
       GROUP BY signal_id
     )`,
    p.values,
  )
  return { judged: Number(row?.judged ?? 0), useful: Number(row?.useful ?? 0) }
}

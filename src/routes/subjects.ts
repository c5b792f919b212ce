import { Hono } from 'hono'
import { z } from 'zod'
import { chTime, isoFromCh, utcDate } from '../time.js'
import type { Lifecycle, Transition } from '../lifecycle/lifecycle.js'
import { ApiError, zodDetails } from '../errors.js'
import type { AppDeps, AppEnv } from '../env.js'
import { requireAdmin } from '../middleware.js'
import { type Signal, signalFromRow, type SignalRow, SubjectType } from '../signals.js'
import type { Store } from '../store/store.js'

const DAY = 86_400_000
export const USAGE_DAYS = 30

export type UsageDay = { day: string; events: number; active_users: number }

export type SubjectProfile = {
  type: SubjectType
  id: string
  first_seen: string | null
  last_seen: string | null
  stage: { name: string; since: string | null }
  stages: Transition[]
  traits: Record<string, unknown>
  /** The last 30 days (UTC), oldest first, days without activity included. */
  usage: UsageDay[]
  signals: Signal[]
  /** An account's users, or a user's accounts. */
  members: { id: string; first_seen: string; last_seen: string }[]
}

function parseJson(s: string): unknown {
  try {
    return JSON.parse(s)
  } catch {
    return s
  }
}

const T = {
  account: { seen: 'accounts_v1', column: 'account_id', traits: 'account_traits_v1', other: 'user_id' },
  user: { seen: 'users_v1', column: 'user_id', traits: 'user_traits_v1', other: 'account_id' },
} as const

/** Which events are a subject's: the same attribution as the rules (rules/compile.ts). */
const EVENTS_OF = {
  account: `(account_id = {id:String}
    OR (account_id = '' AND user_id != '' AND user_id IN (SELECT user_id FROM memberships_v1 WHERE account_id = {id:String})))`,
  user: `(user_id = {id:String}
    OR (user_id != '' AND user_id IN (SELECT previous_id FROM identities_v1 WHERE user_id = {id:String}))
    OR (user_id = '' AND anonymous_id != '' AND anonymous_id IN (SELECT previous_id FROM identities_v1 WHERE user_id = {id:String})))`,
} as const

export async function usagePerDay(store: Store, type: SubjectType, id: string, now: number): Promise<UsageDay[]> {
  const today = Math.floor(now / DAY) * DAY
  const start = today - (USAGE_DAYS - 1) * DAY
  const rows = await store.query<{ day: string; events: number; active_users: number }>(
    `SELECT toString(toDate(timestamp)) AS day, count() AS events, uniqExactIf(user_id, user_id != '') AS active_users
     FROM events_v1
     WHERE type IN ('track', 'page', 'screen') AND timestamp >= {from:DateTime64(3, 'UTC')} AND timestamp <= {to:DateTime64(3, 'UTC')}
       AND ${EVENTS_OF[type]}
     GROUP BY day`,
    { id, from: chTime(start), to: chTime(now) },
  )
  const byDay = new Map(rows.map((r) => [r.day, r]))
  return Array.from({ length: USAGE_DAYS }, (_, i) => {
    const day = utcDate(start + i * DAY)
    const r = byDay.get(day)
    return { day, events: Number(r?.events ?? 0), active_users: Number(r?.active_users ?? 0) }
  })
}

export async function subjectProfile(
  store: Store,
  lifecycle: Lifecycle,
  type: SubjectType,
  id: string,
  now: number,
): Promise<SubjectProfile | undefined> {
  const t = T[type]
  const [seen, traitRows, signalRows, members, stages, current] = await Promise.all([
    store.query<{ first_seen: string; last_seen: string }>(
      `SELECT min(first_seen) AS first_seen, max(last_seen) AS last_seen FROM ${t.seen} WHERE ${t.column} = {id:String} HAVING count() > 0`,
      { id },
    ),
    store.query<{ key: string; value: string }>(
      `SELECT key, argMax(value, (timestamp, message_id)) AS value FROM ${t.traits}
       WHERE ${t.column} = {id:String} AND timestamp <= {now:DateTime64(3, 'UTC')} GROUP BY key ORDER BY key`,
      { id, now: chTime(now) },
    ),
    store.query<SignalRow>(
      `SELECT id, rule_id, rule_version, kind, subject_type, subject_id, status, fired_at, resolved_at, score, reasons
       FROM signals_v1 FINAL WHERE subject_type = {type:String} AND subject_id = {id:String} AND status = 'open' ORDER BY id`,
      { type, id },
    ),
    store.query<{ id: string; first_seen: string; last_seen: string }>(
      `SELECT ${t.other} AS id, min(first_seen) AS first_seen, max(last_seen) AS last_seen FROM memberships_v1
       WHERE ${t.column} = {id:String} GROUP BY id ORDER BY last_seen DESC LIMIT 1000`,
      { id },
    ),
    lifecycle.history(type, id),
    lifecycle.current(type, [id]),
  ])
  if (seen.length === 0 && traitRows.length === 0 && stages.length === 0 && signalRows.length === 0) return undefined
  const stage = current.get(id)
  return {
    type,
    id,
    first_seen: seen[0] ? isoFromCh(seen[0].first_seen) : null,
    last_seen: seen[0] ? isoFromCh(seen[0].last_seen) : null,
    stage: { name: stage?.stage ?? lifecycle.first, since: stage?.since ?? null },
    stages,
    traits: Object.fromEntries(traitRows.map((r) => [r.key, parseJson(r.value)])),
    usage: await usagePerDay(store, type, id, now),
    signals: signalRows.map(signalFromRow),
    members: members.map((m) => ({ id: m.id, first_seen: isoFromCh(m.first_seen), last_seen: isoFromCh(m.last_seen) })),
  }
}

export const StageRequest = z.strictObject({
  stage: z.string().min(1),
  /** Why (shown in the subject's history), e.g. "SQL: accepted by AE in Salesforce". */
  reason: z.string().max(1000).default(''),
})

/** Accounts and users as sales and CS see them; stage moves from a CRM. */
export function subjectsRoutes(deps: AppDeps, lifecycle: Lifecycle) {
  const app = new Hono<AppEnv>()
  const admin = requireAdmin(deps.adminToken)
  const now = deps.now ?? Date.now

  for (const type of ['account', 'user'] as const) {
    app.get(`/${type}s/:id`, admin, async (c) => {
      const id = c.req.param('id')
      const profile = await subjectProfile(deps.store, lifecycle, type, id, now())
      if (!profile) throw new ApiError({ code: 'NOT_FOUND', message: `no ${type} ${id}` })
      return c.json(profile)
    })
  }

  app.post('/subjects/:type/:id/stage', admin, async (c) => {
    const type = SubjectType.safeParse(c.req.param('type'))
    if (!type.success) {
      throw new ApiError({ code: 'BAD_REQUEST', message: 'the subject type is account or user', details: [{ path: 'type', message: 'must be account or user' }] })
    }
    let body: unknown
    try {
      body = await c.req.json()
    } catch {
      throw new ApiError({ code: 'BAD_REQUEST', message: 'the body is not valid JSON; expected {"stage": "...", "reason": "..."}' })
    }
    const parsed = StageRequest.safeParse(body)
    if (!parsed.success) {
      const details = zodDetails(parsed.error)
      throw new ApiError({ code: 'BAD_REQUEST', message: `invalid request: ${details[0]?.path}: ${details[0]?.message}`, details })
    }
    const transition = await lifecycle.setStage(type.data, c.req.param('id'), parsed.data.stage, parsed.data.reason, now())
    return c.json(transition, 201)
  })

  return app
}

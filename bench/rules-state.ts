import { chTime, utcDate } from '../src/time.js'
import { startOfDay } from '../rules/compile/sql.js'
import type { Store } from '../src/store/store.js'

/**
 * A design study, not the product: the cheapest per-day state the default pack could be read from,
 * built from the benchmark's events, and the time of reading the pack's five rules from it, for all
 * subjects and for the subjects an incremental run touches.
 *
 * The product's rule queries (rules/compile.ts) read raw events and the daily rollup and attribute
 * them at query time. This study assumes everything a redesign would do at ingest is already done,
 * for free: every event attributed to its user (alias / identify) and account (group / groupId),
 * ids hashed to UInt64, one row per (account, user, day) with the counters the account rules need
 * and one per (user, day) with the MQL items' decayed points. It leaves out what a real design would
 * add to every run: exact window edges (here a window is whole days), the reasons JSON, re-attribution,
 * signal bookkeeping. So its times are lower bounds for such a design on this engine.
 *
 * The rules are restated here for this state (as the naive baseline restates them for
 * json-rules-engine); the matched counts are printed beside the product's to show it computes the
 * same thing, up to the whole-day windows.
 */

const DAY = 86_400_000
const HALF_LIFE_S = 14 * 86_400

export type StateFigures = {
  build: number
  accountRows: number
  userRows: number
  full: { account: number; user: number }
  scoped: { account: number; user: number }
  one: { account: number; user: number; select1: number }
  matched: Record<string, number>
}


/** Events attributed to a user key (linked anonymous ids resolved) and to every account of it. */
const ATTRIBUTED = `
  SELECT e.timestamp AS timestamp, e.event AS event, e.properties AS properties,
    if(e.user_id != '', e.user_id, if(l.user_id != '', l.user_id, e.anonymous_id)) AS uid,
    if(e.account_id != '', [e.account_id], m.accounts) AS accounts
  FROM events_v1 AS e
  LEFT ANY JOIN (SELECT previous_id, argMin(user_id, first_seen) AS user_id FROM identities_v1 GROUP BY previous_id) AS l
    ON l.previous_id = if(e.user_id != '', e.user_id, e.anonymous_id)
  LEFT ANY JOIN (SELECT user_id, groupUniqArray(account_id) AS accounts FROM memberships_v1 GROUP BY user_id) AS m
    ON m.user_id = if(e.user_id != '', e.user_id, if(l.user_id != '', l.user_id, e.anonymous_id))
  WHERE e.type IN ('track', 'page', 'screen')`

/** Build the two state tables from events_v1 (in the benchmark's scratch store only). */
async function build(store: Store, now: number) {
  await store.command('DROP TABLE IF EXISTS bench_state_account_day')
  await store.command('DROP TABLE IF EXISTS bench_state_user_day')
  await store.command(`CREATE TABLE bench_state_account_day
    (account_key UInt64, user_key UInt64, day Date, events UInt32, messages UInt32, last_seen DateTime64(3, 'UTC'))
    ENGINE = MergeTree ORDER BY (account_key, user_key, day)`)
  await store.command(`CREATE TABLE bench_state_user_day
    (user_key UInt64, day Date, pricing Float64, demo Float64, webinar Float64, content Float64, page_views UInt32)
    ENGINE = MergeTree ORDER BY (user_key, day)`)
  await store.command(
    `INSERT INTO bench_state_account_day
    SELECT cityHash64(account), cityHash64(uid), toDate(timestamp), count(), countIf(event = 'Message Sent'), max(timestamp)
    FROM (${ATTRIBUTED}) ARRAY JOIN accounts AS account
    GROUP BY account, uid, toDate(timestamp)`,
  )
  // Decayed points: 2^((t - epoch) / half-life) per event; a run multiplies by 2^(-(now - epoch) / half-life).
  const decayed = 'exp2((toUnixTimestamp(timestamp) - {epoch:Int64}) / {half_life:Float64})'
  await store.command(
    `INSERT INTO bench_state_user_day
    SELECT cityHash64(uid), toDate(timestamp),
      sumIf(${decayed}, event = 'Page Viewed' AND JSONExtractString(properties, 'path') = '/pricing'),
      sumIf(${decayed}, event = 'Demo Requested'),
      sumIf(${decayed}, event = 'Webinar Registered'),
      sumIf(${decayed}, event = 'Content Downloaded'),
      countIf(event = 'Page Viewed')
    FROM (${ATTRIBUTED}) WHERE event IN ('Page Viewed', 'Demo Requested', 'Webinar Registered', 'Content Downloaded')
    GROUP BY uid, toDate(timestamp)`,
    { epoch: Math.floor((now - 90 * DAY) / 1000), half_life: HALF_LIFE_S },
  )
  await store.command('OPTIMIZE TABLE bench_state_account_day FINAL')
  await store.command('OPTIMIZE TABLE bench_state_user_day FINAL')
}

/** The four account rules of the pack, on the account state; `scope` limits it to some accounts. */
function accountSql(scope: boolean) {
  const only = scope ? 'AND account_key IN (SELECT cityHash64(arrayJoin({ids:Array(String)})))' : ''
  return `
  SELECT a.account_key AS account_key,
    JSONExtractString(t.plan) = 'free' AND a.messages30 >= 500 AND a.users7 >= 3 AS pql,
    JSONExtractString(t.plan) NOT IN ('free', '') AND a.dau_base >= 2 AND (a.dau_base - a.dau7) / a.dau_base * 100 >= 50 AS churn,
    JSONExtractString(t.plan) NOT IN ('free', '') AND dateDiff('second', a.champion_last, {now:DateTime64(3, 'UTC')}) / 86400 >= 14
      AND dateDiff('second', a.last_seen, {now:DateTime64(3, 'UTC')}) / 86400 <= 7 AS champion,
    JSONExtractString(t.plan) NOT IN ('free', '') AND toFloat64OrZero(t.seats) > 0 AND a.users30 / toFloat64OrZero(t.seats) >= 0.9 AS seat
  FROM (
    SELECT account_key, sum(m30) AS messages30, countIf(d7 > 0) AS users7, countIf(d30 > 0) AS users30,
      sum(d7) / 7 AS dau7, sum(dbase) / 28 AS dau_base, argMax(last, n90) AS champion_last, max(last) AS last_seen
    FROM (
      SELECT account_key, user_key, sumIf(messages, day > {d30:Date}) AS m30, countIf(day > {d7:Date}) AS d7,
        countIf(day > {d30:Date}) AS d30, countIf(day > {d35:Date} AND day <= {d7:Date}) AS dbase, sum(events) AS n90, max(last_seen) AS last
      FROM bench_state_account_day WHERE day > {d90:Date} AND day <= {today:Date} ${only}
      GROUP BY account_key, user_key)
    GROUP BY account_key) AS a
  LEFT ANY JOIN (
    SELECT cityHash64(account_id) AS account_key, anyIf(value, key = 'plan') AS plan, anyIf(value, key = 'seats') AS seats
    FROM (SELECT account_id, key, argMax(value, timestamp) AS value FROM account_traits_v1
          WHERE key IN ('plan', 'seats') ${scope ? 'AND account_id IN {ids:Array(String)}' : ''} GROUP BY account_id, key)
    GROUP BY account_id) AS t ON t.account_key = a.account_key
  WHERE pql OR churn OR champion OR seat`
}

/** The pack's MQL score on the user state; `scope` limits it to some users. */
function userSql(scope: boolean) {
  // Like the rule queries, it returns the matched subjects only.
  const only = scope ? 'AND user_key IN (SELECT cityHash64(arrayJoin({ids:Array(String)})))' : ''
  // The title adds at most 15 points: only users within 15 of the threshold need the trait join.
  return `
  SELECT s.user_key AS user_key,
    s.points + if(multiSearchAnyCaseInsensitiveUTF8(t.title, ['VP', 'Head', 'Director', 'Chief', 'CTO', 'CEO', 'Founder']), 15, 0) AS score,
    score >= 50 AS mql
  FROM (
    SELECT user_key, exp2(-{age:Float64}) AS k,
      least(30, 10 * k * sum(pricing)) + 30 * k * sum(demo) + least(30, 15 * k * sum(webinar)) + least(20, 10 * k * sum(content))
        + if(countIf(page_views > 0 AND day > {d30:Date}) >= 3, 10, 0) AS points
    FROM bench_state_user_day WHERE day > {d90:Date} AND day <= {today:Date} ${only}
    GROUP BY user_key
    HAVING points >= 35) AS s
  LEFT ANY JOIN (
    SELECT cityHash64(user_id) AS user_key, argMax(value, timestamp) AS title FROM user_traits_v1
    WHERE key = 'title' ${scope ? 'AND user_id IN {ids:Array(String)}' : ''} GROUP BY user_id) AS t ON t.user_key = s.user_key
  WHERE mql`
}

/**
 * Build the state, then time the pack on it: all subjects, the incremental run's subjects, one
 * subject of each kind, and `SELECT 1` (the engine's fixed cost per query). `bestOf` times a
 * function as the benchmark does (median of a few runs).
 */
export async function stateStudy(
  store: Store,
  now: number,
  touched: { account: string[]; user: string[] },
  bestOf: (fn: () => Promise<unknown>) => Promise<number>,
): Promise<StateFigures> {
  const t0 = performance.now()
  await build(store, now)
  const buildMs = performance.now() - t0
  const today = startOfDay(now)
  const base = {
    now: chTime(now),
    today: utcDate(today),
    d7: utcDate(today - 7 * DAY),
    d30: utcDate(today - 30 * DAY),
    d35: utcDate(today - 35 * DAY),
    d90: utcDate(today - 90 * DAY),
    age: (now - (now - 90 * DAY)) / 1000 / HALF_LIFE_S,
  }
  const [sizes] = await store.query<{ a: number; u: number }>(
    'SELECT (SELECT count() FROM bench_state_account_day) AS a, (SELECT count() FROM bench_state_user_day) AS u',
  )
  const matched: Record<string, number> = {}
  const accounts = async (ids?: string[]) => {
    const rows = await store.query<Record<string, number>>(accountSql(!!ids), ids ? { ...base, ids } : base)
    if (!ids) for (const k of ['pql', 'churn', 'champion', 'seat']) matched[k] = rows.filter((r) => Number(r[k]) === 1).length
  }
  const users = async (ids?: string[]) => {
    const rows = await store.query<{ mql: number }>(userSql(!!ids), ids ? { ...base, ids } : base)
    if (!ids) matched.mql = rows.filter((r) => Number(r.mql) === 1).length
  }
  return {
    build: buildMs,
    accountRows: Number(sizes?.a ?? 0),
    userRows: Number(sizes?.u ?? 0),
    full: { account: await bestOf(() => accounts()), user: await bestOf(() => users()) },
    scoped: { account: await bestOf(() => accounts(touched.account)), user: await bestOf(() => users(touched.user)) },
    one: {
      account: await bestOf(() => accounts(touched.account.slice(0, 1))),
      user: await bestOf(() => users(touched.user.slice(0, 1))),
      select1: await bestOf(() => store.query('SELECT 1')),
    },
    matched,
  }
}

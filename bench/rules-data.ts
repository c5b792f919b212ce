import { chTime } from '../src/time.js'
import type { Store } from '../src/store/store.js'

/**
 * Synthetic product and web usage for the rules benchmark, generated inside ClickHouse
 * (INSERT … SELECT FROM numbers()) so ten million rows never pass through JavaScript.
 *
 * Shape: `accounts` accounts with `users / accounts` users each (user u belongs to account
 * u % accounts); a skewed activity distribution (a few heavy users per account, many light ones);
 * half the product events carry the account id (context.groupId), the rest reach their account
 * through membership; a share of web events is anonymous and joined to the user by identify.
 * One account in ten goes quiet in the last week (churn), one in ten is a busy free team (PQL, and
 * a third of all events), one in ten has fewer seats than active users (expansion).
 */
export type BenchShape = { events: number; accounts: number; users: number; days: number; now: number }

/** The full-scale shape (10M events, 10,000 accounts, 100,000 users, 90 days), scaled by BENCH_EVENTS / BENCH_ACCOUNTS / BENCH_USERS. */
export const shapeFromEnv = (now: number): BenchShape => ({
  events: Number(process.env.BENCH_EVENTS ?? 10_000_000),
  accounts: Number(process.env.BENCH_ACCOUNTS ?? 10_000),
  users: Number(process.env.BENCH_USERS ?? 100_000),
  days: 90,
  now,
})

/** Event names and their share of events, in tenths of a percent. */
const EVENTS = [
  ['Message Sent', 420],
  ['Page Viewed', 250],
  ['Feature Used', 130],
  ['File Uploaded', 80],
  ['Report Created', 80],
  ['Invite Sent', 23],
  ['Content Downloaded', 10],
  ['Webinar Registered', 5],
  ['Demo Requested', 2],
] as const
const PATHS = ['/', '/pricing', '/docs', '/blog', '/features', '/customers']
const PLANS = ['free', 'free', 'free', 'pro', 'pro', 'enterprise']
const TITLES = ['Engineer', 'VP Engineering', 'Head of Sales', 'Analyst', 'CTO', 'Designer', 'Product Manager', 'Director of Operations']


/** `multiIf` picking an event name from a uniform number in [0, 1000). */
function eventByWeight(r: string): string {
  let acc = 0
  const arms = EVENTS.map(([name, w]) => {
    acc += w
    return `${r} < ${acc}, '${name}'`
  })
  return `multiIf(${arms.join(', ')}, 'Message Sent')`
}

export async function generate(store: Store, s: BenchShape, opts: { offset?: number; settings?: string } = {}) {
  const start = s.now - s.days * 86_400_000
  const span = s.days * 86_400_000
  const offset = opts.offset ?? 0
  // Per row: a user drawn with skew (squaring a uniform number favours low ranks within an account),
  // a time, an event. Accounts whose id ends in 7 stop most activity in the last 7 days.
  await store.command(
    `INSERT INTO events_v1 (source, message_id, type, event, user_id, anonymous_id, account_id, timestamp, received_at, properties, traits, context, previous_id)
    SELECT
      if(event = 'Page Viewed' OR event IN ('Content Downloaded', 'Webinar Registered', 'Demo Requested'), 'web', 'app') AS source,
      concat('bm', toString(number + ${offset})) AS message_id,
      if(event = 'Page Viewed', 'page', 'track') AS type,
      event,
      if(anon, '', concat('u', toString(user))) AS user_id,
      if(anon, concat('anon', toString(user)), '') AS anonymous_id,
      if(source = 'app' AND number % 2 = 0, concat('acc', toString(user % ${s.accounts})), '') AS account_id,
      ts AS timestamp,
      ts AS received_at,
      multiIf(event = 'Page Viewed', concat('{"path":"', arrayElement([${PATHS.map((x) => `'${x}'`).join(', ')}], 1 + (number % ${PATHS.length})), '"}'),
              event = 'Message Sent', concat('{"length":', toString(number % 500), '}'),
              event = 'File Uploaded', concat('{"bytes":', toString((number * 7919) % 10000000), '}'),
              '{}') AS properties,
      '{}' AS traits,
      '{}' AS context,
      '' AS previous_id
    FROM (
      SELECT number,
        cityHash64(number, 1) % ${s.accounts} AS a0,
        -- A third of the events go to the busy accounts (id ending in 3).
        if(cityHash64(number, 7) % 100 < 35, intDiv(a0, 10) * 10 + 3, a0) AS account,
        account + ${s.accounts} * toUInt64(floor(pow((cityHash64(number, 2) % 10000) / 10000, 2) * ${s.users / s.accounts})) AS user,
        ${eventByWeight('(cityHash64(number, 3) % 1000)')} AS event,
        (event = 'Page Viewed' AND cityHash64(number, 4) % 10 = 0) AS anon,
        toDateTime64(${start / 1000} + (cityHash64(number, 5) % ${span}) / 1000, 3, 'UTC') AS t0,
        -- Churning accounts (id ending in 7): events of the last week are moved three weeks back.
        if((user % ${s.accounts}) % 10 = 7 AND t0 > toDateTime64(${(s.now - 7 * 86_400_000) / 1000}, 3, 'UTC') AND cityHash64(number, 6) % 10 != 0,
           t0 - INTERVAL 21 DAY, t0) AS ts
      FROM numbers(${s.events})
    )${opts.settings ? ` SETTINGS ${opts.settings}` : ''}`,
  )
}

/** Users, accounts, memberships, identity links and traits, as ingestion would derive them. */
export async function generateDirectory(store: Store, s: BenchShape) {
  const t = `toDateTime64('${chTime(s.now - s.days * 86_400_000)}', 3, 'UTC')`
  await store.command(`INSERT INTO users_v1 SELECT concat('u', toString(number)), ${t}, ${t} FROM numbers(${s.users})`)
  await store.command(`INSERT INTO accounts_v1 SELECT concat('acc', toString(number)), ${t}, ${t} FROM numbers(${s.accounts})`)
  await store.command(
    `INSERT INTO memberships_v1 SELECT concat('acc', toString(number % ${s.accounts})), concat('u', toString(number)), ${t}, ${t} FROM numbers(${s.users})`,
  )
  await store.command(`INSERT INTO identities_v1 SELECT concat('anon', toString(number)), concat('u', toString(number)), 'anonymous', ${t} FROM numbers(${s.users})`)
  // Trait values are JSON text: '"free"'.
  const sqlJsonArray = (xs: string[]) => `[${xs.map((x) => `'"${x}"'`).join(', ')}]`
  const plans = sqlJsonArray(PLANS)
  await store.command(
    `INSERT INTO account_traits_v1 SELECT concat('acc', toString(number % ${s.accounts})), key, value, ${t}, 'app', concat('g', toString(number))
    FROM (SELECT number,
      if(number < ${s.accounts}, 'plan', 'seats') AS key,
      if(number < ${s.accounts},
        -- Accounts whose id ends in 3 are busy free teams (PQL candidates).
        if(number % 10 = 3, '"free"', arrayElement(${plans}, 1 + (cityHash64(number) % ${PLANS.length}))),
        toString(if(number % 10 = 5, 4, 12))) AS value
      FROM numbers(${2 * s.accounts}))`,
  )
  const titles = sqlJsonArray(TITLES)
  await store.command(
    `INSERT INTO user_traits_v1 SELECT concat('u', toString(number % ${s.users})), key, value, ${t}, 'app', concat('i', toString(number))
    FROM (SELECT number,
      if(number < ${s.users}, 'title', 'role') AS key,
      if(number < ${s.users}, arrayElement(${titles}, 1 + (cityHash64(number) % ${TITLES.length})),
        if(number % ${s.users} < ${s.accounts}, '"champion"', '"member"')) AS value
      FROM numbers(${2 * s.users}))`,
  )
}

import type { Store } from '../store/store.js'

export type Stats = {
  events: number
  users: number
  accounts: number
  signals: number
  by_type: Record<string, number>
  ingest_errors: number
  ingest_warnings: number
}

/** Counts over the store. Events are deduplicated at write time, so `count()` counts each messageId once. */
export async function readStats(store: Store): Promise<Stats> {
  const [byType, users, accounts, errors, signals] = await Promise.all([
    store.query<{ type: string; n: number }>('SELECT type, count() AS n FROM events_v1 GROUP BY type'),
    store.query<{ n: number }>('SELECT uniqExact(user_id) AS n FROM users_v1'),
    store.query<{ n: number }>('SELECT uniqExact(account_id) AS n FROM accounts_v1'),
    store.query<{ level: string; n: number }>('SELECT level, count() AS n FROM ingest_errors_v1 GROUP BY level'),
    store.query<{ n: number }>('SELECT uniqExact(id) AS n FROM signals_v1'),
  ])
  const by_type = Object.fromEntries(byType.map((r) => [r.type, Number(r.n)]))
  return {
    events: Object.values(by_type).reduce((a, b) => a + b, 0),
    users: Number(users[0]?.n ?? 0),
    accounts: Number(accounts[0]?.n ?? 0),
    signals: Number(signals[0]?.n ?? 0),
    by_type,
    ingest_errors: Number(errors.find((r) => r.level === 'error')?.n ?? 0),
    ingest_warnings: Number(errors.find((r) => r.level === 'warning')?.n ?? 0),
  }
}

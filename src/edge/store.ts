import { createClient } from '@clickhouse/client-web'
import type { Config } from '../config.js'
import { CLIENT_SETTINGS, type Store, storeFromClient } from '../store/store.js'

/**
 * The store on Workers: ClickHouse over HTTPS through `@clickhouse/client-web` (fetch-based),
 * behind the same Store interface as on Node. Keep-alive is off: workerd manages its own
 * connections and does not implement `keepalive` on fetch.
 */
export function openWebStore(
  config: Pick<Config, 'CLICKHOUSE_URL' | 'CLICKHOUSE_USER' | 'CLICKHOUSE_PASSWORD' | 'CLICKHOUSE_DATABASE'>,
): Store {
  if (!config.CLICKHOUSE_URL) throw new Error('CLICKHOUSE_URL is required on Workers')
  const client = createClient({
    url: config.CLICKHOUSE_URL,
    username: config.CLICKHOUSE_USER,
    password: config.CLICKHOUSE_PASSWORD,
    database: config.CLICKHOUSE_DATABASE,
    clickhouse_settings: CLIENT_SETTINGS,
    keep_alive: { enabled: false },
  })
  return storeFromClient(client, 'server')
}

import { createClient } from '@clickhouse/client-web'
import type { Config } from '../config.js'
import { clusterClientSettings } from '../store/cluster.js'
import { CLIENT_SETTINGS, type Store, storeFromClient } from '../store/store.js'

/**
 * Workers cap a request URL at 16 KB, and `@clickhouse/client-web` sends query parameters in the
 * URL (`param_name=…`): a lookup of a few hundred ids would not fit. Above this size the request
 * is sent with its parameters in a multipart form body instead, which ClickHouse's HTTP interface
 * also reads (`-F param_id=1`, and the statement as the `query` field).
 */
export const URL_BUDGET = 12_000

type Fetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>

/** A fetch that moves `param_*` and the statement into a form body when the URL would be too long. */
export function paramsInBody(fetchFn: Fetch = (input, init) => fetch(input, init), budget = URL_BUDGET): Fetch {
  return function fetchWithParamsInBody(input, init) {
    const url = new URL(input instanceof Request ? input.url : String(input))
    // Inserts carry their statement in the URL and their rows in the body: left as they are.
    if (url.href.length <= budget || typeof init?.body !== 'string' || url.searchParams.has('query')) return fetchFn(input, init)
    const form = new FormData()
    form.set('query', init.body)
    for (const [k, v] of [...url.searchParams]) {
      if (!k.startsWith('param_')) continue
      form.append(k, v)
      url.searchParams.delete(k)
    }
    const headers = new Headers(init.headers)
    headers.delete('content-type') // fetch sets multipart/form-data with its boundary
    return fetchFn(url, { ...init, headers, body: form })
  }
}

/**
 * The store on Workers: ClickHouse over HTTPS through `@clickhouse/client-web` (fetch-based),
 * behind the same Store interface as on Node. Keep-alive is off: workerd manages its own
 * connections and does not implement `keepalive` on fetch.
 */
export function openWebStore(
  config: Pick<Config, 'CLICKHOUSE_URL' | 'CLICKHOUSE_USER' | 'CLICKHOUSE_PASSWORD' | 'CLICKHOUSE_DATABASE' | 'CLICKHOUSE_CLUSTER'>,
): Store {
  if (!config.CLICKHOUSE_URL) throw new Error('CLICKHOUSE_URL is required on Workers')
  const client = createClient({
    url: config.CLICKHOUSE_URL,
    username: config.CLICKHOUSE_USER,
    password: config.CLICKHOUSE_PASSWORD,
    database: config.CLICKHOUSE_DATABASE,
    // In cluster mode: foreground, quorum inserts into Distributed tables (see cluster.ts).
    clickhouse_settings: { ...CLIENT_SETTINGS, ...clusterClientSettings(config.CLICKHOUSE_CLUSTER) },
    keep_alive: { enabled: false },
    fetch: paramsInBody() as typeof fetch,
  })
  return storeFromClient(client, 'server')
}

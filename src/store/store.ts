export type Params = Record<string, unknown>

/**
 * Client settings every store uses, on Node and on Workers: DateTime64 values arrive as ISO
 * strings; rows come back with 64-bit ints as numbers.
 */
export const CLIENT_SETTINGS = {
  date_time_input_format: 'best_effort',
  output_format_json_quote_64bit_integers: 0,
} as const

/**
 * The access layer every part of signalbox uses: two small interfaces on top of a
 * `@clickhouse/client` (Node, embedded chDB or HTTP) or `@clickhouse/client-web` (Workers).
 * Values always travel as `{name:Type}` query parameters, never spliced into SQL.
 */
export interface Store {
  /** Run a SELECT and return its rows (JSONEachRow). */
  query<T = Record<string, unknown>>(sql: string, params?: Params): Promise<T[]>
  /** Insert rows into a table (JSONEachRow). */
  insert(table: string, rows: readonly object[], settings?: Record<string, string | number>): Promise<void>
  /** Run a statement that returns nothing (DDL, ALTER …). */
  command(sql: string, params?: Params): Promise<void>
  ping(): Promise<void>
  close(): Promise<void>
  readonly kind: 'embedded' | 'server'
}

/**
 * The surface of a ClickHouse client that signalbox uses, typed structurally so that
 * `@clickhouse/client` (which vendors its own copy of client-common) and `@clickhouse/client-web`
 * both fit.
 */
type AnyClient = {
  query(p: { query: string; query_params?: Params; format: 'JSONEachRow' }): Promise<{ json(): Promise<unknown> }>
  insert(p: { table: string; values: object[]; format: 'JSONEachRow'; clickhouse_settings?: Record<string, string | number> }): Promise<unknown>
  command(p: { query: string; query_params?: Params }): Promise<unknown>
  ping(): Promise<{ success: true } | { success: false; error: Error }>
  close(): Promise<void>
}

export function storeFromClient(client: AnyClient, kind: Store['kind']): Store {
  return {
    kind,
    async query<T>(sql: string, params?: Params) {
      const rs = await client.query({ query: sql, query_params: params, format: 'JSONEachRow' })
      return (await rs.json()) as T[]
    },
    async insert(table, rows, settings) {
      if (rows.length === 0) return
      await client.insert({ table, values: rows as object[], format: 'JSONEachRow', clickhouse_settings: settings })
    },
    async command(sql, params) {
      await client.command({ query: sql, query_params: params })
    },
    async ping() {
      const r = await client.ping()
      if (!r.success) throw r.error
    },
    async close() {
      await client.close()
    },
  }
}

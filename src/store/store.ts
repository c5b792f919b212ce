export type Params = Record<string, unknown>

/** Text formats `insertRaw` takes: one row per line, each line ending in `\n`. */
export type RawFormat = 'TabSeparated' | 'JSONEachRow'

export type RawInsert = {
  format: RawFormat
  /** The columns of each row, in order (TabSeparated rows are positional). */
  columns?: readonly string[]
  settings?: Record<string, string | number>
}

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
  /**
   * Insert rows already encoded as `text` (UTF-8 bytes or a string) in `format` (one row per line, each ending in `\n`),
   * so a hot path serialises each row once, in the format the engine parses fastest, instead of
   * handing objects to the client to serialise. Empty text inserts nothing.
   */
  insertRaw(table: string, text: string | Uint8Array, opts: RawInsert): Promise<void>
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
  command(p: { query: string; query_params?: Params; clickhouse_settings?: Record<string, string | number> }): Promise<unknown>
  ping(): Promise<{ success: true } | { success: false; error: Error }>
  close(): Promise<void>
}

/**
 * Sent with every insert that does not set its own: chDB keeps a connection's settings from one
 * statement to the next, so a deduplication token given to one insert would otherwise be reused
 * by the next insert on that connection, which a table with a deduplication window then drops
 * as a duplicate. An empty token is "none" on every server.
 */
export const INSERT_DEFAULTS = { insert_deduplication_token: '' } as const

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/

/** `INSERT INTO table (columns) FORMAT format`: names come from code, and are checked all the same. */
export function rawInsertStatement(table: string, { format, columns }: RawInsert): string {
  for (const name of [table, ...(columns ?? [])]) if (!IDENTIFIER.test(name)) throw new Error(`not a plain identifier: ${JSON.stringify(name)}`)
  if (format !== 'TabSeparated' && format !== 'JSONEachRow') throw new Error(`unsupported raw insert format ${JSON.stringify(format)}`)
  return `INSERT INTO ${table}${columns?.length ? ` (${columns.join(', ')})` : ''} FORMAT ${format}`
}

/** A faster `insertRaw` than the client's, with what it holds open. */
export type RawInserter = { insert: Store['insertRaw']; close(): Promise<void> }

/**
 * @param raw a faster `insertRaw` for this client (the embedded engine hands the text to chDB as
 *   one buffer). Without it, the rows travel inline after the statement, which both clients
 *   send as the request body and ClickHouse reads as the insert's data.
 */
export function storeFromClient(client: AnyClient, kind: Store['kind'], raw?: RawInserter): Store {
  return {
    kind,
    async query<T>(sql: string, params?: Params) {
      const rs = await client.query({ query: sql, query_params: params, format: 'JSONEachRow' })
      return (await rs.json()) as T[]
    },
    async insert(table, rows, settings) {
      if (rows.length === 0) return
      await client.insert({ table, values: rows as object[], format: 'JSONEachRow', clickhouse_settings: { ...INSERT_DEFAULTS, ...settings } })
    },
    async insertRaw(table, data, opts) {
      const statement = rawInsertStatement(table, opts)
      if (data.length === 0) return
      if (raw) return raw.insert(table, data, opts)
      const text = typeof data === 'string' ? data : new TextDecoder().decode(data)
      // The clients trim the statement: whitespace that ends the last row would be cut from it.
      if (/[ \t\r]\n?$/.test(text)) throw new Error('insertRaw: the last row ends in whitespace, which the client would trim')
      await client.command({ query: `${statement}\n${text}`, clickhouse_settings: { ...INSERT_DEFAULTS, ...opts.settings } })
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
      await raw?.close()
    },
  }
}

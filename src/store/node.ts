import { mkdirSync } from 'node:fs'
import { resolve } from 'node:path'
import { ClickHouseLogLevel, createClient, type ClickHouseClientConfigOptions } from '@clickhouse/client'
import type { Config } from '../config.js'
import { clusterClientSettings } from './cluster.js'
import { CLIENT_SETTINGS, INSERT_DEFAULTS, type RawInserter, type Store, storeFromClient } from './store.js'

const SETTINGS = CLIENT_SETTINGS
// The client would print its own copy of every failed request to stderr; failures reach the
// callers (a 503, a failed start) and are logged there, once, through pino.
const LOG = { level: ClickHouseLogLevel.OFF }

/** A store that cannot be opened: the message says which and where, for the start-up error. */
export class StoreOpenError extends Error {
  override name = 'StoreOpenError'
}

const reason = (err: unknown) => (err instanceof Error ? err.message : String(err))

/**
 * Open the store named by the config: a ClickHouse server when `CLICKHOUSE_URL` is set, otherwise
 * the embedded engine (chDB) in `DATA_DIR/clickhouse`. Fails loudly: a store that cannot answer
 * `SELECT 1` is an error at start, never a silent no-op.
 */
export async function openStore(config: Config): Promise<Store> {
  if (config.CLICKHOUSE_URL) {
    const where = `ClickHouse at CLICKHOUSE_URL=${redact(config.CLICKHOUSE_URL)}`
    try {
      const admin = createClient({
        url: config.CLICKHOUSE_URL,
        username: config.CLICKHOUSE_USER,
        password: config.CLICKHOUSE_PASSWORD,
        log: LOG,
      })
      try {
        const onCluster = config.CLICKHOUSE_CLUSTER ? ` ON CLUSTER ${config.CLICKHOUSE_CLUSTER}` : ''
        await admin.command({ query: `CREATE DATABASE IF NOT EXISTS ${config.CLICKHOUSE_DATABASE}${onCluster}` })
      } finally {
        await admin.close()
      }
      const client = createClient({
        url: config.CLICKHOUSE_URL,
        username: config.CLICKHOUSE_USER,
        password: config.CLICKHOUSE_PASSWORD,
        database: config.CLICKHOUSE_DATABASE,
        // In cluster mode: foreground, quorum inserts into Distributed tables (see cluster.ts).
        clickhouse_settings: { ...SETTINGS, ...clusterClientSettings(config.CLICKHOUSE_CLUSTER) },
        log: LOG,
      })
      return await pinged(storeFromClient(client, 'server'))
    } catch (err) {
      throw new StoreOpenError(`cannot reach ${where}: ${reason(err)}`, { cause: err })
    }
  }
  const path = resolve(config.DATA_DIR, 'clickhouse')
  try {
    mkdirSync(path, { recursive: true })
    // Imported lazily: the native engine is only loaded when the embedded store is used.
    const { createChdbConnection } = await import('chdb/connection')
    // chDB keeps one engine per process and path; its session works in the `default` database,
    // which is private to this DATA_DIR, so tables are referenced unqualified everywhere.
    // chdb types its Connection against the standalone client-common; the client vendors its own
    // copy of the same interface, so the two declarations differ only by origin.
    const connection = createChdbConnection({ path }) as unknown as NonNullable<ClickHouseClientConfigOptions['connection']>
    const client = createClient({ connection, clickhouse_settings: SETTINGS, log: LOG })
    // Raw inserts skip the client: chDB takes the text as one buffer, without copying it into an
    // SQL string. They run on a connection of their own: chDB runs one statement at a time per
    // connection, and the ingestion writer looks up a block's message ids while the previous
    // block's events are inserted.
    const inserts = createChdbConnection({ path })
    const raw: RawInserter = {
      async insert(table, text, { format, columns, settings }) {
        const values = typeof text === 'string' ? Buffer.from(text) : text
        await inserts.chdb.rawInsert({ table, values, format, columns: columns && [...columns], settings: { ...SETTINGS, ...INSERT_DEFAULTS, ...settings } })
      },
      close: () => inserts.close(),
    }
    return await pinged(storeFromClient(client, 'embedded', raw))
  } catch (err) {
    throw new StoreOpenError(
      `cannot open the embedded ClickHouse in ${path} (DATA_DIR=${config.DATA_DIR}; one process at a time can use a data directory): ${reason(err)}`,
      { cause: err },
    )
  }
}

async function pinged(store: Store): Promise<Store> {
  try {
    await store.ping()
  } catch (err) {
    await store.close().catch(() => {})
    throw err
  }
  return store
}

/** The URL without its password, for messages. */
function redact(url: string): string {
  try {
    const u = new URL(url)
    if (u.password) u.password = '***'
    return u.toString()
  } catch {
    return url
  }
}

import { mkdirSync } from 'node:fs'
import { resolve } from 'node:path'
import { createClient, type ClickHouseClientConfigOptions } from '@clickhouse/client'
import type { Config } from '../config.js'
import { CLIENT_SETTINGS, type Store, storeFromClient } from './store.js'

const SETTINGS = CLIENT_SETTINGS

/**
 * Open the store named by the config: a ClickHouse server when `CLICKHOUSE_URL` is set, otherwise
 * the embedded engine (chDB) in `DATA_DIR/clickhouse`. Fails loudly: a store that cannot answer
 * `SELECT 1` is an error at start, never a silent no-op.
 */
export async function openStore(config: Config): Promise<Store> {
  let store: Store
  if (config.CLICKHOUSE_URL) {
    const admin = createClient({
      url: config.CLICKHOUSE_URL,
      username: config.CLICKHOUSE_USER,
      password: config.CLICKHOUSE_PASSWORD,
    })
    try {
      await admin.command({ query: `CREATE DATABASE IF NOT EXISTS ${config.CLICKHOUSE_DATABASE}` })
    } finally {
      await admin.close()
    }
    const client = createClient({
      url: config.CLICKHOUSE_URL,
      username: config.CLICKHOUSE_USER,
      password: config.CLICKHOUSE_PASSWORD,
      database: config.CLICKHOUSE_DATABASE,
      clickhouse_settings: SETTINGS,
    })
    store = storeFromClient(client, 'server')
  } else {
    const path = resolve(config.DATA_DIR, 'clickhouse')
    mkdirSync(path, { recursive: true })
    // Imported lazily: the native engine is only loaded when the embedded store is used.
    const { createChdbConnection } = await import('chdb/connection')
    // chDB keeps one engine per process and path; its session works in the `default` database,
    // which is private to this DATA_DIR, so tables are referenced unqualified everywhere.
    // chdb types its Connection against the standalone client-common; the client vendors its own
    // copy of the same interface, so the two declarations differ only by origin.
    const connection = createChdbConnection({ path }) as unknown as NonNullable<ClickHouseClientConfigOptions['connection']>
    const client = createClient({ connection, clickhouse_settings: SETTINGS })
    store = storeFromClient(client, 'embedded')
  }
  await store.ping()
  return store
}

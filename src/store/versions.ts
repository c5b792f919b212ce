import { ulid } from 'ulid'
import { chTime } from '../time.js'
import type { Store } from './store.js'

/**
 * Versioned documents (rules, outcomes): every change is a new row `(id, version)` of a
 * ReplacingMergeTree table with `write_id` and `created_at` columns; a version is claimed with an
 * insert deduplication token, so two writers never store two documents under one version: the
 * loser reads someone else's row back and tries the next version.
 */
export type VersionedTable = {
  table: string
  /** The id column (`rule_id`, `outcome_id`). */
  idColumn: string
  /** The columns read back, id and version included. */
  columns: string
  /** What a conflict message calls the document ("rule", "outcome"). */
  noun: string
}

/** Run async tasks one at a time, in call order; a failed task rejects only its own caller. */
export class SerialQueue {
  #tail: Promise<unknown> = Promise.resolve()

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(task, task)
    this.#tail = result.catch(() => undefined)
    return result
  }
}

// One writer per store and table in this process; across processes the deduplication token decides.
const writers = new WeakMap<Store, Map<string, SerialQueue>>()
export function writerFor(store: Store, table: string): SerialQueue {
  let byTable = writers.get(store)
  if (!byTable) writers.set(store, (byTable = new Map()))
  let q = byTable.get(table)
  if (!q) byTable.set(table, (q = new SerialQueue()))
  return q
}

export async function latestVersion<R>(store: Store, t: VersionedTable, id: string): Promise<R | undefined> {
  const rows = await store.query<R>(
    `SELECT ${t.columns} FROM ${t.table} FINAL WHERE ${t.idColumn} = {id:String} ORDER BY version DESC LIMIT 1`,
    { id },
  )
  return rows[0]
}

export async function versionOf<R>(store: Store, t: VersionedTable, id: string, version: number): Promise<R | undefined> {
  const [row] = await store.query<R>(
    `SELECT ${t.columns} FROM ${t.table} FINAL WHERE ${t.idColumn} = {id:String} AND version = {version:UInt32}`,
    { id, version },
  )
  return row
}

export async function allVersions<R>(store: Store, t: VersionedTable, id: string): Promise<R[]> {
  return store.query<R>(`SELECT ${t.columns} FROM ${t.table} FINAL WHERE ${t.idColumn} = {id:String} ORDER BY version`, { id })
}

/** The latest version of every document, tombstones excluded, by id. */
export async function latestOfAll<R>(store: Store, t: VersionedTable): Promise<R[]> {
  return store.query<R>(
    `SELECT ${t.columns} FROM ${t.table} FINAL
     WHERE (${t.idColumn}, version) IN (SELECT ${t.idColumn}, max(version) FROM ${t.table} GROUP BY ${t.idColumn})
       AND deleted = 0
     ORDER BY ${t.idColumn}`,
  )
}

/**
 * Append the next version of `id`; `make` gives the row's own columns. After 8 lost races it
 * throws what `conflict` makes (each layer has its own error type).
 */
export async function appendVersion<R extends { write_id: string }>(
  store: Store,
  t: VersionedTable,
  id: string,
  make: (version: number) => Record<string, unknown>,
  now: number,
  conflict: (message: string) => Error,
): Promise<R> {
  for (let attempt = 0; attempt < 8; attempt++) {
    const current = await latestVersion<{ version: number }>(store, t, id)
    const version = (current ? Number(current.version) : 0) + 1
    const writeId = ulid()
    const row = { [t.idColumn]: id, version, write_id: writeId, created_at: chTime(now), ...make(version) }
    await store.insert(t.table, [row], { insert_deduplication_token: `${t.noun}:${id}:${version}` })
    const back = await versionOf<R>(store, t, id, version)
    if (back?.write_id === writeId) return back
  }
  throw conflict(`${t.noun} ${id} is being changed concurrently; try again`)
}

/** Whether any version (tombstones included) of any document was ever stored in the table. */
export async function anyVersionStored(store: Store, t: VersionedTable): Promise<boolean> {
  const [row] = await store.query<{ n: number }>(`SELECT count() AS n FROM (SELECT 1 FROM ${t.table} LIMIT 1)`)
  return Number(row?.n ?? 0) > 0
}

import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { Store } from './store.js'

export const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url))

export type Migration = { version: number; name: string; statements: string[] }

/** `NNN_name.sql` files, in order; statements are separated by `;` at the end of a line. */
export function readMigrations(dir = MIGRATIONS_DIR): Migration[] {
  return readdirSync(dir)
    .filter((f) => /^\d{3}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map((file) => {
      const sql = readFileSync(`${dir}/${file}`, 'utf8')
      const statements = sql
        .split(/;\s*$/m)
        .map((s) => s.replace(/^\s*--.*$/gm, '').trim())
        .filter(Boolean)
      return { version: Number(file.slice(0, 3)), name: file.replace(/\.sql$/, ''), statements }
    })
}

/**
 * Apply the migrations not yet recorded in `schema_migrations_v1`. Every statement is idempotent
 * (`IF NOT EXISTS`), so a run cut off half-way is simply run again.
 */
export async function migrate(store: Store, migrations = readMigrations()): Promise<string[]> {
  await store.command(`CREATE TABLE IF NOT EXISTS schema_migrations_v1 (
    version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
  ) ENGINE = ReplacingMergeTree ORDER BY version`)
  const done = new Set(
    (await store.query<{ version: number }>('SELECT version FROM schema_migrations_v1 FINAL')).map((r) => r.version),
  )
  const applied: string[] = []
  for (const m of migrations) {
    if (done.has(m.version)) continue
    for (const statement of m.statements) await store.command(statement)
    await store.insert('schema_migrations_v1', [{ version: m.version, name: m.name }])
    applied.push(m.name)
  }
  return applied
}

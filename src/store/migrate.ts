import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { clusterMigrations } from './cluster.js'
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

/** The table that records applied migrations (created before any migration runs). */
export const MIGRATIONS_TABLE_DDL = `CREATE TABLE IF NOT EXISTS schema_migrations_v1 (
    version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
  ) ENGINE = ReplacingMergeTree ORDER BY version`

/**
 * The statements to run: as written (one node), or rewritten for a cluster (`ON CLUSTER`,
 * Replicated engines, Distributed tables; see src/store/cluster.ts).
 */
export function migrationPlan(migrations: readonly Migration[], cluster?: string): { bootstrap: string[]; migrations: Migration[] } {
  if (!cluster) return { bootstrap: [MIGRATIONS_TABLE_DDL], migrations: [...migrations] }
  const [bootstrap, ...rest] = clusterMigrations([{ version: 0, name: '000_schema_migrations', statements: [MIGRATIONS_TABLE_DDL] }, ...migrations], cluster)
  return { bootstrap: bootstrap?.statements ?? [], migrations: rest }
}

/**
 * Apply the migrations not yet recorded in `schema_migrations_v1`. Every statement is idempotent
 * (`IF NOT EXISTS`), so a run cut off half-way is simply run again. With `cluster`, the statements
 * are rewritten for a ClickHouse cluster first.
 */
export async function migrate(store: Store, migrations = readMigrations(), opts: { cluster?: string } = {}): Promise<string[]> {
  if (opts.cluster && store.kind === 'embedded') {
    throw new Error('CLICKHOUSE_CLUSTER needs a ClickHouse server (CLICKHOUSE_URL): the embedded engine is a single node')
  }
  const plan = migrationPlan(migrations, opts.cluster)
  for (const statement of plan.bootstrap) await store.command(statement)
  const done = new Set(
    (await store.query<{ version: number }>('SELECT version FROM schema_migrations_v1 FINAL')).map((r) => r.version),
  )
  const applied: string[] = []
  for (const m of plan.migrations) {
    if (done.has(m.version)) continue
    for (const statement of m.statements) await store.command(statement)
    await store.insert('schema_migrations_v1', [{ version: m.version, name: m.name }])
    applied.push(m.name)
  }
  return applied
}

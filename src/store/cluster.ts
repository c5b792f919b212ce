import type { Migration } from './migrate.js'

/**
 * Cluster mode (`CLICKHOUSE_CLUSTER=name`): the migrations, written for one node, are rewritten
 * for a sharded, replicated ClickHouse cluster. Every MergeTree-family table `t` becomes
 *
 * - `t_local`, created `ON CLUSTER` with the Replicated variant of its engine
 *   (`/clickhouse/tables/{shard}/{database}/{table}`, `{replica}`), holding one shard's rows, and
 * - `t`, a `Distributed` table over `t_local` with a sharding key,
 *
 * so the application keeps reading and writing `t` unchanged. Sharding keys keep what belongs
 * together on one shard: an account's events, traits and memberships by `cityHash64(account_id)`
 * (so account rules run shard-local), a user's rows by user id; any other table by a hash of its
 * whole sorting key, which keeps ReplacingMergeTree/AggregatingMergeTree semantics exact (rows that
 * replace or merge with each other always meet on the same shard).
 *
 * It is a pure transformation of the statements, so the generated DDL is reviewable (and
 * snapshot-tested); statements it does not know how to place are refused rather than guessed.
 */

/** Sharding keys chosen for locality; each uses only sorting-key columns where rows replace or merge. */
export const SHARDING_KEYS: Record<string, string> = {
  // An account's events on one shard; events without an account follow their user (or device).
  events_v1: "cityHash64(if(account_id != '', account_id, if(user_id != '', user_id, anonymous_id)))",
  // The daily rollup is fed per shard from events_v1_local: the same key keeps direct inserts
  // (the backfill) on the shard the materialized view writes to.
  activity_daily_v1: "cityHash64(if(account_id != '', account_id, if(user_id != '', user_id, anonymous_id)))",
  accounts_v1: 'cityHash64(account_id)',
  account_traits_v1: 'cityHash64(account_id)',
  memberships_v1: 'cityHash64(account_id)',
  users_v1: 'cityHash64(user_id)',
  user_traits_v1: 'cityHash64(user_id)',
  stage_transitions_v1: 'cityHash64(subject_type, subject_id)',
  // The per-day state: an account's rows with the account, a user's with the user.
  state_daily_v1: 'cityHash64(subject_id)',
  // A signal's feedback on the shard of the signal itself (signals_v1 is keyed by cityHash64(id)).
  signal_feedback_v1: 'cityHash64(signal_id)',
}

/** Client settings for a cluster: see {@link clusterClientSettings}. */
export type ClusterSettings = Record<string, string | number>

/**
 * Settings every client of a cluster runs with:
 * - `distributed_foreground_insert`: an insert into a Distributed table returns once the shards
 *   have the rows, not when they are spooled on the node that took them, so a 2xx still means
 *   stored (and insert deduplication tokens reach the shards with the rows);
 * - `insert_quorum = 'auto'`: … on a majority of each shard's replicas;
 * - `distributed_product_mode = 'global'`: an IN or JOIN over another Distributed table inside a
 *   distributed query is run as GLOBAL IN/JOIN (its result shipped to the shards) instead of
 *   being refused.
 */
export function clusterClientSettings(cluster: string | undefined): ClusterSettings {
  if (!cluster) return {}
  return { distributed_foreground_insert: 1, insert_quorum: 'auto', distributed_product_mode: 'global' }
}

const ZK_PATH = "'/clickhouse/tables/{shard}/{database}/{table}'"
const REPLICA = "'{replica}'"

export const localName = (table: string) => `${table}_local`

type TableInfo = { local: string; engine: string }

export class ClusterDdlError extends Error {
  override name = 'ClusterDdlError'
}

/** Rewrite every migration's statements for `cluster`, keeping versions and names. */
export function clusterMigrations(migrations: readonly Migration[], cluster: string): Migration[] {
  const t = new ClusterTransform(cluster)
  return migrations.map((m) => ({ ...m, statements: m.statements.flatMap((s) => t.statement(s, m.name)) }))
}

/**
 * Stateful over a sequence of statements: a table created earlier is known to be sharded when a
 * later ALTER or view refers to it.
 */
export class ClusterTransform {
  readonly tables = new Map<string, TableInfo>()
  readonly #on: string

  constructor(readonly cluster: string) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(cluster)) throw new ClusterDdlError(`cluster name ${JSON.stringify(cluster)} is not a plain identifier`)
    this.#on = `ON CLUSTER ${cluster}`
  }

  /** One statement in, the statements to run on the cluster out. */
  statement(sql: string, where = 'migration'): string[] {
    const s = sql.trim()
    let m: RegExpMatchArray | null
    if ((m = s.match(/^CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?(\w+)\s*\(/i))) return this.#createTable(s, m[2] as string, Boolean(m[1]), where)
    if ((m = s.match(/^CREATE\s+MATERIALIZED\s+VIEW\s+(IF\s+NOT\s+EXISTS\s+)?(\w+)\s+/i))) return [this.#materializedView(s, m, where)]
    if ((m = s.match(/^CREATE\s+(OR\s+REPLACE\s+)?VIEW\s+(IF\s+NOT\s+EXISTS\s+)?(\w+)\s+/i))) {
      return [s.replace(/^(CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?\w+)/i, `$1 ${this.#on}`)]
    }
    if ((m = s.match(/^ALTER\s+TABLE\s+(\w+)\s+([\s\S]+)$/i))) return this.#alter(m[1] as string, m[2] as string)
    if ((m = s.match(/^DROP\s+(TABLE|VIEW)\s+(IF\s+EXISTS\s+)?(\w+)(\s+SYNC)?$/i))) {
      const [, kind, ifExists = '', name, sync = ''] = m as unknown as [string, string, string | undefined, string, string | undefined]
      const info = this.tables.get(name)
      const drop = (n: string) => `DROP ${kind.toUpperCase()} ${ifExists}${n} ${this.#on}${sync}`
      this.tables.delete(name)
      return info ? [drop(name), drop(info.local)] : [drop(name)]
    }
    if ((m = s.match(/^TRUNCATE\s+TABLE\s+(IF\s+EXISTS\s+)?(\w+)$/i))) {
      const info = this.tables.get(m[2] as string)
      return [`TRUNCATE TABLE ${m[1] ?? ''}${info ? info.local : m[2]} ${this.#on}`]
    }
    // Data statements go through the Distributed tables like the application's own.
    if (/^(INSERT|SELECT|WITH)\b/i.test(s)) return [s]
    if (/^CREATE\s+DATABASE\b/i.test(s)) return [s.replace(/^(CREATE\s+DATABASE\s+(?:IF\s+NOT\s+EXISTS\s+)?\w+)/i, `$1 ${this.#on}`)]
    throw new ClusterDdlError(`${where}: cluster mode does not know how to run "${s.slice(0, 60)}…"; extend src/store/cluster.ts`)
  }

  #createTable(s: string, name: string, ifNotExists: boolean, where: string): string[] {
    const open = s.indexOf('(')
    const close = matchingParen(s, open)
    const body = s.slice(open + 1, close)
    const tail = s.slice(close + 1).trim()
    const engineMatch = tail.match(/^ENGINE\s*=\s*(\w+)\s*(\(([^()]*)\))?/i)
    if (!engineMatch) throw new ClusterDdlError(`${where}: CREATE TABLE ${name} has no ENGINE clause`)
    const engine = engineMatch[1] as string
    const args = engineMatch[3]?.trim() ?? ''
    const rest = tail.slice(engineMatch[0].length)
    const ine = ifNotExists ? 'IF NOT EXISTS ' : ''
    if (!/MergeTree$/.test(engine)) {
      // Not data that is sharded (Memory, Null, Join, …): the same table on every node.
      return [`CREATE TABLE ${ine}${name} ${this.#on}\n(${body})\n${tail}`]
    }
    if (engine.startsWith('Replicated')) throw new ClusterDdlError(`${where}: ${name} is already Replicated; write migrations for one node`)
    const local = localName(name)
    const replicated = `Replicated${engine}(${[ZK_PATH, REPLICA, ...(args ? [args] : [])].join(', ')})`
    const orderBy = sortingKey(rest)
    if (!orderBy) throw new ClusterDdlError(`${where}: ${name} has no ORDER BY`)
    // No sorting key (`ORDER BY tuple()`): nothing replaces or merges, so rows are spread evenly.
    const byKey = orderBy.length > 0 && !(orderBy.length === 1 && orderBy[0] === 'tuple')
    const key = SHARDING_KEYS[name] ?? (byKey ? `cityHash64(${orderBy.join(', ')})` : 'rand()')
    this.tables.set(name, { local, engine })
    const elements = splitTopLevel(body)
      .map((c) => c.trim())
      .filter(Boolean)
    // The Distributed table has the columns only: indexes and projections work where the data is.
    const columns = elements.filter((c) => !/^(INDEX|PROJECTION|CONSTRAINT)\b/i.test(c))
    const list = (xs: string[]) => `(\n    ${xs.join(',\n    ')}\n)`
    return [
      `CREATE TABLE ${ine}${local} ${this.#on}\n${list(elements)}\nENGINE = ${replicated}\n${withReplicatedSettings(rest.trim())}`,
      `CREATE TABLE ${ine}${name} ${this.#on}\n${list(columns)}\nENGINE = Distributed(${this.cluster}, currentDatabase(), ${local}, ${key})`,
    ]
  }

  #materializedView(s: string, m: RegExpMatchArray, where: string): string {
    const name = m[2] as string
    const head = m[0]
    let rest = s.slice(head.length)
    // A view fed by inserts must sit on the shards' local tables: each shard's inserts trigger it.
    const to = rest.match(/^TO\s+(\w+)\s+/i)
    if (to) {
      const target = this.tables.get(to[1] as string)
      rest = `TO ${target ? target.local : to[1]} ${rest.slice(to[0].length)}`
    } else {
      const engine = rest.match(/ENGINE\s*=\s*(\w+)\s*(\(([^()]*)\))?/i)
      if (engine && /MergeTree$/.test(engine[1] as string)) {
        throw new ClusterDdlError(`${where}: materialized view ${name} keeps its own MergeTree table; give it a TO table so it can be sharded`)
      }
    }
    const select = rest.search(/\bAS\s+SELECT\b/i)
    if (select === -1) throw new ClusterDdlError(`${where}: materialized view ${name} has no AS SELECT`)
    const query = rest.slice(select).replace(/\b(FROM|JOIN)\s+(\w+)\b/gi, (all, kw: string, t: string) => {
      const info = this.tables.get(t)
      return info ? `${kw} ${info.local}` : all
    })
    return `${head.trimEnd()} ${this.#on} ${rest.slice(0, select)}${query}`
  }

  #alter(name: string, commands: string): string[] {
    const info = this.tables.get(name)
    if (!info) return [`ALTER TABLE ${name} ${this.#on} ${commands}`]
    const out = [`ALTER TABLE ${info.local} ${this.#on} ${commands}`]
    // Column changes also change the Distributed table's structure; indexes, projections, TTLs
    // and settings live only where the data is.
    const columnOps = splitTopLevel(commands)
      .map((c) => c.trim())
      .filter((c) => /^(ADD|DROP|MODIFY|RENAME)\s+COLUMN\b/i.test(c))
      .map((c) => c.replace(/\s+CODEC\s*\((?:[^()]|\([^()]*\))*\)/gi, '').replace(/\s+TTL\s+.+$/i, ''))
    if (columnOps.length) out.push(`ALTER TABLE ${name} ${this.#on} ${columnOps.join(', ')}`)
    return out
  }
}

/** The index of the `)` closing the `(` at `open`, skipping quoted text. */
function matchingParen(s: string, open: number): number {
  let depth = 0
  let quote: string | undefined
  for (let i = open; i < s.length; i++) {
    const c = s[i]
    if (quote) {
      if (c === '\\') i++
      else if (c === quote) quote = undefined
      continue
    }
    if (c === "'" || c === '`' || c === '"') quote = c
    else if (c === '(') depth++
    else if (c === ')' && --depth === 0) return i
  }
  throw new ClusterDdlError('unbalanced parentheses')
}

/** Split on commas outside parentheses and quotes (column lists, ALTER command lists). */
export function splitTopLevel(s: string): string[] {
  const parts: string[] = []
  let depth = 0
  let quote: string | undefined
  let start = 0
  for (let i = 0; i < s.length; i++) {
    const c = s[i]
    if (quote) {
      if (c === '\\') i++
      else if (c === quote) quote = undefined
      continue
    }
    if (c === "'" || c === '`' || c === '"') quote = c
    else if (c === '(') depth++
    else if (c === ')') depth--
    else if (c === ',' && depth === 0) {
      parts.push(s.slice(start, i))
      start = i + 1
    }
  }
  parts.push(s.slice(start))
  return parts
}

/** The ORDER BY columns of a table's clauses: `ORDER BY (a, b)` or `ORDER BY a`. */
export function sortingKey(clauses: string): string[] | undefined {
  const m = clauses.match(/\bORDER\s+BY\s+(\(([^()]*(\([^()]*\)[^()]*)*)\)|[\w.]+)/i)
  if (!m) return undefined
  const inner = m[2] ?? m[1] ?? ''
  return splitTopLevel(inner).map((c) => c.trim()).filter(Boolean)
}

/**
 * A Replicated table deduplicates inserts through Keeper with `replicated_deduplication_window`;
 * a window asked of the single-node table (`non_replicated_deduplication_window`) is kept for it.
 */
function withReplicatedSettings(clauses: string): string {
  return clauses.replace(/\bnon_replicated_deduplication_window\s*=\s*(\d+)/i, (all, n: string) => `${all}, replicated_deduplication_window = ${n}`)
}

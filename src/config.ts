import { z } from 'zod'

/** `key` or `key:source-name`, comma-separated. A key without a name feeds the source `default`. */
const writeKeys = z
  .string()
  .transform((raw, ctx) => {
    const keys: WriteKey[] = []
    for (const part of raw.split(',').map((s) => s.trim()).filter(Boolean)) {
      const [key, source = 'default', ...rest] = part.split(':')
      if (!key || rest.length > 0 || !/^[A-Za-z0-9_.-]+$/.test(source) || key.length < 8) {
        ctx.addIssue({
          code: 'custom',
          message: `"${part.slice(0, 12)}…" must be key or key:source (key ≥ 8 characters, source of letters, digits, _ . -)`,
        })
        return z.NEVER
      }
      keys.push({ key, source })
    }
    if (keys.length === 0) {
      ctx.addIssue({ code: 'custom', message: 'lists no key' })
      return z.NEVER
    }
    return keys
  })

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max)
const bool = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1')
const stageList = z
  .string()
  .transform((raw) => raw.split(',').map((s) => s.trim()).filter(Boolean))
  .pipe(z.array(z.string().regex(/^[a-z][a-z0-9_]*$/, 'stage names are lowercase letters, digits and _')))

export const EnvSchema = z.object({
  PORT: int(0, 65535).default(8787),
  HOST: z.string().default('0.0.0.0'),
  DATA_DIR: z.string().default('./data'),
  CLICKHOUSE_URL: z.url({ protocol: /^https?$/ }).optional(),
  CLICKHOUSE_USER: z.string().default('default'),
  CLICKHOUSE_PASSWORD: z.string().default(''),
  CLICKHOUSE_DATABASE: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be a plain identifier')
    .default('signalbox'),
  ADMIN_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  WRITE_KEYS: writeKeys.optional(),
  /** Requests per second per write key (token bucket); 0 turns the limit off. */
  RATE_LIMIT_PER_SECOND: z.coerce.number().min(0).default(500),
  RATE_LIMIT_BURST: int(1, 1_000_000).default(1000),
  /** Group commit: a flush waits at most this long for more requests to share one insert. */
  INGEST_FLUSH_MS: int(0, 1000).default(5),
  /** Group commit: flush as soon as this many messages are waiting. */
  INGEST_MAX_BATCH_ROWS: int(1, 1_000_000).default(10_000),
  /**
   * Users/accounts/memberships rows remembered as stored, so a flush skips rewriting them; their
   * last_seen may then trail the newest event by up to 60 s. 0 turns it off.
   */
  INGEST_SEEN_CACHE: int(0, 10_000_000).default(200_000),
  /**
   * Cluster mode: the ClickHouse cluster name (as in the server's `remote_servers`). Migrations then
   * emit `ON CLUSTER`, Replicated engines and Distributed tables over sharded local tables.
   */
  CLICKHOUSE_CLUSTER: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be a plain identifier (the cluster name in remote_servers)')
    .optional(),
  /**
   * Webhook targets in private and loopback ranges (RFC 1918, 127/8, ::1, fc00::/7, 100.64/10) are
   * allowed. Default: on with the embedded store (a single machine, receivers often beside it),
   * off with CLICKHOUSE_URL (a deployment). Link-local and cloud-metadata targets are never allowed.
   */
  WEBHOOK_ALLOW_PRIVATE: bool.optional(),
  /**
   * Readiness (`GET /ready`): the store must have accepted a write within this long (a stored
   * block, or else a probe row written by the check itself) and the outbox must be draining.
   */
  READY_INTERVAL_MS: int(100, 3_600_000).default(10_000),
  /** Workers: the first retry of a failed ingestion batch waits this long, doubling per attempt (≤ 12 h). */
  QUEUE_RETRY_BASE_SECONDS: int(0, 43_200).default(30),
  /** Public base URL of this service, for links in Slack messages (default: the address it listens on). */
  PUBLIC_URL: z.url({ protocol: /^https?$/ }).optional(),
  /** Tokens that may read the live signal stream (not manage anything), comma-separated, ≥ 16 characters each. */
  READ_TOKENS: z
    .string()
    .transform((raw) => raw.split(',').map((s) => s.trim()).filter(Boolean))
    .pipe(z.array(z.string().min(16, 'each read token must be at least 16 characters')).min(1, 'lists no token'))
    .optional(),
  /** Webhooks: one attempt is abandoned (and retried) after this long. */
  WEBHOOK_TIMEOUT_MS: int(100, 300_000).default(10_000),
  /** Webhooks: attempts before a delivery is dead-lettered (with the default backoff: about a day). */
  WEBHOOK_MAX_ATTEMPTS: int(1, 100).default(17),
  /** Webhooks: the first retry waits about this long, doubling per attempt (± 20 % jitter)… */
  WEBHOOK_BACKOFF_BASE_MS: int(1, 3_600_000).default(10_000),
  /** …up to this long between two attempts. */
  WEBHOOK_BACKOFF_MAX_MS: int(1, 86_400_000).default(4 * 3_600_000),
  /** Webhooks: attempts in flight at once per endpoint (endpoints never wait for each other). */
  WEBHOOK_CONCURRENCY: int(1, 256).default(8),
  /** Webhooks: how often the outbox re-reads the signal log without being woken (a fallback). */
  WEBHOOK_POLL_MS: int(10, 600_000).default(2000),
  /** Live stream: a comment line is sent this often so proxies keep the connection open. */
  STREAM_HEARTBEAT_MS: int(10, 600_000).default(15_000),
  /** Rules: every enabled rule is evaluated for every subject this often; 0 turns it off. */
  EVAL_INTERVAL_MS: int(0, 86_400_000).default(60_000),
  /** Rules: evaluate the subjects touched by ingestion (soon after it stores their events). */
  EVAL_ON_INGEST: bool.default(true),
  /**
   * What the rules read: `state` (each rule reads the per-day state when it holds what the rule
   * needs, the raw events otherwise; GET /v1/rules/:id says which) or `events` (every rule reads
   * the raw events, the reference).
   */
  RULES_BACKEND: z.enum(['state', 'events']).default('state'),
  /** Rules: touched subjects are collected this long before their evaluation (and incremental runs start at least this far apart). */
  EVAL_DEBOUNCE_MS: int(0, 600_000).default(250),
  /** Rules: split subjects by hash between this many instances… */
  EVAL_SHARDS: int(1, 1024).default(1),
  /** …of which this one evaluates shard number EVAL_SHARD (0-based, < EVAL_SHARDS). */
  EVAL_SHARD: int(0, 1023).default(0),
  /** Rules: store the default rule pack (rules/defaults/) on the first start. */
  RULES_DEFAULT_PACK: bool.default(true),
  /** Lifecycle: the main ladder, in order; the first stage is where every subject starts. */
  STAGES: stageList.default(['lead', 'mql', 'pql', 'sql', 'customer']),
  /** Lifecycle: the stages after the main ladder. */
  STAGES_AFTER: stageList.default(['churn_risk', 'churned']),
  /** Lifecycle: `kind:stage` pairs; a fired signal of that kind moves its subject there. */
  STAGE_SIGNALS: z.string().default('mql:mql,pql:pql,churn_risk:churn_risk'),
  /** Lifecycle: `plan:stage` pairs for the `plan` trait (`*` any other plan, `-` no move). */
  STAGE_PLANS: z.string().default('free:-,trial:-,cancelled:churned,canceled:churned,churned:churned,*:customer'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
}).superRefine((c, ctx) => {
  if (c.EVAL_SHARD >= c.EVAL_SHARDS) {
    ctx.addIssue({ code: 'custom', path: ['EVAL_SHARD'], message: `must be less than EVAL_SHARDS (${c.EVAL_SHARDS}); shards are numbered from 0` })
  }
})

export type WriteKey = { key: string; source: string }
export type Config = z.output<typeof EnvSchema>

export class ConfigError extends Error {
  override name = 'ConfigError'
}

/**
 * Parse the environment once, at the edge of the program. Empty strings count as unset, so
 * `PORT= npm start` means "the default", as shells and .env files usually intend.
 */
export function loadConfig(env: Record<string, string | undefined>): Config {
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''))
  const parsed = EnvSchema.safeParse(cleaned)
  if (parsed.success) return parsed.data
  const lines = parsed.error.issues.map((i) => `  ${i.path.join('.') || '(env)'}: ${i.message}`)
  throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`)
}

/** Whether webhook targets may be private or loopback addresses (WEBHOOK_ALLOW_PRIVATE, by default only on the embedded store). */
export const allowPrivateTargets = (c: Pick<Config, 'WEBHOOK_ALLOW_PRIVATE' | 'CLICKHOUSE_URL'>) => c.WEBHOOK_ALLOW_PRIVATE ?? !c.CLICKHOUSE_URL

import { type Config, ConfigError, loadConfig } from '../config.js'
import type { DeliveryMessage } from './deliveries.js'
import type { IngestEnvelope } from './envelope.js'
import type { QueueProducer } from './types.js'

/**
 * The bindings signalbox reads on Workers: the ingestion and delivery queues, and every variable of the Node
 * environment (`[vars]` in wrangler.toml, secrets set with `wrangler secret put`).
 */
export type WorkerEnv = {
  INGEST_QUEUE: QueueProducer<IngestEnvelope>
  /** Webhook deliveries (one message per delivery); without it the Worker records signals but sends no webhooks. */
  DELIVERY_QUEUE?: QueueProducer<DeliveryMessage>
} & Record<string, unknown>

/** What the edge cannot do without: no embedded engine, no DATA_DIR to keep generated secrets in. */
const REQUIRED_ON_EDGE = {
  CLICKHOUSE_URL: 'is required on Workers (there is no embedded engine on the edge)',
  ADMIN_TOKEN: 'is required on Workers (set it with `wrangler secret put ADMIN_TOKEN`)',
  WRITE_KEYS: 'is required on Workers (set it with `wrangler secret put WRITE_KEYS`)',
} as const

export type EdgeConfig = Config & Required<Pick<Config, keyof typeof REQUIRED_ON_EDGE>>

/**
 * Validate the Worker's bindings with the same zod schema as the Node environment
 * (`loadConfig`), so a bad value is reported the same way, naming the variable. Only text bindings
 * are variables; queues and other bindings are objects and are left out.
 */
export function configFromBindings(env: Record<string, unknown>): EdgeConfig {
  const vars: Record<string, string> = {}
  for (const [k, v] of Object.entries(env)) if (typeof v === 'string') vars[k] = v
  const missing = Object.entries(REQUIRED_ON_EDGE).filter(([k]) => !vars[k])
  let config: Config
  try {
    config = loadConfig(vars)
  } catch (err) {
    if (!(err instanceof ConfigError) || missing.length === 0) throw err
    throw new ConfigError(`${err.message}\n${missing.map(([k, m]) => `  ${k}: ${m}`).join('\n')}`)
  }
  if (missing.length > 0) {
    throw new ConfigError(`invalid configuration:\n${missing.map(([k, m]) => `  ${k}: ${m}`).join('\n')}`)
  }
  return config as EdgeConfig
}

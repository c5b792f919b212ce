import type { Logger } from 'pino'
import type { Evaluator } from '../rules/evaluator.js'
import type { Lifecycle } from './lifecycle/lifecycle.js'
import type { Config, WriteKey } from './config.js'
import type { Delivery } from './delivery/index.js'
import type { DeliveryRecord } from './delivery/outbox.js'
import type { SignalBus } from './signals.js'
import type { Store } from './store/store.js'
import type { EventSink } from '../ingest/writer.js'

/** What the app is built from; runtime entries (src/node.ts, src/worker.ts) assemble it. */
export type AppDeps = {
  config: Config
  store: Store
  sink: EventSink
  adminToken: string
  writeKeys: readonly WriteKey[]
  /** Tokens that read and change nothing (READ_TOKENS, or the generated one); default: READ_TOKENS. */
  readTokens?: readonly string[]
  logger: Logger
  /** Notified whenever signals fire or resolve (stream, outbox). */
  bus: SignalBus
  /** The clock, injected so time-dependent behaviour is testable. */
  now?: () => number
  /** The rule evaluator the runtime drives (POST /v1/evaluate shares its queue). */
  evaluator: Evaluator
  /** Lifecycle stages. */
  lifecycle: Lifecycle
  /** The webhook outbox and open live streams (Node); the routes work on the store without it. */
  delivery?: Delivery
  /**
   * Why a webhook URL is refused, checked when an endpoint is created or its URL changed (Node:
   * after resolving its name); without it, the URL's literal host is checked.
   */
  webhookTargetRefusal?: (url: string) => Promise<string | undefined>
  /** Hands a replayed delivery (POST /v1/deliveries/:id/retry) to this runtime's sender (Workers: the delivery queue). */
  onDeliveryReplayed?: (d: DeliveryRecord) => Promise<void>
}

/** Typed Hono context: handlers get services from here, never from `process.env`. */
export type AppEnv = {
  Variables: {
    requestId: string
    logger: Logger
    source: WriteKey
  }
}

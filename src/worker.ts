import type { Logger } from 'pino'
import type { Evaluator } from '../rules/evaluator.js'
import { createApp } from './app.js'
import { consumeIngestBatch } from './edge/consumer.js'
import { StateKeeper } from '../rules/state/keeper.js'
import { loadMeasures } from '../rules/state/measures.js'
import { evaluateOnIngest, runScheduled } from './edge/cron.js'
import { consumeDeliveryBatch, queueDeliveries, sendDeliveryMessages } from './edge/deliveries.js'
import { type EdgeConfig, configFromBindings, type WorkerEnv } from './edge/config.js'
import { createEdgeLogger } from './edge/logger.js'
import { QueueSink } from './edge/queue-sink.js'
import { openWebStore } from './edge/store.js'
import type { ExecutionContext, QueueBatch, ScheduledEvent } from './edge/types.js'
import { allowPrivateTargets, ConfigError } from './config.js'
import { retryPolicyFromConfig } from './delivery/backoff.js'
import { errorBody, ApiError } from './errors.js'
import { rulesServices } from './services.js'
import { SignalBus } from './signals.js'
import type { Store } from './store/store.js'

/**
 * The Cloudflare Workers entry: the same app as on Node, with the ingestion sink swapped for a
 * Cloudflare Queue, plus the queue consumer (which stores batches into ClickHouse) and the Cron
 * Trigger (which evaluates the rules). It holds no logic of its own.
 */
type Runtime = { config: EdgeConfig; store: Store; logger: Logger; evaluator: Evaluator; app: ReturnType<typeof createApp> }

/** The delivery queue's name in wrangler.toml (its batches are routed to the delivery consumer). */
const DELIVERY_QUEUE_NAME = 'signalbox-deliveries'

// One runtime per isolate and bindings object: built on first use, reused by later requests.
const runtimes = new WeakMap<object, Runtime>()

function runtimeFor(env: WorkerEnv): Runtime {
  let rt = runtimes.get(env)
  if (!rt) {
    const config = configFromBindings(env)
    const logger = createEdgeLogger(config)
    const store = openWebStore(config)
    const bus = new SignalBus()
    const sink = new QueueSink(env.INGEST_QUEUE)
    // No background interval on Workers (evaluator.start() is never called): the Cron Trigger and the queue consumer drive it.
    const { lifecycle, evaluator } = rulesServices(store, bus, config, { logger })
    const queue = env.DELIVERY_QUEUE
    // A replayed delivery (a new round, same id) goes to the delivery queue at once; should the
    // send fail, the next Cron Trigger queues it (it is open in the outbox).
    const onDeliveryReplayed = queue
      ? (d: { id: string }) =>
          sendDeliveryMessages(queue, [d.id]).catch((err) => logger.warn({ err }, 'webhooks: a replayed delivery could not be queued; the next scheduled run queues it'))
      : undefined
    const app = createApp({ config, store, sink, adminToken: config.ADMIN_TOKEN, writeKeys: config.WRITE_KEYS, logger, bus, evaluator, lifecycle, onDeliveryReplayed })
    rt = { config, store, logger, evaluator, app }
    runtimes.set(env, rt)
  }
  return rt
}

/** A configuration error names the variables (never their values) and answers 500 to every request. */
function misconfigured(err: unknown): Response {
  const vars = err instanceof ConfigError ? [...err.message.matchAll(/^\s+([A-Z_]+):/gm)].map((m) => m[1]) : []
  console.error(JSON.stringify({ level: 50, msg: 'signalbox: the Worker cannot start', err: String(err) }))
  const message = vars.length ? `the Worker's configuration is invalid: ${vars.join(', ')} (see the Worker's logs)` : 'the Worker could not start (see its logs)'
  return Response.json(errorBody(new ApiError({ code: 'INTERNAL_SERVER_ERROR', message })), { status: 500 })
}

export default {
  async fetch(request: Request, env: WorkerEnv, ctx: ExecutionContext): Promise<Response> {
    let rt: Runtime
    try {
      rt = runtimeFor(env)
    } catch (err) {
      return misconfigured(err)
    }
    return rt.app.fetch(request, env, ctx as never)
  },

  async queue(batch: QueueBatch<unknown>, env: WorkerEnv, ctx: ExecutionContext): Promise<void> {
    const rt = runtimeFor(env)
    if (batch.queue === DELIVERY_QUEUE_NAME || batch.queue.startsWith(`${DELIVERY_QUEUE_NAME}-`)) {
      const c = rt.config
      await consumeDeliveryBatch(batch, {
        store: rt.store,
        logger: rt.logger,
        policy: retryPolicyFromConfig(c),
        timeoutMs: c.WEBHOOK_TIMEOUT_MS,
        publicUrl: c.PUBLIC_URL,
        leaseMode: c.CLICKHOUSE_CLUSTER ? 'per-key' : 'batch',
        // The Worker checks the URL's literal host only: it cannot see what a name resolves to.
        allowPrivate: allowPrivateTargets(c),
      })
      return
    }
    await consumeIngestBatch(batch, {
      store: rt.store,
      logger: rt.logger,
      retryBaseSeconds: rt.config.QUEUE_RETRY_BASE_SECONDS,
      // The per-day state is kept here too, with the measures recorded by the Node side (which backfills new ones).
      state: new StateKeeper(rt.store, { measures: (await loadMeasures(rt.store)).map((m) => m.measure), logger: rt.logger }),
      onStored: rt.config.EVAL_ON_INGEST ? evaluateOnIngest(rt.evaluator, rt.logger, (work) => ctx.waitUntil(work)) : undefined,
    })
  },

  async scheduled(_event: ScheduledEvent, env: WorkerEnv): Promise<void> {
    const rt = runtimeFor(env)
    // Awaited: a failing run (the store unreachable) is reported as a failed invocation.
    const queue = env.DELIVERY_QUEUE
    await runScheduled({
      evaluator: rt.evaluator,
      logger: rt.logger,
      deliver: queue ? () => queueDeliveries({ store: rt.store, queue, now: Date.now }) : undefined,
    })
  },
}

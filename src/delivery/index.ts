import type { Logger } from 'pino'
import { allowPrivateTargets, type Config } from '../config.js'
import type { SignalBus } from '../signals.js'
import type { Store } from '../store/store.js'
import { retryPolicyFromConfig } from './backoff.js'
import { Dispatcher } from './dispatcher.js'
import { guardedFetch } from './guarded-fetch.js'
import { StreamHub } from './stream.js'

export { Dispatcher } from './dispatcher.js'
export { StreamHub } from './stream.js'

/**
 * Signal delivery on a long-running runtime (Node): the webhook outbox and the open live streams.
 * The routes work without it (endpoints and deliveries live in the store); it makes them happen.
 */
export class Delivery {
  readonly dispatcher: Dispatcher
  readonly streams = new StreamHub()

  constructor(opts: { store: Store; bus: SignalBus; logger: Logger; config: Config; now?: () => number }) {
    const c = opts.config
    this.dispatcher = new Dispatcher({
      store: opts.store,
      bus: opts.bus,
      logger: opts.logger,
      now: opts.now,
      policy: retryPolicyFromConfig(c),
      timeoutMs: c.WEBHOOK_TIMEOUT_MS,
      concurrency: c.WEBHOOK_CONCURRENCY,
      pollMs: c.WEBHOOK_POLL_MS,
      publicUrl: c.PUBLIC_URL,
      leaseMode: c.CLICKHOUSE_CLUSTER ? 'per-key' : 'batch',
      allowPrivate: allowPrivateTargets(c),
      fetch: guardedFetch(allowPrivateTargets(c)),
    })
  }

  /** Start delivering; `url` is where this server listens (the default base of links in Slack messages). */
  async start(url: string): Promise<void> {
    this.dispatcher.publicUrl ??= url
    await this.dispatcher.start()
  }

  /** End the live streams (call before closing the HTTP server, which waits for open responses). */
  closeStreams(): void {
    this.streams.closeAll()
  }

  /** Stop the outbox; what is in flight is recorded and resumes at the next start. */
  async stop(): Promise<void> {
    this.streams.closeAll()
    await this.dispatcher.stop()
  }
}

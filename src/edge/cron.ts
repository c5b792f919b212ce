import type { Logger } from 'pino'
import type { SignalBus } from '../signals.js'
import type { Store } from '../store/store.js'

export type CronDeps = { store: Store; logger: Logger; bus: SignalBus; now: () => number }

export type CronResult = { evaluated: boolean; fired: number; resolved: number; deliveries: number }

/**
 * The Cron Trigger: evaluate the rules as SQL on ClickHouse, then hand new signal events to the
 * webhook outbox and send what is due.
 * SEAM: filled in once the evaluator (rules/) and delivery (src/delivery/) modules exist.
 */
export async function runScheduled(deps: CronDeps): Promise<CronResult> {
  deps.logger.warn('scheduled run: the rule evaluator is not wired in yet')
  return { evaluated: false, fired: 0, resolved: 0, deliveries: 0 }
}

import type { Logger } from 'pino'
import type { EventRow } from '../../ingest/normalize.js'
import type { EvaluationResult, Evaluator } from '../../rules/evaluator.js'

export type CronDeps = {
  evaluator: Evaluator
  logger: Logger
  /** Record and queue the webhook deliveries of new signal events (src/edge/deliveries.ts). */
  deliver?: () => Promise<{ queued: number; requeued: number }>
}

export type CronResult = {
  fired: number
  resolved: number
  errors: EvaluationResult['errors']
  deliveries: { queued: number; requeued: number } | null
  ms: number
}

/**
 * The Cron Trigger: evaluate every enabled rule as SQL on ClickHouse (the same evaluator as on
 * Node: claims make a signal fire once even if a Node instance evaluates too), then hand the new
 * signal events to the webhook outbox (recorded, then sent to the delivery queue). A failing store fails the run loudly; the next trigger
 * evaluates again.
 */
export async function runScheduled(deps: CronDeps): Promise<CronResult> {
  const started = performance.now()
  const result = await deps.evaluator.evaluate()
  const deliveries = deps.deliver ? await deps.deliver() : null
  const out: CronResult = {
    fired: result.fired.length,
    resolved: result.resolved.length,
    errors: result.errors,
    deliveries,
    ms: Math.round(performance.now() - started),
  }
  deps.logger.info(out, 'scheduled evaluation')
  return out
}

/**
 * The queue consumer's `onStored` on Workers: the subjects a stored block touched are evaluated
 * right away (after the ack, under `waitUntil`), so a crossed threshold becomes a signal within
 * seconds instead of at the next Cron Trigger. They are the subjects Node's debounced run
 * evaluates for the same block (Evaluator.evaluateTouched and Evaluator.touch share touched.ts).
 */
export function evaluateOnIngest(evaluator: Pick<Evaluator, 'evaluateTouched'>, logger: Logger, waitUntil: (work: Promise<unknown>) => void) {
  return (events: EventRow[]) => waitUntil(evaluator.evaluateTouched(events).catch((err) => logger.error({ err }, 'incremental evaluation failed')))
}

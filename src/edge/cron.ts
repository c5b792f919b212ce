import type { Logger } from 'pino'
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

/** The subjects a block of stored events touches, for an incremental evaluation. */
export function touchedSubjects(events: readonly { account_id: string; user_id: string }[]) {
  const account = new Set<string>()
  const user = new Set<string>()
  for (const e of events) {
    if (e.account_id) account.add(e.account_id)
    if (e.user_id) user.add(e.user_id)
  }
  return { account: [...account], user: [...user] }
}

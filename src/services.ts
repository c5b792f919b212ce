import type { Logger } from 'pino'
import { Evaluator, type EvaluatorOptions } from '../rules/evaluator.js'
import type { Config } from './config.js'
import { Lifecycle, lifecycleFromConfig } from './lifecycle/lifecycle.js'
import type { SignalBus } from './signals.js'
import type { Store } from './store/store.js'

/**
 * The evaluator with the settings the environment gives it (EVAL_*, checked by loadConfig): the
 * rules layer takes plain options, never the Config.
 */
export function evaluatorFromConfig(
  store: Store,
  bus: SignalBus,
  config: Pick<Config, 'EVAL_INTERVAL_MS' | 'EVAL_DEBOUNCE_MS' | 'EVAL_SHARDS' | 'EVAL_SHARD'> & Partial<Pick<Config, 'CLICKHOUSE_CLUSTER' | 'RULES_BACKEND'>>,
  opts: { logger?: Logger; lifecycle?: Lifecycle; now?: () => number; state?: EvaluatorOptions['state'] } = {},
): Evaluator {
  return new Evaluator(store, bus, {
    ...opts,
    backend: config.RULES_BACKEND,
    intervalMs: config.EVAL_INTERVAL_MS,
    debounceMs: config.EVAL_DEBOUNCE_MS,
    shard: config.EVAL_SHARDS > 1 ? { count: config.EVAL_SHARDS, index: config.EVAL_SHARD } : undefined,
    // Replicated tables have no global insertion order: one deduplicated insert per claim there.
    claims: config.CLICKHOUSE_CLUSTER ? 'per-key' : 'batch',
  })
}

/** What both runtimes (src/server.ts, src/worker.ts) build from the config for the rules: lifecycle stages and the evaluator that moves them. */
export function rulesServices(store: Store, bus: SignalBus, config: Config, opts: { logger: Logger; state?: EvaluatorOptions['state'] }) {
  const lifecycle = new Lifecycle(store, lifecycleFromConfig(config))
  const evaluator = evaluatorFromConfig(store, bus, config, { logger: opts.logger, lifecycle, state: opts.state })
  return { lifecycle, evaluator }
}

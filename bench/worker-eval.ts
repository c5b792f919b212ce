/**
 * Evaluation time with EVAL_SHARDS=2 against 1, on the same store, for bench/worker.ts; run as its
 * own process (the embedded engine is one data directory per process). Generates EVENTS synthetic
 * events inside ClickHouse (bench/rules-data.ts), stores the default rule pack, then times a full
 * evaluation (every rule, every subject) by one evaluator and by two shard evaluators running at
 * once, from the same empty signal state each time, ROUNDS times alternately. Prints one JSON line.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { evaluatorFromConfig } from '../src/services.js'
import { applyDefaultPack } from '../rules/store.js'
import { loadConfig } from '../src/config.js'
import { SignalBus } from '../src/signals.js'
import { migrate } from '../src/store/migrate.js'
import { openStore } from '../src/store/node.js'
import { generate, generateDirectory } from './rules-data.js'

const EVENTS = Number(process.env.EVENTS ?? 1_000_000)
const ROUNDS = Number(process.env.ROUNDS ?? 3)
const NOW = Date.UTC(2026, 10, 20, 12)
const shape = { events: EVENTS, accounts: Math.max(10, Math.round(EVENTS / 500)), users: Math.max(100, Math.round(EVENTS / 50)), days: 60, now: NOW }

const dir = mkdtempSync(join(tmpdir(), 'signalbox-bench-eval-'))
const store = await openStore(loadConfig({ DATA_DIR: dir }))
try {
  await migrate(store)
  const t0 = performance.now()
  await generateDirectory(store, shape)
  await generate(store, shape)
  const generateSeconds = (performance.now() - t0) / 1000
  const rules = await applyDefaultPack(store, NOW)
  const stored = Number((await store.query<{ n: number }>('SELECT count() AS n FROM events_v1'))[0]?.n)

  const reset = async () => {
    for (const t of ['signals_v1', 'signal_events_v1', 'signal_claims_v1', 'stage_transitions_v1']) await store.command(`TRUNCATE TABLE IF EXISTS ${t}`)
  }
  const evaluate = async (shards: number) => {
    await reset()
    const instances = Array.from({ length: shards }, (_, i) =>
      evaluatorFromConfig(store, new SignalBus(), loadConfig({ EVAL_INTERVAL_MS: '0', EVAL_SHARDS: String(shards), EVAL_SHARD: String(i) }), { now: () => NOW }),
    )
    const started = performance.now()
    const results = await Promise.all(instances.map((e) => e.evaluate()))
    const ms = performance.now() - started
    const errors = results.flatMap((r) => r.errors)
    if (errors.length) throw new Error(`evaluation errors: ${JSON.stringify(errors)}`)
    return { ms, fired: results.reduce((n, r) => n + r.fired.length, 0) }
  }

  await evaluate(1) // warm-up: caches, JIT
  const one: number[] = []
  const two: number[] = []
  let fired1 = 0
  let fired2 = 0
  for (let i = 0; i < ROUNDS; i++) {
    const a = await evaluate(1)
    const b = await evaluate(2)
    one.push(a.ms)
    two.push(b.ms)
    fired1 = a.fired
    fired2 = b.fired
  }
  if (fired1 !== fired2) throw new Error(`one evaluator fired ${fired1} signals, two shards ${fired2}`)
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] as number
  process.stdout.write(
    `${JSON.stringify({ events: stored, accounts: shape.accounts, users: shape.users, rules, fired: fired1, generateSeconds, oneMs: median(one), twoMs: median(two), one, two })}\n`,
  )
} finally {
  await store.close()
  rmSync(dir, { recursive: true, force: true })
}

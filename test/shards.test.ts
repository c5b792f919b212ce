import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Evaluator } from '../rules/evaluator.js'
import { evaluatorFromConfig } from '../src/services.js'
import { parseRule } from '../rules/schema.js'
import { putRule } from '../rules/store.js'
import { loadConfig } from '../src/config.js'
import { SignalBus } from '../src/signals.js'
import { DAY, HOUR, NOW, ev, openRuleStore } from './rules-fixtures.js'

// Evaluator scale-out: several service instances share the rule evaluation on one store, split by
// EVAL_SHARDS / EVAL_SHARD (a hash of the subject id), and a signal fires once even when two
// instances evaluate the same subject at the same time.

let db: Awaited<ReturnType<typeof openRuleStore>>
beforeAll(async () => {
  db = await openRuleStore()
  await putRule(db.store, parseRule({ id: 'acct-active', kind: 'pql', subject: 'account', when: { all: [{ metric: 'count', event: 'Shard Tested', window: '7d', op: 'gte', value: 2 }] } }), '', NOW)
  await putRule(db.store, parseRule({ id: 'user-active', kind: 'mql', subject: 'user', when: { all: [{ metric: 'count', event: 'Shard Tested', window: '7d', op: 'gte', value: 2 }] } }), '', NOW)
})
afterAll(async () => {
  await db?.close()
})

/** An instance as the environment configures it (the same path as `npm start`). */
const instance = (env: Record<string, string>, now = NOW) => {
  const config = loadConfig({ EVAL_INTERVAL_MS: '0', ...env })
  return evaluatorFromConfig(db.store, new SignalBus(), config, { now: () => now })
}
const accounts = (from: number, n: number) => Array.from({ length: n }, (_, i) => `acct-${from + i}`)
const activity = (ids: string[], at = NOW - HOUR) =>
  db.put(ids.flatMap((a) => [0, 1].map((k) => ev({ at: at - k * HOUR, event: 'Shard Tested', accountId: a, userId: `user-of-${a}` }))))

/** How often each (rule, subject) fired and resolved, from the signal log. */
async function log() {
  const rows = await db.store.query<{ rule_id: string; subject_id: string; type: string; n: number }>(
    'SELECT rule_id, subject_id, type, count() AS n FROM signal_events_v1 GROUP BY rule_id, subject_id, type',
  )
  return rows.map((r) => ({ ...r, n: Number(r.n) }))
}

describe('EVAL_SHARDS / EVAL_SHARD', () => {
  it('two shards split the subjects: disjoint, and together every subject once', async () => {
    const ids = accounts(0, 40)
    await activity(ids)
    const [a, b] = await Promise.all([instance({ EVAL_SHARDS: '2', EVAL_SHARD: '0' }).evaluate(), instance({ EVAL_SHARDS: '2', EVAL_SHARD: '1' }).evaluate()])
    for (const [rule, subjects] of [['acct-active', ids], ['user-active', ids.map((x) => `user-of-${x}`)]] as const) {
      const fa = a.fired.filter((s) => s.rule_id === rule).map((s) => s.subject.id)
      const fb = b.fired.filter((s) => s.rule_id === rule).map((s) => s.subject.id)
      // Both shards had work (a hash split of 40 subjects), none of it shared.
      expect(fa.length).toBeGreaterThan(5)
      expect(fb.length).toBeGreaterThan(5)
      expect(fa.filter((x) => fb.includes(x))).toEqual([])
      expect([...fa, ...fb].sort()).toEqual([...subjects].sort())
    }
    // The split is the hash the evaluator documents: cityHash64(subject id) % EVAL_SHARDS.
    const [row] = await db.store.query<{ n: number }>('SELECT count() AS n FROM (SELECT arrayJoin({ids:Array(String)}) AS id) WHERE cityHash64(id) % 2 = 0', { ids })
    expect(a.fired.filter((s) => s.rule_id === 'acct-active')).toHaveLength(Number(row?.n))
  })

  it('refuses a shard outside EVAL_SHARDS at start, naming the variable', () => {
    expect(() => instance({ EVAL_SHARDS: '2', EVAL_SHARD: '2' })).toThrow(/EVAL_SHARD: must be less than EVAL_SHARDS \(2\)/)
  })
})

describe('two instances evaluating the same subjects', () => {
  it('fire each signal once: unsharded twins, a sharded instance and an incremental run, all at once', async () => {
    const ids = accounts(100, 30)
    await activity(ids)
    const twin = () => instance({})
    const incremental = instance({})
    const results = await Promise.all([
      twin().evaluate(),
      twin().evaluate(),
      instance({ EVAL_SHARDS: '2', EVAL_SHARD: '1' }).evaluate(),
      incremental.evaluate({ subjects: { account: ids, user: ids.map((x) => `user-of-${x}`) } }),
    ])
    const fired = results.flatMap((r) => r.fired)
    // Each entry is owned by exactly one of the four.
    for (const rule of ['acct-active', 'user-active']) {
      const subjects = fired.filter((s) => s.rule_id === rule && s.subject.id.includes('acct-1')).map((s) => s.subject.id)
      expect(subjects).toHaveLength(ids.length)
      expect(new Set(subjects).size).toBe(ids.length)
    }
    const counts = (await log()).filter((r) => r.type === 'signal.fired')
    expect(counts.every((r) => r.n === 1)).toBe(true)
    // Every subject of both tests fired once per rule: 70 accounts, 70 users.
    expect(counts.filter((r) => r.rule_id === 'acct-active')).toHaveLength(70)
    expect(counts.filter((r) => r.rule_id === 'user-active')).toHaveLength(70)
  })

  it('resolve each signal once when the subjects leave the condition, whoever evaluates', async () => {
    const later = NOW + 8 * DAY
    const evaluators: Evaluator[] = [
      instance({}, later),
      instance({}, later),
      instance({ EVAL_SHARDS: '2', EVAL_SHARD: '0' }, later),
      instance({ EVAL_SHARDS: '2', EVAL_SHARD: '1' }, later),
    ]
    const results = await Promise.all(evaluators.map((e) => e.evaluate()))
    expect(results.flatMap((r) => r.resolved)).toHaveLength(140)
    const resolved = (await log()).filter((r) => r.type === 'signal.resolved')
    expect(resolved).toHaveLength(140)
    expect(resolved.every((r) => r.n === 1)).toBe(true)
    const open = await db.store.query<{ n: number }>("SELECT count() AS n FROM signals_v1 FINAL WHERE status = 'open'")
    expect(Number(open[0]?.n)).toBe(0)
  })
})

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Evaluator, loadEntryStates } from '../rules/evaluator.js'
import { runRule } from '../rules/run.js'
import { parseRule } from '../rules/schema.js'
import { putRule } from '../rules/store.js'
import { SignalBus } from '../src/signals.js'
import { DAY, HOUR, NOW, ev, openRuleStore } from './rules-fixtures.js'

// One shard predicate (src/store/shard.ts): a subject's rule rows (the compiler) and its entry
// states (the signal queries) are read by the same shard, for any EVAL_SHARDS.

let db: Awaited<ReturnType<typeof openRuleStore>>
const rule = parseRule({ id: 'probe', kind: 'pql', subject: 'account', when: { all: [{ metric: 'count', event: 'Probe', window: '7d', op: 'gte', value: 1 }] } })
const ids = Array.from({ length: 60 }, (_, i) => `probe-${i}`)

beforeAll(async () => {
  db = await openRuleStore()
  await putRule(db.store, rule, '', NOW)
  await db.put(ids.map((a) => ev({ at: NOW - HOUR, event: 'Probe', accountId: a })))
  // Every subject gets a signal, so each has an entry state to be read.
  const fired = await new Evaluator(db.store, new SignalBus(), { now: () => NOW }).evaluate()
  expect(fired.fired).toHaveLength(ids.length)
})
afterAll(async () => {
  await db?.close()
})

describe('the shard of a subject', () => {
  it.each([2, 3, 7])('with %i shards: the same for the rule query and the entry states, cityHash64(id) modulo the count', async (count) => {
    const seen = new Set<string>()
    for (let index = 0; index < count; index++) {
      const shard = { count, index }
      const matched = (await runRule(db.store, rule, { asOf: NOW + DAY, shard })).map((m) => m.subjectId).sort()
      const states = [...((await loadEntryStates(db.store, ['probe'], 'account', undefined, shard)).get('probe')?.keys() ?? [])].sort()
      const [expected] = await db.store.query<{ ids: string[] }>(
        'SELECT arraySort(groupArray(id)) AS ids FROM (SELECT arrayJoin({ids:Array(String)}) AS id) WHERE cityHash64(id) % {n:UInt64} = {i:UInt64}',
        { ids, n: count, i: index },
      )
      expect(matched).toEqual(expected?.ids)
      expect(states).toEqual(matched)
      for (const id of matched) {
        expect(seen.has(id)).toBe(false)
        seen.add(id)
      }
    }
    // Together the shards hold every subject once.
    expect(seen.size).toBe(ids.length)
  })
})

import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { compileRule } from '../rules/compile.js'
import { runRule } from '../rules/run.js'
import { parseRule } from '../rules/schema.js'
import { DAY, HOUR, NOW, ev, group, many, openRuleStore } from './rules-fixtures.js'

let db: Awaited<ReturnType<typeof openRuleStore>>
beforeAll(async () => {
  db = await openRuleStore()
})
afterAll(async () => {
  await db.close()
})
beforeEach(async () => {
  await db.reset()
})

const pql = parseRule({
  id: 'pql-active-team',
  kind: 'pql',
  subject: 'account',
  where: [{ trait: 'plan', op: 'eq', value: 'free' }],
  when: {
    all: [
      { metric: 'count', event: 'Message Sent', window: '30d', op: 'gte', value: 20 },
      { metric: 'active_users', window: '7d', op: 'gte', value: 2 },
    ],
  },
})

describe('count', () => {
  it('fires at the threshold, not just under it', async () => {
    await db.put([
      group('u1', 'acc_at', { plan: 'free' }, NOW - 40 * DAY),
      group('u2', 'acc_at', {}, NOW - 40 * DAY),
      group('u3', 'acc_under', { plan: 'free' }, NOW - 40 * DAY),
      group('u4', 'acc_under', {}, NOW - 40 * DAY),
      ...many(20, NOW - 30 * DAY, NOW, { event: 'Message Sent', userId: 'u1' }),
      ev({ at: NOW - HOUR, event: 'Opened', userId: 'u2' }),
      ...many(19, NOW - 30 * DAY, NOW, { event: 'Message Sent', userId: 'u3' }),
      ev({ at: NOW - HOUR, event: 'Opened', userId: 'u4' }),
    ])
    const rows = await runRule(db.store, pql, { asOf: NOW })
    expect(rows.map((r) => r.subjectId)).toEqual(['acc_at'])
    const all = await runRule(db.store, pql, { asOf: NOW, subjectIds: ['acc_at', 'acc_under', 'nobody'] })
    expect(all.map((r) => [r.subjectId, r.matched, r.reasons.map((x) => x.measured)])).toEqual([
      ['acc_at', true, ['free', 20, 2]],
      ['acc_under', false, ['free', 19, 2]],
      ['nobody', false, [null, 0, 0]],
    ])
  })
})

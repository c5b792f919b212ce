import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runRule } from '../rules/run.js'
import { parseRule } from '../rules/schema.js'
import { usagePerDay } from '../src/subjects/queries.js'
import { utcDate } from '../src/time.js'
import { DAY, HOUR, NOW, ev, group, identify, openRuleStore } from './rules-fixtures.js'

/**
 * One attribution (rules/attribution.ts): a subject's usage series (the account and user pages,
 * the workspace's charts) counts the same events and users as the rules measure, on a fixture
 * with anonymous history joined by identify, an aliased earlier id, two hops, a member of two
 * accounts, a member made by a tagged event, and events of nobody's member.
 */
let db: Awaited<ReturnType<typeof openRuleStore>>
beforeAll(async () => {
  db = await openRuleStore()
  await db.put([
    // u1: anonymous history joined by identify, then untagged and tagged events.
    ev({ type: 'page', anonymousId: 'anon-1', at: NOW - 9 * DAY - 3 * HOUR }),
    ev({ type: 'page', anonymousId: 'anon-1', at: NOW - 9 * DAY - 2 * HOUR }),
    identify('u1', {}, NOW - 9 * DAY, 'anon-1'),
    group('u1', 'A', { plan: 'free' }, NOW - 9 * DAY),
    ev({ event: 'Message Sent', userId: 'u1', at: NOW - 5 * DAY }),
    ev({ event: 'Message Sent', userId: 'u1', at: NOW - 5 * DAY + HOUR }),
    ev({ event: 'Message Sent', userId: 'u1', accountId: 'A', at: NOW - 2 * DAY }),
    // u2: history under an earlier id, aliased; that id's own anonymous history (two hops).
    ev({ type: 'page', anonymousId: 'anon-2', at: NOW - 8 * DAY }),
    identify('u2-old', {}, NOW - 8 * DAY + HOUR, 'anon-2'),
    ev({ event: 'Message Sent', userId: 'u2-old', at: NOW - 7 * DAY }),
    ev({ type: 'alias', previousId: 'u2-old', userId: 'u2', at: NOW - 6 * DAY }),
    group('u2', 'A', {}, NOW - 6 * DAY),
    group('u2', 'B', {}, NOW - 6 * DAY),
    ev({ event: 'Message Sent', userId: 'u2', at: NOW - 5 * DAY }),
    // An event tagged with A (context.groupId) counts for A and makes its user a member: u9's untagged event counts too.
    ev({ event: 'Message Sent', userId: 'u9', accountId: 'A', at: NOW - 5 * DAY }),
    ev({ event: 'Message Sent', userId: 'u9', at: NOW - 5 * DAY }),
    // Nobody's member: no account.
    ev({ event: 'Message Sent', userId: 'u8', at: NOW - 5 * DAY }),
    // An anonymous visitor never identified: nobody's.
    ev({ type: 'page', anonymousId: 'anon-9', at: NOW - 5 * DAY }),
  ])
})
afterAll(async () => {
  await db.close()
})

const rule = (subject: 'account' | 'user', metric: 'count' | 'active_users') =>
  parseRule({ id: 'r', kind: 'custom', subject, when: { all: [{ metric, window: '1d', op: 'gte', value: 1 }] } })

/** The rule's measured value over the UTC day `day` (its last millisecond as the moment). */
async function measuredOn(subject: 'account' | 'user', metric: 'count' | 'active_users', id: string, day: string) {
  const [row] = await runRule(db.store, rule(subject, metric), { asOf: Date.parse(`${day}T00:00:00Z`) + DAY - 1, subjectIds: [id] })
  return row?.reasons[0]?.measured
}

describe('a subject’s usage series and the rules agree', () => {
  it.each([
    ['account', 'A', 10],
    ['account', 'B', 3],
    ['user', 'u1', 5],
    ['user', 'u2', 3],
  ] as const)('%s %s: %i events in all, and each day’s events and active users as the rules measure them', async (type, id, total) => {
    const usage = await usagePerDay(db.store, type, id, NOW)
    expect(usage.reduce((n, d) => n + d.events, 0)).toBe(total)
    for (const d of usage.filter((x) => x.events > 0)) {
      expect([d.day, d.events]).toEqual([d.day, await measuredOn(type, 'count', id, d.day)])
      expect([d.day, d.active_users]).toEqual([d.day, await measuredOn(type, 'active_users', id, d.day)])
    }
  })

  it('days without activity read zero, oldest first, the last day is today', async () => {
    const usage = await usagePerDay(db.store, 'account', 'A', NOW)
    expect(usage).toHaveLength(30)
    expect(usage.at(-1)?.day).toBe(utcDate(NOW))
    expect(usage.find((d) => d.day === utcDate(NOW - 3 * DAY))).toEqual({ day: utcDate(NOW - 3 * DAY), events: 0, active_users: 0 })
  })
})

import { describe, expect, it } from 'vitest'
import { compileRule } from '../rules/compile.js'
import { parseRule } from '../rules/schema.js'

/**
 * The compiled SQL of each metric kind, as a snapshot to read in review
 * (test/__snapshots__/rules-compile-sql.test.ts.snap). The same queries run on fixtures in
 * rules-compile.test.ts.
 */
const asOf = Date.UTC(2026, 2, 1, 12)

const cases: Record<string, unknown> = {
  'count with property filters and a trait filter': {
    id: 'pql',
    kind: 'pql',
    subject: 'account',
    where: [{ trait: 'plan', op: 'eq', value: 'free' }],
    when: {
      all: [{ metric: 'count', event: 'Message Sent', where: [{ property: 'channel', op: 'in', value: ['general', 'random'] }], window: '30d', op: 'gte', value: 2000 }],
    },
  },
  'count over whole days (rollup) and active_users': {
    id: 'pql',
    kind: 'pql',
    subject: 'account',
    when: {
      all: [
        { metric: 'count', event: 'Message Sent', window: '30d', op: 'gte', value: 2000 },
        { metric: 'active_users', window: '7d', op: 'gte', value: 5 },
      ],
    },
  },
  active_days: { id: 'r', kind: 'custom', subject: 'user', when: { all: [{ metric: 'active_days', event: ['A', 'B'], window: '30d', op: 'gte', value: 3 }] } },
  'sum / avg / max of a property': {
    id: 'r',
    kind: 'custom',
    subject: 'account',
    when: {
      any: [
        { metric: 'sum', property: 'amount', event: 'Order', window: '30d', op: 'gte', value: 1000 },
        { metric: 'avg', property: 'amount', event: 'Order', window: '30d', op: 'gte', value: 100 },
        { metric: 'max', property: 'amount', event: 'Order', window: '30d', op: 'gte', value: 500 },
      ],
    },
  },
  days_since_last_seen: { id: 'r', kind: 'churn_risk', subject: 'account', when: { all: [{ metric: 'days_since_last_seen', window: '90d', op: 'gte', value: 14 }] } },
  'baseline drop with min_baseline': {
    id: 'churn',
    kind: 'churn_risk',
    subject: 'account',
    where: [{ trait: 'plan', op: 'neq', value: 'free' }],
    when: { all: [{ metric: 'active_users', window: '7d', baseline: { window: '28d', offset: '7d' }, op: 'drop_pct_gte', value: 40, min_baseline: 3 }] },
  },
  seat_usage: { id: 'r', kind: 'expansion', subject: 'account', when: { all: [{ metric: 'seat_usage', window: '30d', op: 'gte', value: 0.9 }] } },
  'champion (top user)': { id: 'r', kind: 'churn_risk', subject: 'account', when: { all: [{ metric: 'champion_quiet', window: '90d', op: 'gte', value: 14 }] } },
  'champion (users with a trait)': {
    id: 'r',
    kind: 'churn_risk',
    subject: 'account',
    when: { all: [{ metric: 'champion_quiet', champion: { trait: 'role', op: 'eq', value: 'champion' }, op: 'gte', value: 14 }] },
  },
  'trait conditions only': {
    id: 'r',
    kind: 'custom',
    subject: 'user',
    when: { any: [{ trait: 'title', op: 'contains', value: ['VP', 'Head'] }, { trait: 'seats', op: 'gt', value: 10 }, { trait: 'email', op: 'exists', value: false }] },
  },
  'score with decay, caps, a condition item and a trait item': {
    id: 'mql',
    kind: 'mql',
    subject: 'user',
    score: {
      half_life: '14d',
      items: [
        { event: 'Page Viewed', where: [{ property: 'path', op: 'eq', value: '/pricing' }], points: 10, max: 30 },
        { event: 'Webinar Registered', points: 20 },
        { when: { metric: 'active_days', event: 'Page Viewed', window: '30d', op: 'gte', value: 3 }, points: 10 },
        { trait: 'title', op: 'contains', value: 'VP', points: 15 },
      ],
    },
    threshold: 50,
  },
}

describe('compiled SQL', () => {
  it.each(Object.entries(cases))('%s', (_name, doc) => {
    const { sql, params, reasons } = compileRule(parseRule(doc), { asOf })
    expect(`${sql}\n\n-- params: ${JSON.stringify(params, null, 1)}\n\n-- reasons: ${JSON.stringify(reasons, null, 1)}`).toMatchSnapshot()
  })

  it('incremental and sharded runs narrow the scans to the subjects', () => {
    const { sql, params } = compileRule(parseRule(cases['count over whole days (rollup) and active_users']), {
      asOf,
      subjectIds: ['acc_1', 'acc_2'],
      scope: { keys: ['u_1', 'anon_1'], links: { from: ['anon_1'], to: ['u_1'] }, rollups: true },
      shard: { count: 4, index: 1 },
      rollups: false,
    })
    expect(`${sql}\n\n-- params: ${JSON.stringify(params, null, 1)}`).toMatchSnapshot()
    // The scope arrives bound: identities_v1 is not read again.
    expect(sql).not.toContain('identities_v1')
    expect(Object.values(params)).toContainEqual(['u_1', 'anon_1'])
    expect(sql).not.toContain('WHERE matched = 1')
  })
})

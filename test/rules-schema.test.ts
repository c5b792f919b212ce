import { parse } from 'yaml'
import { describe, expect, it } from 'vitest'
import { RuleError } from '../rules/errors.js'
import { toApiError } from '../src/errors.js'
import { parseDuration, parseRule, ruleJsonSchema } from '../rules/schema.js'

/** The three examples of SPEC.md "Rules and signals", verbatim. */
const SPEC_EXAMPLES = [
  `id: pql-active-team
kind: pql                  # pql | mql | churn_risk | expansion | custom
subject: account           # account | user
description: Free workspace with an active team
where:                     # filter on the subject's latest traits
  - { trait: plan, op: eq, value: free }
when:                      # all / any, nestable
  all:
    - { metric: count, event: Message Sent, window: 30d, op: gte, value: 2000 }
    - { metric: active_users, window: 7d, op: gte, value: 5 }
cooldown: 30d              # a subject fires this rule at most once per cooldown`,
  `id: mql-engaged-lead
kind: mql
subject: user
score:                     # weighted engagement + fit score
  half_life: 14d           # points decay with age
  items:
    - { event: Page Viewed, where: [{ property: path, op: eq, value: /pricing }], points: 10, max: 30 }
    - { event: Webinar Registered, points: 20 }
    - { trait: title, op: contains, value: VP, points: 15 }
threshold: 50`,
  `id: churn-usage-drop
kind: churn_risk
subject: account
where:
  - { trait: plan, op: neq, value: free }
when:
  all:
    - metric: active_users
      window: 7d
      baseline: { window: 28d, offset: 7d }   # the 28 days before the last 7, per day
      op: drop_pct_gte
      value: 40
      min_baseline: 3`,
]

/** The details of the error parseRule throws for `doc`. */
function problems(doc: unknown) {
  try {
    parseRule(doc)
  } catch (err) {
    expect(err).toBeInstanceOf(RuleError)
    const e = err as RuleError
    expect(e.code).toBe('INVALID')
    // The API answers it as a 400 with the same details.
    expect(toApiError(e)).toMatchObject({ status: 400, code: 'BAD_REQUEST', details: e.details })
    expect(e.message).toContain(e.details?.[0]?.path)
    return e.details
  }
  throw new Error('expected the rule to be rejected')
}

const base = { id: 'r1', kind: 'pql', subject: 'account' }
const count = { metric: 'count', event: 'E', window: '30d', op: 'gte', value: 1 }

describe('rule documents', () => {
  it.each(SPEC_EXAMPLES)('accepts the SPEC example %#', (text) => {
    const rule = parseRule(parse(text))
    expect(rule.enabled).toBe(true)
    expect(rule.id).toMatch(/^[a-z-]+$/)
  })

  it('keeps what it was given and defaults enabled to true', () => {
    const rule = parseRule({ ...base, sources: ['app'], when: { any: [count, { all: [{ trait: 'plan', op: 'exists' }] }] }, cooldown: '7d' })
    expect(rule).toEqual({ ...base, sources: ['app'], when: { any: [count, { all: [{ trait: 'plan', op: 'exists' }] }] }, cooldown: '7d', enabled: true })
  })

  it('accepts every metric kind', () => {
    const metrics = [
      count,
      { metric: 'active_users', window: '7d', op: 'gte', value: 3 },
      { metric: 'active_days', event: ['A', 'B'], window: '30d', op: 'gte', value: 3 },
      { metric: 'sum', property: 'amount', event: 'Order', window: '30d', op: 'gt', value: 100 },
      { metric: 'avg', property: 'amount', window: '30d', op: 'lt', value: 100 },
      { metric: 'max', property: 'amount', window: '30d', op: 'lte', value: 100 },
      { metric: 'days_since_last_seen', op: 'gte', value: 14 },
      { metric: 'seat_usage', op: 'gte', value: 0.9 },
      { metric: 'champion_quiet', op: 'gte', value: 14 },
      { metric: 'champion_quiet', champion: { trait: 'role', op: 'eq', value: 'admin' }, op: 'gte', value: 14 },
      { metric: 'count', window: '7d', baseline: { window: '28d', offset: '7d' }, op: 'rise_pct_gte', value: 50, min_baseline: 1 },
    ]
    expect(parseRule({ ...base, when: { all: metrics } }).when).toMatchObject({ all: metrics })
  })

  it.each([
    ['a bad duration', { ...base, when: { all: [{ ...count, window: '30x' }] } }, 'when.all.0.window', /duration/],
    ['a zero duration', { ...base, when: { all: [{ ...count, window: '0d' }] } }, 'when.all.0.window', /longer than zero/],
    ['an unknown metric', { ...base, when: { all: [{ ...count, metric: 'counts' }] } }, 'when.all.0.metric', /count.*active_users/],
    ['a misspelt key', { ...base, treshold: 5, when: { all: [count] } }, '(root)', /treshold/],
    ['a misspelt key in a condition', { ...base, when: { all: [{ ...count, windw: '7d' }] } }, 'when.all.0', /windw/],
    ['a drop without a baseline', { ...base, when: { all: [{ ...count, op: 'drop_pct_gte' }] } }, 'when.all.0.baseline', /needs a baseline/],
    ['a baseline with a plain comparison', { ...base, when: { all: [{ ...count, baseline: { window: '7d' } }] } }, 'when.all.0.op', /drop_pct_gte or rise_pct_gte/],
    ['a score without a threshold', { ...base, score: { items: [{ event: 'E', points: 1 }] } }, 'threshold', /needs a threshold/],
    ['both when and score', { ...base, when: { all: [count] }, score: { items: [{ event: 'E', points: 1 }] }, threshold: 1 }, 'score', /either when or score/],
    ['neither when nor score', { ...base }, 'when', /needs either when/],
    ['in without a list', { ...base, where: [{ trait: 'plan', op: 'in', value: 'free' }], when: { all: [count] } }, 'where.0.value', /list/],
    ['gt without a number', { ...base, when: { all: [{ trait: 'seats', op: 'gt', value: 'ten' }] } }, 'when.all.0.value', /number/],
    ['a condition of no known shape', { ...base, when: { all: [{ foo: 1 }] } }, 'when.all.0', /metric, trait, all, any/],
    ['a nested problem', { ...base, when: { any: [{ trait: 'a', op: 'exists' }, { all: [{ ...count, value: 'x' }] }] } }, 'when.any.1.all.0.value', /expected number/],
    ['an unknown kind', { ...base, kind: 'sql', when: { all: [count] } }, 'kind', /pql/],
    ['an account metric on a user rule', { ...base, subject: 'user', when: { all: [{ metric: 'seat_usage', op: 'gte', value: 1 }] } }, 'when.all.0.metric', /account rules/],
    ['an empty group', { ...base, when: { all: [] } }, 'when.all', /at least one/],
    ['an empty event name', { ...base, when: { all: [{ ...count, event: '' }] } }, 'when.all.0.event', /empty/],
    ['a bad id', { ...base, id: 'has space', when: { all: [count] } }, 'id', /letters, digits/],
    ['a score item of no known shape', { ...base, score: { items: [{ points: 1 }] }, threshold: 1 }, 'score.items.0', /event, trait, when/],
  ])('rejects %s, naming the path', (_name, doc, path, message) => {
    const details = problems(doc)
    expect(details?.[0]?.path).toBe(path)
    expect(details?.[0]?.message).toMatch(message)
  })

  it('reports every problem, not only the first', () => {
    const details = problems({ ...base, kind: 'nope', when: { all: [{ ...count, window: 'x' }, { ...count, op: 'about' }] } })
    expect(details?.map((d) => d.path).sort()).toEqual(['kind', 'when.all.0.window', 'when.all.1.op'])
  })

  it('rejects what is not an object', () => {
    expect(problems('id: x')?.[0]).toEqual({ path: '(root)', message: expect.stringMatching(/expected object/) })
  })
})

describe('the published JSON Schema', () => {
  const schema = ruleJsonSchema() as Record<string, any>

  it('describes the document, its strictness and its recursion', () => {
    expect(schema.$schema).toMatch(/json-schema.org/)
    expect(schema.type).toBe('object')
    expect(schema.additionalProperties).toBe(false)
    expect(Object.keys(schema.properties)).toEqual(
      expect.arrayContaining(['id', 'kind', 'subject', 'description', 'sources', 'where', 'when', 'score', 'threshold', 'cooldown', 'enabled']),
    )
    expect(schema.required).toEqual(['id', 'kind', 'subject'])
    expect(schema.properties.kind.enum).toEqual(['pql', 'mql', 'churn_risk', 'expansion', 'custom'])
    // Nested all/any refer back to the condition definition.
    expect(JSON.stringify(schema)).toContain('"$ref"')
    expect(JSON.stringify(schema)).toContain('drop_pct_gte')
    expect(JSON.stringify(schema)).toContain('champion_quiet')
  })

  it('is plain JSON', () => {
    expect(JSON.parse(JSON.stringify(schema))).toEqual(schema)
  })
})

describe('parseDuration', () => {
  it.each([
    ['30d', 30 * 86_400_000],
    ['12h', 12 * 3_600_000],
    ['15m', 15 * 60_000],
    ['90s', 90_000],
    ['500ms', 500],
    ['2w', 14 * 86_400_000],
  ])('%s', (s, ms) => expect(parseDuration(s)).toBe(ms))

  it.each(['', '30', 'd', '1.5d', '-1d', '30 days'])('rejects %j', (s) => {
    expect(() => parseDuration(s)).toThrow(RuleError)
  })
})

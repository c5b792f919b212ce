import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { compileRule } from '../rules/compile.js'
import { runRule } from '../rules/run.js'
import { parseRule } from '../rules/schema.js'
import { DAY, NOW, ev, group, identify, openRuleStore } from './rules-fixtures.js'

/**
 * Names and values a rule brings — event, property and trait names, values, sources, subject ids —
 * are data: bound as query parameters, never part of the SQL text, so quotes, backslashes, SQL
 * fragments and things that look like placeholders match literally and execute nothing.
 */
const NASTY = [
  "Robert'); DROP TABLE events_v1; --",
  'back\\slash\\',
  'quote " and \' and `tick`',
  '{x:String} {p0:UInt8}x',
  "') OR 1=1 OR ('",
  "x' UNION ALL SELECT name, 1, 1, '[]' FROM system.tables --",
  '$1 ; SELECT 1',
  'line\nbreak',
  'ünïcödé ☃',
]

let db: Awaited<ReturnType<typeof openRuleStore>>
/** Every table of the database with its row count (views: their engine), as the fixtures left them. */
let before: Record<string, number | string>

async function tables(): Promise<Record<string, number | string>> {
  const list = await db.store.query<{ name: string; engine: string }>('SELECT name, engine FROM system.tables WHERE database = currentDatabase() ORDER BY name')
  const out: Record<string, number | string> = {}
  for (const t of list) {
    if (/View/.test(t.engine)) out[t.name] = t.engine
    else out[t.name] = Number((await db.store.query<{ n: number }>('SELECT count() AS n FROM {t:Identifier}', { t: t.name }))[0]?.n)
  }
  return out
}

beforeAll(async () => {
  db = await openRuleStore()
  const rows = NASTY.flatMap((name, i) => [
    group(`u${i}`, `acc-${name}`, { [name]: name, plan: name }, NOW - 10 * DAY),
    identify(`u${i}`, { [name]: name }, NOW - 10 * DAY),
    ev({ at: NOW - DAY, event: name, userId: `u${i}`, properties: { [name]: name }, source: name }),
    ev({ at: NOW - DAY, event: name, userId: `u${i}`, properties: { [name]: 'other' }, source: name }),
  ])
  await db.put(rows)
  before = await tables()
})
afterAll(async () => {
  await db.close()
})

function rule(name: string) {
  return parseRule({
    id: 'inject',
    kind: 'custom',
    subject: 'account',
    description: name,
    sources: [name],
    where: [{ trait: name, op: 'eq', value: name }],
    when: {
      all: [
        { metric: 'count', event: name, where: [{ property: name, op: 'eq', value: name }], window: '7d', op: 'gte', value: 1 },
        { metric: 'count', event: [name, 'Other'], where: [{ property: name, op: 'in', value: [name, 'x'] }], window: '7d', op: 'eq', value: 1 },
        { metric: 'sum', property: name, event: name, window: '7d', op: 'gte', value: 0 },
        { trait: 'plan', op: 'contains', value: name },
        { any: [{ trait: name, op: 'exists' }, { trait: name, op: 'in', value: [name] }] },
        { metric: 'champion_quiet', champion: { trait: name, op: 'eq', value: name }, op: 'gte', value: 0 },
      ],
    },
  })
}

describe('injection', () => {
  it.each(NASTY)('%j never reaches the SQL text', (name) => {
    const { sql, params } = compileRule(rule(name), {
      asOf: NOW,
      subjectIds: [`acc-${name}`, name],
      scope: { keys: [`u-${name}`], links: { from: [`anon-${name}`], to: [`u-${name}`] }, rollups: true },
    })
    expect(sql).not.toContain(name)
    expect(Object.values(params)).toContain(name)
    // Every placeholder is {pN:Type}; nothing else in the text takes braces.
    expect(sql.match(/\{[^}]*\}/g)?.every((m) => /^\{p\d+:[A-Za-z0-9(), ']+\}$/.test(m))).toBe(true)
  })

  it.each(NASTY)('%j matches literally, as data', async (name) => {
    const r = rule(name)
    const rows = await runRule(db.store, r, { asOf: NOW })
    expect(rows.map((x) => x.subjectId)).toEqual([`acc-${name}`])
    const [row] = rows
    expect(row?.reasons.map((x) => x.measured)).toEqual([name, 1, 1, 0, name, name, name, 1])
    expect(row?.reasons[1]?.condition).toContain(name)
    // Incremental runs take the same names and odd subject ids.
    const some = await runRule(db.store, r, { asOf: NOW, subjectIds: [`acc-${name}`, name], rollups: false })
    expect(Object.fromEntries(some.map((x) => [x.subjectId, x.matched]))).toEqual({ [`acc-${name}`]: true, [name]: false })
  })

  it('leaves every table in place, with its rows', async () => {
    // This test runs every rule itself (full and incremental), so it holds whatever ran before it.
    for (const name of NASTY) {
      await runRule(db.store, rule(name), { asOf: NOW })
      await runRule(db.store, rule(name), { asOf: NOW, subjectIds: [`acc-${name}`, name], rollups: false })
    }
    expect(before.events_v1).toBe(NASTY.length * 4)
    expect(Object.keys(before)).toEqual(expect.arrayContaining(['events_v1', 'users_v1', 'accounts_v1', 'memberships_v1', 'identities_v1', 'signals_v1', 'rules_v1']))
    expect(await tables()).toEqual(before)
  })
})

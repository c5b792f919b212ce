import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadScope, loadScopes } from '../rules/scope.js'
import { DAY, NOW, ev, group, identify, openRuleStore } from './rules-fixtures.js'

/** The scope of an incremental run (rules/scope.ts), on fixtures whose answer is known by construction. */
let db: Awaited<ReturnType<typeof openRuleStore>>
beforeAll(async () => {
  db = await openRuleStore()
  await db.put([
    group('m1', 'A', {}, NOW - 9 * DAY),
    group('m2', 'A', {}, NOW - 9 * DAY),
    identify('m1', {}, NOW - 8 * DAY, 'anon-1'),
    ev({ type: 'alias', previousId: 'old-2', userId: 'm2', at: NOW - 7 * DAY }),
    identify('old-2', {}, NOW - 8 * DAY, 'anon-2'), // anon-2 → old-2 → m2: two hops
    group('m3', 'B', {}, NOW - 9 * DAY),
    group('m4', 'C', {}, NOW - 9 * DAY),
    ev({ at: NOW - DAY, event: 'Message Sent', anonymousId: 'anon-5', accountId: 'A' }), // tagged, from a stranger
    identify('stranger', {}, NOW - DAY + 1, 'anon-5'),
  ])
})
afterAll(async () => {
  await db.close()
})

const sorted = (xs: string[]) => [...xs].sort()

describe('incremental scope', () => {
  it('reads the members, their ids one and two hops back, and resolves the ids of tagged events', async () => {
    const s = await loadScope(db.store, 'account', ['A'], NOW)
    expect(sorted(s.keys)).toEqual(['anon-1', 'anon-2', 'm1', 'm2', 'old-2'])
    const links = Object.fromEntries(s.links.from.map((f, i) => [f, s.links.to[i]]))
    expect(links).toEqual({ 'anon-1': 'm1', 'anon-2': 'm2', 'old-2': 'm2', 'anon-5': 'stranger' })
  })

  it('a user scope starts from the users themselves', async () => {
    const s = await loadScope(db.store, 'user', ['m2', 'nobody'], NOW)
    expect(sorted(s.keys)).toEqual(['anon-2', 'm2', 'nobody', 'old-2'])
  })

  it('reads the rollup in scoped runs only while it is much smaller than the events', async () => {
    // 9 messages stored, 1 of them activity: 1 rollup row.
    expect((await loadScope(db.store, 'account', ['A'], NOW)).rollups).toBe(true)
    // 20 more, each from its own identity: 21 rollup rows for 29 messages (over half).
    await db.put(Array.from({ length: 20 }, (_, i) => ev({ at: NOW - DAY, event: 'Feature Used', userId: `solo${i}` })))
    expect((await loadScope(db.store, 'account', ['A'], NOW)).rollups).toBe(false)
  })

  it('on a server, halves a slice whose lists are too large to bind, covering every subject once; embedded, never splits', async () => {
    expect((await loadScopes(db.store, 'account', ['A', 'B', 'C'], NOW)).map((p) => p.ids)).toEqual([['A', 'B', 'C']])
    const bySize = await loadScopes(db.store, 'account', ['A', 'B', 'C'], NOW, 1)
    expect(bySize.map((p) => p.ids)).toEqual([['A'], ['B'], ['C']])
    expect(sorted(bySize[2]?.scope.keys ?? [])).toEqual(['m4'])
  })
})

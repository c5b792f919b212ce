import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { chTime } from '../src/time.js'
import { decide, Evaluator } from '../rules/evaluator.js'
import { IDENTITY_CHANGE, type RuleEvents, ruleEvents, touches } from '../rules/relevance.js'
import { parseRule } from '../rules/schema.js'
import { defaultsDir, deleteRule, putRule, readRuleDir } from '../rules/store.js'
import { evaluateOnIngest } from '../src/edge/cron.js'
import { type Signal, SignalBus, type SignalEvent } from '../src/signals.js'
import { until } from './poll.js'
import { DAY, HOUR, NOW, ev, many, openRuleStore } from './rules-fixtures.js'

let db: Awaited<ReturnType<typeof openRuleStore>>
beforeAll(async () => {
  db = await openRuleStore()
})
afterAll(async () => {
  await db.close()
})

/** An evaluator whose clock the test sets. */
function evaluator(opts: { debounceMs?: number; bus?: SignalBus } = {}) {
  const clock = { now: NOW }
  const e = new Evaluator(db.store, opts.bus, { now: () => clock.now, debounceMs: opts.debounceMs })
  return { e, clock }
}

async function rule(id: string, extra: Record<string, unknown> = {}, value = 3, event = `${id} event`) {
  const r = parseRule({
    id,
    kind: 'pql',
    subject: 'account',
    when: { all: [{ metric: 'count', event, window: '7d', op: 'gte', value }] },
    ...extra,
  })
  return (await putRule(db.store, r, '', NOW)).stored
}

async function signalsOf(ruleId: string): Promise<Signal[]> {
  const rows = await db.store.query<{ id: string; subject_id: string; status: string; rule_version: number; fired_at: string }>(
    'SELECT id, subject_id, status, rule_version, fired_at FROM signals_v1 FINAL WHERE rule_id = {r:String} ORDER BY id',
    { r: ruleId },
  )
  return rows.map((r) => ({ id: r.id, subject: { id: r.subject_id }, status: r.status, rule_version: Number(r.rule_version), fired_at: r.fired_at }) as unknown as Signal)
}

const ids = (signals: Signal[]) => signals.map((s) => s.subject.id).sort()

describe('decide (the entry state machine)', () => {
  it('fires on entry, not while open, resolves on leaving, respects the cooldown', () => {
    expect(decide(undefined, true, 0, 0)).toBe('fire')
    expect(decide(undefined, false, 0, 0)).toBe(null)
    expect(decide({ id: 's', status: 'open', firedAt: 0 }, true, 10, 0)).toBe(null)
    expect(decide({ id: 's', status: 'open', firedAt: 0 }, false, 10, 0)).toBe('resolve')
    expect(decide({ id: 's', status: 'resolved', firedAt: 0 }, true, 10, 100)).toBe(null)
    expect(decide({ id: 's', status: 'resolved', firedAt: 0 }, true, 100, 100)).toBe('fire')
    expect(decide({ id: 's', status: 'resolved', firedAt: 0 }, false, 100, 100)).toBe(null)
  })
})

describe('evaluator', () => {
  it('fires when a subject crosses the threshold, not below it, with the version and the reasons', async () => {
    const r = await rule('cross')
    await db.put([
      ...many(2, NOW - 2 * DAY, NOW - HOUR, { event: 'cross event', accountId: 'cross-a', userId: 'u1' }),
      ...many(2, NOW - 2 * DAY, NOW - HOUR, { event: 'cross event', accountId: 'cross-b', userId: 'u2' }),
    ])
    const { e } = evaluator()
    expect((await e.evaluate({ ruleIds: ['cross'] })).fired).toEqual([])

    await db.put([ev({ at: NOW - HOUR, event: 'cross event', accountId: 'cross-a', userId: 'u1' })])
    const { fired, resolved } = await e.evaluate({ ruleIds: ['cross'] })
    expect(resolved).toEqual([])
    expect(fired).toHaveLength(1)
    const s = fired[0] as Signal
    expect(s.id).toMatch(/^sig_[0-9A-Z]{26}$/)
    expect(s).toMatchObject({
      rule_id: 'cross',
      rule_version: r.version,
      kind: 'pql',
      subject: { type: 'account', id: 'cross-a' },
      status: 'open',
      fired_at: new Date(NOW).toISOString(),
    })
    expect(s.reasons).toEqual([expect.objectContaining({ measured: 3, threshold: 3, op: 'gte', passed: true })])

    // Still over the threshold: no second signal.
    expect((await e.evaluate({ ruleIds: ['cross'] })).fired).toEqual([])
    expect(ids(await signalsOf('cross'))).toEqual(['cross-a'])
  })

  it('resolves when the subject leaves the condition, and fires again on re-entry', async () => {
    await rule('leave')
    await db.put(many(3, NOW - 2 * DAY, NOW - HOUR, { event: 'leave event', accountId: 'leave-a', userId: 'u1' }))
    const { e, clock } = evaluator()
    const first = (await e.evaluate({ ruleIds: ['leave'] })).fired[0] as Signal
    expect(first.subject.id).toBe('leave-a')

    clock.now = NOW + 7 * DAY // the events have left the 7-day window
    const out = await e.evaluate({ ruleIds: ['leave'] })
    expect(out.fired).toEqual([])
    expect(out.resolved).toEqual([expect.objectContaining({ id: first.id, status: 'resolved', resolved_at: new Date(clock.now).toISOString() })])
    expect((await e.evaluate({ ruleIds: ['leave'] })).resolved).toEqual([])

    await db.put(many(3, clock.now - DAY, clock.now - HOUR, { event: 'leave event', accountId: 'leave-a', userId: 'u1' }))
    const again = await e.evaluate({ ruleIds: ['leave'] })
    expect(again.fired).toHaveLength(1)
    expect(again.fired[0]?.id).not.toBe(first.id)
  })

  it('a resolved signal carries the reasons measured when it resolved, in full and incremental runs', async () => {
    await rule('why', { where: [{ trait: 'plan', op: 'exists', value: false }] })
    await db.put([
      ...many(3, NOW - 2 * DAY, NOW - HOUR, { event: 'why event', accountId: 'why-full', userId: 'w1' }),
      ...many(4, NOW - 2 * DAY, NOW - HOUR, { event: 'why event', accountId: 'why-incr', userId: 'w2' }),
    ])
    const { e, clock } = evaluator()
    const fired = (await e.evaluate({ ruleIds: ['why'] })).fired
    const measured = (s: Signal | undefined) => s?.reasons.map((r) => [r.measured, r.passed])
    expect(fired.map((s) => [s.subject.id, measured(s)])).toEqual([
      ['why-full', [[null, true], [3, true]]],
      ['why-incr', [[null, true], [4, true]]],
    ])
    // Later, the window holds two events of each account: both leave the condition (≥ 3).
    clock.now = NOW + 7 * DAY - 20 * HOUR
    const incr = await e.evaluate({ ruleIds: ['why'], subjects: { account: ['why-incr'], user: [] } })
    expect(incr.resolved.map((s) => [s.subject.id, s.status, measured(s)])).toEqual([['why-incr', 'resolved', [[null, true], [2, false]]]])
    const full = await e.evaluate({ ruleIds: ['why'] })
    expect(full.resolved.map((s) => [s.subject.id, s.status, measured(s)])).toEqual([['why-full', 'resolved', [[null, true], [2, false]]]])
    // The fired event keeps the reasons it fired with; the stored signal shows the latest.
    const log = await db.store.query<{ type: string; signal: string }>(
      "SELECT type, signal FROM signal_events_v1 WHERE signal_id = {id:String} ORDER BY event_id",
      { id: fired[0]?.id },
    )
    expect(log.map((r) => [r.type, measured(JSON.parse(r.signal) as Signal)])).toEqual([
      ['signal.fired', [[null, true], [3, true]]],
      ['signal.resolved', [[null, true], [2, false]]],
    ])
  })

  it('respects the cooldown: a re-entry within it fires only once it has passed, one after it fires at once', async () => {
    const r = parseRule({
      id: 'cool',
      kind: 'pql',
      subject: 'account',
      cooldown: '3d',
      when: { all: [{ metric: 'count', event: 'cool event', window: '1d', op: 'gte', value: 1 }] },
    })
    await putRule(db.store, r, '', NOW)
    const put = (at: number) => db.put([ev({ at, event: 'cool event', accountId: 'cool-a', userId: 'u1' })])
    const { e, clock } = evaluator()
    const tick = async (at: number) => {
      clock.now = at
      const out = await e.evaluate({ ruleIds: ['cool'] })
      return [out.fired.length, out.resolved.length]
    }
    await put(NOW - HOUR)
    expect(await tick(NOW)).toEqual([1, 0]) // enters: fires
    expect(await tick(NOW + DAY)).toEqual([0, 1]) // the event left the 1-day window: resolves
    await put(NOW + DAY + HOUR)
    expect(await tick(NOW + DAY + 2 * HOUR)).toEqual([0, 0]) // re-enters within the cooldown: nothing
    await put(NOW + 3 * DAY - HOUR)
    expect(await tick(NOW + 3 * DAY - 1)).toEqual([0, 0]) // still 1 ms inside the cooldown
    expect(await tick(NOW + 3 * DAY)).toEqual([1, 0]) // cooldown over, still matching: fires
    expect(await tick(NOW + 4 * DAY)).toEqual([0, 1])
    await put(NOW + 6 * DAY + HOUR)
    expect(await tick(NOW + 6 * DAY + 2 * HOUR)).toEqual([1, 0]) // re-entry after the cooldown: at once
    expect((await signalsOf('cool')).map((s) => s.status)).toEqual(['resolved', 'resolved', 'open'])
  })

  it('never fires the same entry twice: a new evaluator on the same store (a restart) sees the open signal', async () => {
    await rule('restart')
    await db.put(many(3, NOW - DAY, NOW - HOUR, { event: 'restart event', accountId: 'restart-a', userId: 'u1' }))
    expect((await evaluator().e.evaluate({ ruleIds: ['restart'] })).fired).toHaveLength(1)
    expect((await evaluator().e.evaluate({ ruleIds: ['restart'] })).fired).toHaveLength(0)
    expect(await signalsOf('restart')).toHaveLength(1)
  })

  it('never fires the same entry twice across concurrent evaluations, in one evaluator or in two on one store', async () => {
    await rule('concurrent')
    const accounts = Array.from({ length: 6 }, (_, i) => `conc-${i}`)
    await db.put(accounts.flatMap((a) => many(3, NOW - DAY, NOW - HOUR, { event: 'concurrent event', accountId: a, userId: `u-${a}` })))
    const one = evaluator().e
    const two = evaluator().e
    const three = evaluator().e
    const results = await Promise.all([
      one.evaluate({ ruleIds: ['concurrent'] }),
      one.evaluate({ ruleIds: ['concurrent'] }),
      two.evaluate({ ruleIds: ['concurrent'] }),
      three.evaluate({ ruleIds: ['concurrent'] }),
    ])
    const fired = results.flatMap((r) => r.fired)
    expect(ids(fired)).toEqual(accounts)
    expect(ids(await signalsOf('concurrent'))).toEqual(accounts)

    // And resolving: each open signal resolves once.
    const later = [evaluator(), evaluator(), evaluator()]
    for (const l of later) l.clock.now = NOW + 8 * DAY
    const res = await Promise.all(later.map((l) => l.e.evaluate({ ruleIds: ['concurrent'] })))
    expect(ids(res.flatMap((r) => r.resolved))).toEqual(accounts)
    const log = await db.store.query<{ type: string; n: number }>(
      "SELECT type, count() AS n FROM signal_events_v1 WHERE rule_id = 'concurrent' GROUP BY type ORDER BY type",
    )
    expect(log.map((r) => [r.type, Number(r.n)])).toEqual([
      ['signal.fired', 6],
      ['signal.resolved', 6],
    ])
  })

  it('completes a fire claimed by an evaluator that stopped before recording it', async () => {
    await rule('orphan')
    await db.put(many(3, NOW - DAY, NOW - HOUR, { event: 'orphan event', accountId: 'orphan-a', userId: 'u1' }))
    const signal: Signal = {
      id: 'sig_01JORPHAN0000000000000000A',
      rule_id: 'orphan',
      rule_version: 1,
      kind: 'pql',
      subject: { type: 'account', id: 'orphan-a' },
      status: 'open',
      fired_at: new Date(NOW - 10 * 60_000).toISOString(),
      resolved_at: null,
      score: null,
      reasons: [],
    }
    await db.store.insert('signal_claims_v1', [
      {
        claim_key: 'fire|orphan|account|orphan-a|',
        owner: 'a-dead-evaluator',
        signal_id: signal.id,
        signal: JSON.stringify({ type: 'signal.fired', signal }),
        claimed_at: chTime(NOW - 10 * 60_000),
      },
    ])
    const out = await evaluator().e.evaluate({ ruleIds: ['orphan'] })
    expect(out.fired.map((s) => s.id)).toEqual([signal.id])
    expect((await evaluator().e.evaluate({ ruleIds: ['orphan'] })).fired).toEqual([])
    expect((await signalsOf('orphan')).map((s) => s.id)).toEqual([signal.id])
  })

  it('records the rule version that fired each signal', async () => {
    await rule('versioned', {}, 3)
    await db.put(many(3, NOW - DAY, NOW - HOUR, { event: 'versioned event', accountId: 'ver-a', userId: 'u1' }))
    const { e, clock } = evaluator()
    expect((await e.evaluate({ ruleIds: ['versioned'] })).fired[0]?.rule_version).toBe(1)
    const v2 = await rule('versioned', { description: 'now at 2' }, 2)
    expect(v2.version).toBe(2)
    await db.put(many(2, NOW - DAY, NOW - HOUR, { event: 'versioned event', accountId: 'ver-b', userId: 'u2' }))
    clock.now = NOW + 1000
    const out = await e.evaluate({ ruleIds: ['versioned'] })
    expect(out.fired.map((s) => [s.subject.id, s.rule_version])).toEqual([['ver-b', 2]])
  })

  it('incremental evaluation looks only at the given subjects and resolves only theirs', async () => {
    await rule('incr')
    await db.put([
      ...many(3, NOW - DAY, NOW - HOUR, { event: 'incr event', accountId: 'incr-a', userId: 'ia' }),
      ...many(3, NOW - DAY, NOW - HOUR, { event: 'incr event', accountId: 'incr-b', userId: 'ib' }),
    ])
    const { e, clock } = evaluator()
    const out = await e.evaluate({ ruleIds: ['incr'], subjects: { account: ['incr-a'], user: [] } })
    expect(ids(out.fired)).toEqual(['incr-a'])
    expect(ids((await e.evaluate({ ruleIds: ['incr'] })).fired)).toEqual(['incr-b'])
    clock.now = NOW + 8 * DAY
    const res = await e.evaluate({ ruleIds: ['incr'], subjects: { account: ['incr-b'], user: [] } })
    expect(ids(res.resolved)).toEqual(['incr-b'])
    expect(ids((await e.evaluate({ ruleIds: ['incr'] })).resolved)).toEqual(['incr-a'])
  })

  it('evaluates the subjects touched by stored events soon after (accounts of touched users included)', async () => {
    await rule('touch', {}, 3)
    // u-touch is a member of touch-a (its group call); its later events carry no account id.
    await db.put([ev({ type: 'group', at: NOW - DAY, userId: 'u-touch', accountId: 'touch-a', traits: {} })])
    const bus = new SignalBus()
    const seen: SignalEvent[] = []
    bus.on('events', (events) => seen.push(...events))
    const { e } = evaluator({ debounceMs: 20, bus })
    const rows = many(3, NOW - DAY, NOW - HOUR, { event: 'touch event', userId: 'u-touch' })
    await db.put(rows)
    e.touch(rows)
    await until(() => seen.some((x) => x.data.rule_id === 'touch'), { timeoutMs: 10_000 })
    expect(seen.filter((x) => x.data.rule_id === 'touch').map((x) => [x.type, x.data.subject.id])).toEqual([['signal.fired', 'touch-a']])
    await e.stop()
  })

  it('the Worker and Node evaluate the same subjects for the same block: anonymous and aliased ids followed, with what touched them', async () => {
    // anon-tb was identified as u-tb (member of acct-tb); old-tb2 is an alias of u-tb2 (member of acct-tb2).
    await db.put([
      ev({ type: 'identify', at: NOW - DAY, userId: 'u-tb', anonymousId: 'anon-tb' }),
      ev({ type: 'group', at: NOW - DAY, userId: 'u-tb', accountId: 'acct-tb', traits: {} }),
      ev({ type: 'alias', at: NOW - DAY, userId: 'u-tb2', previousId: 'old-tb2' }),
      ev({ type: 'group', at: NOW - DAY, userId: 'u-tb2', accountId: 'acct-tb2', traits: {} }),
    ])
    const block = [
      ev({ at: NOW - HOUR, event: 'Read', anonymousId: 'anon-tb' }),
      ev({ at: NOW - HOUR, event: 'Read', userId: 'old-tb2' }),
      ev({ at: NOW - HOUR, event: 'Other', userId: 'u-tb3', accountId: 'acct-tb3' }),
    ]
    await db.put(block)
    /** The evaluations an evaluator is asked for, as plain data (the runs themselves are not the point here). */
    const asked = (e: Evaluator) => {
      const calls: unknown[] = []
      vi.spyOn(e, 'evaluate').mockImplementation(async (o = {}) => {
        const by = (m: Map<string, Set<string>> | undefined) => Object.fromEntries([...(m ?? [])].map(([id, w]) => [id, [...w].sort()]).sort())
        calls.push({ account: [...(o.subjects?.account ?? [])].sort(), user: [...(o.subjects?.user ?? [])].sort(), by: { account: by(o.touchedBy?.account), user: by(o.touchedBy?.user) } })
        return { fired: [], resolved: [], errors: [] }
      })
      return calls
    }
    const node = evaluator({ debounceMs: 10 }).e
    const nodeAsked = asked(node)
    node.touch(block)
    await vi.waitFor(() => expect(nodeAsked).toHaveLength(1))
    await node.stop()
    // The Worker: the queue consumer's onStored as src/worker.ts wires it.
    const edge = evaluator().e
    const edgeAsked = asked(edge)
    const waiting: Promise<unknown>[] = []
    evaluateOnIngest(edge, pino({ level: 'silent' }), (work) => waiting.push(work))(block)
    await Promise.all(waiting)
    expect(edgeAsked).toEqual(nodeAsked)
    expect(edgeAsked).toEqual([
      {
        account: ['acct-tb', 'acct-tb2', 'acct-tb3'],
        user: ['old-tb2', 'u-tb', 'u-tb2', 'u-tb3'],
        by: {
          account: { 'acct-tb': ['Read'], 'acct-tb2': ['Read'], 'acct-tb3': ['Other'] },
          user: { 'old-tb2': ['Read'], 'u-tb': ['Read'], 'u-tb2': ['Read'], 'u-tb3': ['Other'] },
        },
      },
    ])
  })

  it('an incremental run gives a rule only the subjects touched by what it reads; later touches run after it', async () => {
    await rule('relev', {}, 1)
    // The same rule without an event name reads every activity event: it runs for every touched subject.
    await putRule(db.store, parseRule({ id: 'relev-any', kind: 'pql', subject: 'account', when: { all: [{ metric: 'count', window: '7d', op: 'gte', value: 1 }] } }), '', NOW)
    // Both accounts already qualify for `relev` (stored, never evaluated).
    await db.put(['rel-a', 'rel-b', 'rel-c'].map((a) => ev({ at: NOW - DAY, event: 'relev event', accountId: a, userId: `u-${a}` })))
    const bus = new SignalBus()
    const fired: string[] = []
    bus.on('events', (events) => fired.push(...events.filter((x) => x.type === 'signal.fired').map((x) => `${x.data.rule_id}:${x.data.subject.id}`)))
    const { e } = evaluator({ debounceMs: 20, bus })
    // rel-a receives an event `relev` does not read; rel-b a group call (traits: every rule).
    const touch = [
      ev({ at: NOW - HOUR, event: 'something else', accountId: 'rel-a', userId: 'u-rel-a' }),
      ev({ type: 'group', at: NOW - HOUR, userId: 'u-rel-b', accountId: 'rel-b', traits: { plan: 'free' } }),
    ]
    await db.put(touch)
    e.touch(touch)
    const firedAll = (want: string[]) => vi.waitFor(() => expect(fired).toEqual(expect.arrayContaining(want)), { timeout: 10_000, interval: 20 })
    await firedAll(['relev-any:rel-a', 'relev-any:rel-b', 'relev:rel-b'])
    expect(fired).not.toContain('relev:rel-a')
    // A later touch with the event the rule reads.
    const more = [ev({ at: NOW - HOUR, event: 'relev event', accountId: 'rel-c', userId: 'u-rel-c' })]
    await db.put(more)
    e.touch(more)
    await firedAll(['relev:rel-c'])
    await e.stop()
    expect(fired.filter((f) => f.startsWith('relev:')).sort()).toEqual(['relev:rel-b', 'relev:rel-c'])
    // The skipped subject was eligible all along: the periodic full run fires it.
    expect(ids((await evaluator().e.evaluate({ ruleIds: ['relev'] })).fired)).toEqual(['rel-a'])
  })

  it('evaluates the rules of one subject type in one query, and one by one if that query fails', async () => {
    // Two thresholds on the same events: tog-1 has 3, tog-2 has 2.
    await db.put([
      ...many(3, NOW - DAY, NOW - HOUR, { event: 'tog event', accountId: 'tog-1', userId: 'tog-u1' }),
      ...many(2, NOW - DAY, NOW - HOUR, { event: 'tog event', accountId: 'tog-2', userId: 'tog-u2' }),
    ])
    const run = async (ruleIds: string[], failTogether: boolean) => {
      for (const [id, value] of [[ruleIds[0], 2], [ruleIds[1], 3]] as const) await rule(id as string, {}, value, 'tog event')
      const queries = { together: 0, alone: 0, states: 0 }
      // The store as the evaluator sees it: counts rule queries, and refuses shared ones if asked.
      const store = new Proxy(db.store, {
        get(target, key) {
          if (key !== 'query') return Reflect.get(target, key)
          return async (sql: string, params?: Record<string, unknown>) => {
            if (/ AS matched0,/.test(sql)) {
              queries.together++
              if (failTogether) throw new Error('refused for the test')
            } else if (/ AS matched,/.test(sql)) queries.alone++
            else if (/FROM signals_v1 FINAL WHERE rule_id IN/.test(sql)) queries.states++
            return target.query(sql, params)
          }
        },
      })
      const out = await new Evaluator(store, undefined, { now: () => NOW }).evaluate({ ruleIds })
      const fired = Object.fromEntries(ruleIds.map((id) => [id, ids(out.fired.filter((s) => s.rule_id === id))]))
      return { fired, errors: out.errors, queries }
    }
    // Together: one rule query and one entry-state query for both rules.
    expect(await run(['tog-a', 'tog-b'], false)).toEqual({
      fired: { 'tog-a': ['tog-1', 'tog-2'], 'tog-b': ['tog-1'] },
      errors: [],
      queries: { together: 1, alone: 0, states: 1 },
    })
    expect(await run(['tog-c', 'tog-d'], true)).toEqual({
      fired: { 'tog-c': ['tog-1', 'tog-2'], 'tog-d': ['tog-1'] },
      errors: [],
      queries: { together: 1, alone: 2, states: 2 },
    })
    // An incremental run where the rules have different subjects: tog-1 got a `tog event`, tog-2
    // only an event tog-a does not read. The rule reading every event runs for both; tog-a, for
    // tog-1 only, so it must leave its open signal on tog-2 alone (not resolve it).
    await putRule(db.store, parseRule({ id: 'tog-any', kind: 'pql', subject: 'account', when: { all: [{ metric: 'count', window: '7d', op: 'gte', value: 100 }] } }), '', NOW)
    const touchedBy = { account: new Map([['tog-1', new Set(['tog event'])], ['tog-2', new Set(['other event'])]]), user: new Map() }
    const incremental = await new Evaluator(db.store, undefined, { now: () => NOW }).evaluate({
      ruleIds: ['tog-a', 'tog-any'],
      subjects: { account: ['tog-1', 'tog-2'], user: [] },
      touchedBy,
    })
    expect(incremental).toEqual({ fired: [], resolved: [], errors: [] })
    expect((await signalsOf('tog-a')).map((x) => [x.subject.id, x.status]).sort()).toEqual([
      ['tog-1', 'open'],
      ['tog-2', 'open'],
    ])
  })

  it('knows which events each rule reads', async () => {
    const pack = new Map((await readRuleDir(await defaultsDir())).map(({ rule }) => [rule.id, ruleEvents(rule)]))
    const [pql, mql, seats] = ['pql-product-usage', 'mql-engaged-lead', 'seat-expansion'].map((id) => pack.get(id)) as [RuleEvents, RuleEvents, RuleEvents]
    expect(pql).toBe('all')
    expect(seats).toBe('all')
    expect([...(mql as Set<string>)].sort()).toEqual(['Content Downloaded', 'Demo Requested', 'Page Viewed', 'Webinar Registered'])
    const traitsOnly = ruleEvents(parseRule({ id: 't', kind: 'custom', subject: 'user', when: { all: [{ trait: 'plan', op: 'eq', value: 'pro' }] } }))
    expect([...(traitsOnly as Set<string>)]).toEqual([])
    expect(touches(new Set(['Page Viewed']), mql)).toBe(true)
    expect(touches(new Set(['Message Sent']), mql)).toBe(false)
    expect(touches(new Set([IDENTITY_CHANGE]), traitsOnly)).toBe(true)
    expect(touches(new Set(['Message Sent']), pql)).toBe(true)
  })

  it('splits subjects between shards; a shard resolves only its own subjects', async () => {
    await rule('sharded', {}, 1)
    const accounts = Array.from({ length: 12 }, (_, i) => `shard-${i}`)
    await db.put(accounts.map((a) => ev({ at: NOW - HOUR, event: 'sharded event', accountId: a, userId: `u-${a}` })))
    const shard = (index: number) => new Evaluator(db.store, undefined, { now: () => NOW, shard: { count: 2, index } })
    const [a, b] = await Promise.all([shard(0).evaluate({ ruleIds: ['sharded'] }), shard(1).evaluate({ ruleIds: ['sharded'] })])
    expect(a.fired.length).toBeGreaterThan(0)
    expect(b.fired.length).toBeGreaterThan(0)
    expect(ids([...a.fired, ...b.fired])).toEqual([...accounts].sort())
    // Shard 0, once the events have left the window: only its own subjects resolve.
    const later = new Evaluator(db.store, undefined, { now: () => NOW + 8 * DAY, shard: { count: 2, index: 0 } })
    expect(ids((await later.evaluate({ ruleIds: ['sharded'] })).resolved)).toEqual(ids(a.fired))
  })

  it('a full run resolves the open signals of a deleted rule, not those of a disabled one', async () => {
    await rule('withdrawn', {}, 1)
    await rule('paused', {}, 1)
    await db.put([
      ev({ at: NOW - HOUR, event: 'withdrawn event', accountId: 'wd-a', userId: 'u1' }),
      ev({ at: NOW - HOUR, event: 'paused event', accountId: 'wd-a', userId: 'u1' }),
    ])
    const { e } = evaluator()
    expect((await e.evaluate({ ruleIds: ['withdrawn', 'paused'] })).fired).toHaveLength(2)
    await deleteRule(db.store, 'withdrawn', NOW)
    await rule('paused', { enabled: false }, 1)
    const out = await e.evaluate()
    expect(out.errors).toEqual([])
    expect(out.resolved.filter((s) => ['withdrawn', 'paused'].includes(s.rule_id)).map((s) => s.rule_id)).toEqual(['withdrawn'])
    expect((await signalsOf('paused')).map((s) => s.status)).toEqual(['open'])
  })
  it('never fires an entry twice when claim batches overlap (full and incremental runs at once), in both claim modes', async () => {
    for (const mode of ['batch', 'per-key'] as const) {
      const id = `overlap-${mode}`
      await rule(id, {}, 1)
      const accounts = Array.from({ length: 20 }, (_, i) => `${id}-${String(i).padStart(2, '0')}`)
      await db.put(accounts.map((a) => ev({ at: NOW - HOUR, event: `${id} event`, accountId: a, userId: `u-${a}` })))
      const make = () => new Evaluator(db.store, undefined, { now: () => NOW, claims: mode })
      // Different, overlapping sets of keys claimed concurrently: all, the first half, every third, the last 12.
      const subsets = [undefined, accounts.slice(0, 10), accounts.filter((_, i) => i % 3 === 0), accounts.slice(8)]
      const runs = await Promise.all(
        subsets.flatMap((subset) => [make(), make()].map((e) => e.evaluate({ ruleIds: [id], ...(subset ? { subjects: { account: subset, user: [] } } : {}) }))),
      )
      expect(ids(runs.flatMap((r) => r.fired))).toEqual(accounts)
      expect(ids(await signalsOf(id))).toEqual(accounts)
      const later = Array.from({ length: 3 }, () => new Evaluator(db.store, undefined, { now: () => NOW + 8 * DAY, claims: mode }))
      const res = await Promise.all(later.map((e, i) => e.evaluate({ ruleIds: [id], ...(i === 0 ? {} : { subjects: { account: accounts.slice(i * 5), user: [] } }) })))
      expect(ids(res.flatMap((r) => r.resolved))).toEqual(accounts)
    }
  })
})

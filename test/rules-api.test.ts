import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { defaultsDir, readRuleDir } from '../rules/store.js'
import type { Signal } from '../src/signals.js'
import { startTestServer, type TestServer, WRITE_KEY } from './harness.js'
import { until } from './poll.js'

let sb: TestServer
let defaults: string[] = []
beforeAll(async () => {
  defaults = (await readRuleDir(await defaultsDir()).catch(() => [])).map((d) => d.rule.id).sort()
  // No background evaluation: each test decides when to evaluate (the last one turns ingestion's on).
  sb = await startTestServer({ EVAL_INTERVAL_MS: '0', EVAL_ON_INGEST: 'false' })
})
afterAll(async () => {
  await sb.stop()
})

const MIN = 60_000
const put = (id: string, body: string | object, contentType = 'application/json') =>
  sb.admin(`/v1/rules/${id}`, { method: 'PUT', body: typeof body === 'string' ? body : JSON.stringify(body), headers: { 'content-type': contentType } })
const json = async <T = Record<string, unknown>>(res: Response) => (await res.json()) as T
type ErrorBody = { error: { code: string; message: string; details?: { path: string; message: string }[] } }

const countRule = (id: string, event: string, value: number, extra: object = {}) => ({
  id,
  kind: 'pql',
  subject: 'account',
  when: { all: [{ metric: 'count', event, window: '1d', op: 'gte', value }] },
  ...extra,
})

async function track(accountId: string, event: string, n: number, ageMs = 5 * MIN) {
  const at = Date.now() - ageMs
  const batch = Array.from({ length: n }, (_, i) => ({
    type: 'track',
    userId: `${accountId}-user`,
    event,
    messageId: `${accountId}-${event}-${at}-${i}`,
    timestamp: new Date(at + i).toISOString(),
    context: { groupId: accountId },
  }))
  const res = await sb.post('/v1/batch', { batch })
  expect(res.status).toBe(200)
}

const evaluate = async (body: object = {}) => json<{ fired: Signal[]; resolved: Signal[]; errors: unknown[] }>(await sb.admin('/v1/evaluate', { method: 'POST', body: JSON.stringify(body) }))

describe('admin auth', () => {
  it('refuses no token (401), a write key (403 as a bearer, 401 as Basic), and takes the admin token', async () => {
    const paths: [string, string][] = [
      ['GET', '/v1/rules'],
      ['PUT', '/v1/rules/x'],
      ['DELETE', '/v1/rules/x'],
      ['GET', '/v1/rules/schema'],
      ['POST', '/v1/rules/x/backtest'],
      ['POST', '/v1/evaluate'],
      ['GET', '/v1/signals'],
      ['GET', '/v1/accounts/a'],
      ['GET', '/v1/users/u'],
      ['POST', '/v1/subjects/account/a/stage'],
      ['GET', '/v1/funnel'],
    ]
    for (const [method, path] of paths) {
      const none = await fetch(`${sb.url}${path}`, { method })
      expect(none.status, `${method} ${path}`).toBe(401)
      const bearer = await fetch(`${sb.url}${path}`, { method, headers: { authorization: `Bearer ${WRITE_KEY}` } })
      expect(bearer.status, `${method} ${path}`).toBe(403)
      const basic = await fetch(`${sb.url}${path}`, { method, headers: { authorization: `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}` } })
      expect(basic.status, `${method} ${path}`).toBe(401)
    }
    expect((await sb.admin('/v1/rules')).status).toBe(200)
  })
})

describe('rules API', () => {
  it('stored the default pack on the first start', async () => {
    const { data } = await json<{ data: { id: string; version: number }[] }>(await sb.admin('/v1/rules'))
    expect(data.map((r) => r.id).sort()).toEqual(defaults)
    for (const r of data) expect(r.version).toBe(1)
  })

  it('publishes the JSON Schema of a rule', async () => {
    const res = await sb.admin('/v1/rules/schema')
    expect(res.status).toBe(200)
    const schema = await json<{ properties: Record<string, unknown>; required: string[] }>(res)
    expect(Object.keys(schema.properties)).toEqual(expect.arrayContaining(['id', 'kind', 'subject', 'when', 'score', 'cooldown']))
    expect(schema.required).toEqual(expect.arrayContaining(['id', 'kind', 'subject']))
  })

  it('PUT stores YAML or JSON as versions: created, unchanged, updated; GET reads any version', async () => {
    const text = `# a comment kept in the source
id: api-rule
kind: pql
subject: account
description: three pings a day
when:
  all:
    - { metric: count, event: Ping, window: 1d, op: gte, value: 3 }
`
    const created = await put('api-rule', text, 'application/yaml')
    expect(created.status).toBe(201)
    expect(await json(created)).toMatchObject({ id: 'api-rule', version: 1, enabled: true, deleted: false, status: 'created', rule: { kind: 'pql' } })

    const same = await put('api-rule', text, 'application/yaml')
    expect(same.status).toBe(200)
    expect(await json(same)).toMatchObject({ version: 1, status: 'unchanged' })

    // JSON body without an id: the path gives it.
    const { id: _id, ...withoutId } = countRule('api-rule', 'Ping', 5)
    const updated = await put('api-rule', withoutId)
    expect(updated.status).toBe(200)
    expect(await json(updated)).toMatchObject({ id: 'api-rule', version: 2, status: 'updated' })

    expect(await json(await sb.admin('/v1/rules/api-rule'))).toMatchObject({ version: 2, rule: { when: { all: [{ value: 5 }] } } })
    expect(await json(await sb.admin('/v1/rules/api-rule?version=1'))).toMatchObject({ version: 1, rule: { description: 'three pings a day' } })
    const versions = await json<{ data: { version: number }[] }>(await sb.admin('/v1/rules/api-rule/versions'))
    expect(versions.data.map((v) => v.version)).toEqual([1, 2])
    expect((await sb.admin('/v1/rules/api-rule?version=9')).status).toBe(404)
    const { data } = await json<{ data: { id: string }[] }>(await sb.admin('/v1/rules'))
    expect(data.map((r) => r.id)).toContain('api-rule')
  })

  it('DELETE stores a tombstone version; the rule is gone until PUT again', async () => {
    await put('gone', countRule('gone', 'Ping', 1))
    const del = await sb.admin('/v1/rules/gone', { method: 'DELETE' })
    expect(del.status).toBe(200)
    expect(await json(del)).toEqual({ id: 'gone', version: 2, deleted: true })
    const get = await sb.admin('/v1/rules/gone')
    expect(get.status).toBe(404)
    expect((await json<ErrorBody>(get)).error.message).toMatch(/deleted \(version 2\)/)
    expect((await sb.admin('/v1/rules/gone', { method: 'DELETE' })).status).toBe(404)
    const { data } = await json<{ data: { id: string }[] }>(await sb.admin('/v1/rules'))
    expect(data.map((r) => r.id)).not.toContain('gone')
    const again = await put('gone', countRule('gone', 'Ping', 1))
    expect(again.status).toBe(201)
    expect(await json(again)).toMatchObject({ version: 3, status: 'created' })
    expect((await sb.admin('/v1/rules/nothing-here', { method: 'DELETE' })).status).toBe(404)
  })

  it('says which backend answers a rule (plan) and why; a rule needing a new measure reads events until it is backfilled', async () => {
    const plan = async (id: string) => (await json<{ plan: { backend: string; why: string } }>(await sb.admin(`/v1/rules/${id}`))).plan
    expect((await put('plan-plain', countRule('plan-plain', 'Plan Event', 1))).status).toBe(201)
    expect(await plan('plan-plain')).toEqual({ backend: 'state', why: expect.stringContaining('per-day state') })
    expect((await put('plan-sources', countRule('plan-sources', 'Plan Event', 1, { sources: ['web'] }))).status).toBe(201)
    expect(await plan('plan-sources')).toEqual({ backend: 'events', why: expect.stringContaining('sources') })
    const filtered = countRule('plan-filtered', 'Plan Event', 1)
    const cond = (filtered.when.all[0] ?? {}) as Record<string, unknown>
    cond.where = [{ property: 'plan', op: 'eq', value: 'pro' }]
    expect((await put('plan-filtered', filtered)).status).toBe(201)
    expect(await plan('plan-filtered')).toEqual({ backend: 'events', why: expect.stringContaining('backfilling') })
    // An evaluation tells the state what the enabled rules read; it backfills and the rule switches.
    await evaluate({ rule_ids: ['plan-filtered'] })
    await expect.poll(async () => (await plan('plan-filtered')).backend, { timeout: 30_000 }).toBe('state')
    for (const id of ['plan-plain', 'plan-sources', 'plan-filtered']) await sb.admin(`/v1/rules/${id}`, { method: 'DELETE' })
  })

  it('names the path and the problem of invalid rules', async () => {
    const cases: { body: string; type?: string; path: string; message: RegExp }[] = [
      { body: JSON.stringify(countRule('bad', 'Ping', 1, { id: 'other' })), path: 'id', message: /must equal "bad"/ },
      {
        body: JSON.stringify({ ...countRule('bad', 'Ping', 1), when: { all: [{ metric: 'count', event: 'Ping', window: 30, op: 'gte', value: 1 }] } }),
        path: 'when.all.0.window',
        message: /string/,
      },
      {
        body: JSON.stringify({ ...countRule('bad', 'Ping', 1), when: { all: [{ metric: 'count', event: 'Ping', window: '30x', op: 'gte', value: 1 }] } }),
        path: 'when.all.0.window',
        message: /duration/,
      },
      { body: JSON.stringify({ ...countRule('bad', 'Ping', 1), treshold: 3 }), path: '(root)', message: /treshold/ },
      { body: JSON.stringify({ ...countRule('bad', 'Ping', 1), kind: 'hot' }), path: 'kind', message: /pql/ },
      { body: 'id: bad\nkind: pql\nsubject: account\nwhen: [oops', type: 'application/yaml', path: '(line', message: /./ },
      { body: '{"id": "bad", ', path: '(body)', message: /JSON/ },
    ]
    for (const c of cases) {
      const res = await put('bad', c.body, c.type)
      expect(res.status, c.body).toBe(400)
      const { error } = await json<ErrorBody>(res)
      expect(error.code).toBe('BAD_REQUEST')
      const detail = error.details?.find((d) => d.path.startsWith(c.path))
      expect(detail, `${c.body} → ${JSON.stringify(error)}`).toBeDefined()
      expect(`${detail?.message} ${error.message}`).toMatch(c.message)
    }
    expect((await put('bad', '')).status).toBe(400)
    expect((await put('bad', '[1, 2]')).status).toBe(400)
    expect((await put('no%20spaces', countRule('no spaces', 'Ping', 1))).status).toBe(400)
    expect((await sb.admin('/v1/rules/bad')).status).toBe(404)
  })
})

describe('evaluate and signals', () => {
  it('fires on crossing with the rule version, not twice across concurrent evaluations or a restart', async () => {
    await put('cross-api', countRule('cross-api', 'Crossed', 3))
    await put('cross-api', countRule('cross-api', 'Crossed', 3, { description: 'v2' }))
    await track('acc-under', 'Crossed', 2)
    await track('acc-over', 'Crossed', 3)
    const [a, b, c, d] = await Promise.all([
      evaluate({ rule_ids: ['cross-api'] }),
      evaluate({ rule_ids: ['cross-api'] }),
      evaluate(),
      evaluate(),
    ])
    const fired = [a, b, c, d].flatMap((r) => r?.fired ?? []).filter((s) => s.rule_id === 'cross-api')
    expect(fired.map((s) => s.subject.id)).toEqual(['acc-over'])
    expect(fired[0]).toMatchObject({ rule_version: 2, kind: 'pql', status: 'open', subject: { type: 'account', id: 'acc-over' } })
    expect(fired[0]?.reasons[0]).toMatchObject({ measured: 3, threshold: 3, passed: true })

    await sb.restart({ EVAL_INTERVAL_MS: '0', EVAL_ON_INGEST: 'false' })
    expect((await evaluate({ rule_ids: ['cross-api'] })).fired).toEqual([])
    const page = await json<{ data: Signal[] }>(await sb.admin('/v1/signals?rule_id=cross-api'))
    expect(page.data.map((s) => [s.subject.id, s.status, s.rule_version])).toEqual([['acc-over', 'open', 2]])

    // Crossing later fires for that subject too.
    await track('acc-under', 'Crossed', 1)
    expect((await evaluate({ rule_ids: ['cross-api'] })).fired.map((s) => s.subject.id)).toEqual(['acc-under'])
  })

  it('pages signals with a cursor and filters them', async () => {
    await put('page-api', countRule('page-api', 'Paged', 1, { kind: 'expansion' }))
    for (let i = 0; i < 5; i++) await track(`page-${i}`, 'Paged', 1)
    const out = await evaluate({ rule_ids: ['page-api'] })
    expect(out.fired).toHaveLength(5)
    const seen: string[] = []
    let after: string | null = null
    let pages = 0
    do {
      const q = new URLSearchParams({ rule_id: 'page-api', limit: '2', ...(after ? { after } : {}) })
      const res = await json<{ data: Signal[]; next: string | null }>(await sb.admin(`/v1/signals?${q}`))
      seen.push(...res.data.map((s) => s.id))
      after = res.next
      pages++
    } while (after && pages < 10)
    expect(seen).toEqual(out.fired.map((s) => s.id).sort())
    expect(pages).toBe(3)

    const get = async (q: string) => (await json<{ data: Signal[] }>(await sb.admin(`/v1/signals?${q}`))).data
    expect((await get('kind=expansion')).length).toBe(5)
    expect((await get('kind=expansion,pql&rule_id=page-api')).length).toBe(5)
    expect((await get('subject_type=account&subject_id=page-3')).map((s) => s.rule_id)).toEqual(['page-api'])
    expect((await get('rule_id=page-api&status=resolved')).length).toBe(0)
    expect((await get(`rule_id=page-api&from=${new Date(Date.now() + 60 * MIN).toISOString()}`)).length).toBe(0)
    expect((await get(`rule_id=page-api&to=${new Date(Date.now() + 60 * MIN).toISOString()}`)).length).toBe(5)
    const one = await sb.admin(`/v1/signals/${out.fired[0]?.id}`)
    expect(await json(one)).toMatchObject({ id: out.fired[0]?.id, rule_id: 'page-api' })
    const nope = await sb.admin('/v1/signals/sig_nope')
    expect(nope.status).toBe(404)
    expect(await json(nope)).toEqual({ error: { code: 'NOT_FOUND', message: 'no signal sig_nope' } })

    const bad = await sb.admin('/v1/signals?limit=0&kind=hot&after=nope')
    expect(bad.status).toBe(400)
    expect((await json<ErrorBody>(bad)).error.details?.map((d) => d.path).sort()).toEqual(['after', 'kind.0', 'limit'])
  })

  it('rejects bad evaluate requests', async () => {
    const res = await sb.admin('/v1/evaluate', { method: 'POST', body: JSON.stringify({ rule_ids: 'x' }) })
    expect(res.status).toBe(400)
    expect((await json<ErrorBody>(res)).error.details?.[0]?.path).toBe('rule_ids')
  })
})

describe('backtest API', () => {
  it('backtests a saved rule or an inline one without storing signals', async () => {
    await put('bt-api', countRule('bt-api', 'Backtested', 2))
    await track('bt-acc', 'Backtested', 2, 3 * 60 * MIN)
    const from = new Date(Date.now() - 6 * 60 * MIN).toISOString()
    const to = new Date(Date.now()).toISOString()
    const res = await sb.admin('/v1/rules/bt-api/backtest', { method: 'POST', body: JSON.stringify({ from, to, step: '1h' }) })
    expect(res.status).toBe(200)
    const body = await json<{ fired: { subject: { id: string }; at: string }[]; moments: number; rule_version: number }>(res)
    expect(body.moments).toBe(7)
    expect(body.rule_version).toBe(1)
    expect(body.fired.map((f) => f.subject.id)).toEqual(['bt-acc'])
    // the events are 3 h old: the first moment after them is 3 h before `to` (moments every hour from `from`).
    expect(Date.parse(body.fired[0]?.at as string)).toBe(Date.parse(from) + 3 * 60 * MIN)

    const inline = await sb.admin('/v1/rules/bt-inline/backtest', {
      method: 'POST',
      body: JSON.stringify({ from, to, step: '1h', rule: countRule('bt-inline', 'Backtested', 3) }),
    })
    expect(inline.status).toBe(200)
    expect((await json<{ fired: unknown[]; rule_version: null }>(inline))).toMatchObject({ fired: [], rule_version: null })
    expect((await json<{ data: unknown[] }>(await sb.admin('/v1/signals?rule_id=bt-api'))).data).toEqual([])

    const bad = await sb.admin('/v1/rules/bt-api/backtest', { method: 'POST', body: JSON.stringify({ from: to, to: from, step: '1h' }) })
    expect(bad.status).toBe(400)
    expect((await json<ErrorBody>(bad)).error.details?.[0]?.path).toBe('to')
    const tooMany = await sb.admin('/v1/rules/bt-api/backtest', { method: 'POST', body: JSON.stringify({ from: '2020-01-01T00:00:00Z', to, step: '1m' }) })
    expect((await json<ErrorBody>(tooMany)).error.details?.[0]?.path).toBe('step')
    const badRule = await sb.admin('/v1/rules/bt-x/backtest', { method: 'POST', body: JSON.stringify({ from, to, rule: { ...countRule('bt-x', 'B', 1), subject: 'team' } }) })
    expect((await json<ErrorBody>(badRule)).error.details?.[0]?.path).toBe('rule.subject')
    expect((await sb.admin('/v1/rules/never-saved/backtest', { method: 'POST', body: JSON.stringify({ from, to }) })).status).toBe(404)
  })
})

describe('subjects and stages', () => {
  it('shows an account: stage moved by its pql signal, traits, usage per day, open signals; a CRM moves it on', async () => {
    await put('pql-api', countRule('pql-api', 'Invited', 2))
    await sb.post('/v1/group', { userId: 'prof-acc-user', groupId: 'prof-acc', traits: { plan: 'free', seats: 5 } })
    await track('prof-acc', 'Invited', 2)
    const fired = (await evaluate({ rule_ids: ['pql-api'] })).fired
    expect(fired.map((s) => s.subject.id)).toEqual(['prof-acc'])

    const res = await sb.admin('/v1/accounts/prof-acc')
    expect(res.status).toBe(200)
    const p = await json<{
      stage: { name: string }
      stages: { to: string; cause: { type: string; id: string | null } }[]
      traits: Record<string, unknown>
      usage: { day: string; events: number; active_users: number }[]
      signals: Signal[]
      members: { id: string }[]
    }>(res)
    expect(p.stage.name).toBe('pql')
    expect(p.stages.map((t) => [t.to, t.cause.type])).toEqual([
      ['lead', 'first_seen'],
      ['pql', 'signal'],
    ])
    expect(p.stages[1]?.cause.id).toBe(fired[0]?.id)
    expect(p.traits).toEqual({ plan: 'free', seats: 5 })
    expect(p.usage).toHaveLength(30)
    expect(p.usage.at(-1)?.day).toBe(new Date().toISOString().slice(0, 10))
    expect(p.usage.find((d) => d.events > 0)).toEqual({ day: new Date(Date.now() - 5 * MIN).toISOString().slice(0, 10), events: 2, active_users: 1 })
    expect(p.usage.reduce((n, d) => n + d.events, 0)).toBe(2)
    expect(p.signals.map((s) => s.id)).toEqual([fired[0]?.id])
    expect(p.members.map((m) => m.id)).toEqual(['prof-acc-user'])

    const moved = await sb.admin('/v1/subjects/account/prof-acc/stage', { method: 'POST', body: JSON.stringify({ stage: 'sql', reason: 'accepted by AE' }) })
    expect(moved.status).toBe(201)
    expect(await json(moved)).toMatchObject({ from: 'pql', to: 'sql', cause: { type: 'api', reason: 'accepted by AE' } })
    expect((await json<{ stage: { name: string } }>(await sb.admin('/v1/accounts/prof-acc'))).stage.name).toBe('sql')

    const user = await json<{ stage: { name: string }; members: { id: string }[]; usage: { events: number }[] }>(await sb.admin('/v1/users/prof-acc-user'))
    expect(user.stage.name).toBe('lead')
    expect(user.members.map((m) => m.id)).toEqual(['prof-acc'])
    expect(user.usage.reduce((n, d) => n + d.events, 0)).toBe(2)

    const bad = await sb.admin('/v1/subjects/account/prof-acc/stage', { method: 'POST', body: JSON.stringify({ stage: 'won' }) })
    expect(bad.status).toBe(400)
    expect((await json<ErrorBody>(bad)).error.details?.[0]?.path).toBe('stage')
    expect((await sb.admin('/v1/subjects/team/x/stage', { method: 'POST', body: JSON.stringify({ stage: 'sql' }) })).status).toBe(400)
    expect((await sb.admin('/v1/accounts/never-seen')).status).toBe(404)
    expect((await sb.admin('/v1/users/never-seen')).status).toBe(404)
  })

  it('reports the funnel', async () => {
    const res = await sb.admin(`/v1/funnel?from=${new Date(Date.now() - 24 * 60 * MIN).toISOString()}`)
    expect(res.status).toBe(200)
    const f = await json<{ stages: { stage: string; entered: number }[]; subject_type: string }>(res)
    expect(f.subject_type).toBe('account')
    expect(f.stages.map((s) => s.stage)).toEqual(['lead', 'mql', 'pql', 'sql', 'customer', 'churn_risk', 'churned'])
    expect(f.stages.find((s) => s.stage === 'sql')?.entered).toBe(1)
    expect((await sb.admin('/v1/funnel?subject_type=team')).status).toBe(400)
  })
})

describe('ingestion-triggered evaluation', () => {
  it('turns a threshold crossing into a signal within seconds, without an explicit evaluation', async () => {
    await sb.restart({ EVAL_INTERVAL_MS: '0', EVAL_ON_INGEST: 'true', EVAL_DEBOUNCE_MS: '100' })
    await put('live-api', countRule('live-api', 'Live', 3))
    await track('live-acc', 'Live', 2)
    const started = Date.now()
    await track('live-acc', 'Live', 1, MIN)
    const found = await until(
      async () => {
        const { data } = await json<{ data: Signal[] }>(await sb.admin('/v1/signals?rule_id=live-api'))
        return data.length ? data : undefined
      },
      { what: 'the live signal', timeoutMs: 10_000, everyMs: 50 },
    )
    expect(found.map((s) => s.subject.id)).toEqual(['live-acc'])
    expect(Date.now() - started).toBeLessThan(10_000)
  })

  it('does not store the default pack again after a restart', async () => {
    for (const id of defaults) expect((await sb.admin(`/v1/rules/${id}`, { method: 'DELETE' })).status).toBe(200)
    await sb.restart({ EVAL_INTERVAL_MS: '0', EVAL_ON_INGEST: 'false' })
    const { data } = await json<{ data: { id: string }[] }>(await sb.admin('/v1/rules'))
    for (const id of defaults) expect(data.map((r) => r.id)).not.toContain(id)
  })
})

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { QualityReport } from '../src/quality/quality.js'
import type { Signal } from '../src/signals.js'
import { startTestServer, type TestServer } from './harness.js'

let sb: TestServer
beforeAll(async () => {
  sb = await startTestServer({ EVAL_INTERVAL_MS: '0', EVAL_ON_INGEST: 'false' })
})
afterAll(async () => {
  await sb.stop()
})

const DAY = 86_400_000
type ErrorBody = { error: { code: string; message: string; details?: { path: string; message: string }[] } }
const json = async <T = Record<string, unknown>>(res: Response) => (await res.json()) as T
const put = (path: string, body: string | object, contentType = 'application/json') =>
  sb.admin(path, { method: 'PUT', body: typeof body === 'string' ? body : JSON.stringify(body), headers: { 'content-type': contentType } })

async function batch(messages: object[]) {
  const res = await sb.post('/v1/batch', { batch: messages })
  expect(res.status).toBe(200)
  expect((await json<{ rejected: unknown[] }>(res)).rejected).toEqual([])
}

describe('outcomes API', () => {
  it('ships the default outcomes and publishes the JSON Schema', async () => {
    const list = await json<{ data: { id: string }[] }>(await sb.admin('/v1/outcomes'))
    expect(list.data.map((o) => o.id)).toEqual(['churned', 'converted', 'expanded'])
    const schema = await json<{ properties: Record<string, unknown> }>(await sb.admin('/v1/outcomes/schema'))
    expect(Object.keys(schema.properties).sort()).toEqual(['description', 'id', 'reached', 'subject'])
  })

  it('PUT stores YAML or JSON as versions; GET any version; DELETE leaves a tombstone', async () => {
    const yaml = 'subject: account\nreached:\n  any:\n    - { stage: customer }\n    - { event: Order Completed }\n'
    const created = await put('/v1/outcomes/won', yaml, 'application/yaml')
    expect(created.status).toBe(201)
    expect(await json(created)).toMatchObject({ id: 'won', version: 1, status: 'created', outcome: { subject: 'account' } })
    expect((await json(await put('/v1/outcomes/won', yaml, 'application/yaml'))).status).toBe('unchanged')
    const updated = await put('/v1/outcomes/won', { id: 'won', subject: 'account', reached: { stage: 'customer' } })
    expect(await json(updated)).toMatchObject({ version: 2, status: 'updated' })
    expect(await json(await sb.admin('/v1/outcomes/won?version=1'))).toMatchObject({ version: 1, outcome: { reached: { any: [{ stage: 'customer' }, { event: 'Order Completed' }] } } })
    expect((await json<{ data: unknown[] }>(await sb.admin('/v1/outcomes/won/versions'))).data).toHaveLength(2)
    expect(await json(await sb.admin('/v1/outcomes/won', { method: 'DELETE' }))).toEqual({ id: 'won', version: 3, deleted: true })
    expect((await sb.admin('/v1/outcomes/won')).status).toBe(404)
    expect((await sb.admin('/v1/outcomes/won', { method: 'DELETE' })).status).toBe(404)
  })

  it('names the path of what is wrong', async () => {
    const cases: [string, object, string][] = [
      ['bad1', { subject: 'account', reached: { any: [{ stage: 'customer' }, { trait: 'plan', op: 'gt', value: 'x' }] } }, 'reached.any.1.value'],
      ['bad2', { subject: 'team', reached: { stage: 'customer' } }, 'subject'],
      ['bad3', { subject: 'account', reached: { evnt: 'x' } }, 'reached'],
      ['bad4', { id: 'other', subject: 'account', reached: { stage: 'x' } }, 'id'],
      ['bad5', { subject: 'account', reached: { stage: 'x' }, horizon: '30d' }, '(root)'],
    ]
    for (const [id, body, path] of cases) {
      const res = await put(`/v1/outcomes/${id}`, body)
      expect(res.status, id).toBe(400)
      expect((await json<ErrorBody>(res)).error.details?.[0]?.path, id).toBe(path)
    }
    expect((await put('/v1/outcomes/-bad', { subject: 'account', reached: { stage: 'x' } })).status).toBe(400)
  })
})

describe('quality API', () => {
  it('reports a saved rule: its fire is pending while its horizon runs; feedback gives the useful share', async () => {
    const rule = { id: 'qa-pql', kind: 'pql', subject: 'account', when: { all: [{ metric: 'count', event: 'Qa Sent', window: '1d', op: 'gte', value: 2 }] } }
    expect((await put('/v1/rules/qa-pql', rule)).status).toBe(201)
    const at = Date.now() - 60_000
    await batch([0, 1].map((i) => ({ type: 'track', userId: 'qa-u', event: 'Qa Sent', messageId: `qa-${i}`, timestamp: new Date(at).toISOString(), context: { groupId: 'qa-acc' } })))
    const out = await json<{ fired: Signal[] }>(await sb.admin('/v1/evaluate', { method: 'POST', body: JSON.stringify({ rule_ids: ['qa-pql'] }) }))
    expect(out.fired.map((s) => s.subject.id)).toEqual(['qa-acc'])
    expect((await sb.admin(`/v1/signals/${out.fired[0]?.id}/feedback`, { method: 'POST', body: '{"verdict":"useful"}' })).status).toBe(201)

    const r = await json<QualityReport>(await sb.admin('/v1/rules/qa-pql/quality'))
    expect(r).toMatchObject({ rule_id: 'qa-pql', outcome: 'converted', horizon: '30d', fired: 1, pending: 1, fired_reached: 0, precision: null, useful_share: 1 })
    const longer = await json<QualityReport>(await sb.admin('/v1/rules/qa-pql/quality?horizon=1ms'))
    expect([longer.horizon, longer.pending, longer.precision]).toEqual(['1ms', 0, 0])

    const bad = await sb.admin('/v1/rules/qa-pql/quality?horizon=soon&from=yesterday')
    expect(bad.status).toBe(400)
    expect((await json<ErrorBody>(bad)).error.details?.map((d) => d.path).sort()).toEqual(['from', 'horizon'])
    expect((await sb.admin('/v1/rules/nope/quality')).status).toBe(404)

    // The funnel split by this rule, month by month.
    const funnel = await json<{ signal: { rule_id: string; fired: { stages: { stage: string; entered: number }[] } }; cohorts: { month: string }[] }>(
      await sb.admin('/v1/funnel?signal=qa-pql&cohort=month'),
    )
    expect(funnel.signal.rule_id).toBe('qa-pql')
    expect(funnel.signal.fired.stages.find((x) => x.stage === 'pql')?.entered).toBe(1)
    expect(funnel.cohorts.at(-1)?.month).toBe(new Date().toISOString().slice(0, 7))
    const nf = await sb.admin('/v1/funnel?signal=nope')
    expect([nf.status, (await json<ErrorBody>(nf)).error.message]).toEqual([404, 'no rule nope'])
    const badCohort = await sb.admin('/v1/funnel?cohort=week')
    expect((await json<ErrorBody>(badCohort)).error.details?.[0]?.path).toBe('cohort')
  })

  it('backtests two thresholds of a draft side by side with different precision', async () => {
    // 4 accounts send 10 messages, 4 send 4; only the busy ones go on to order within 30 days.
    const t = Date.now() - 45 * DAY
    const messages: object[] = []
    for (let a = 0; a < 8; a++) {
      const busy = a < 4
      const acc = `bt-${busy ? 'busy' : 'light'}-${a}`
      messages.push({ type: 'group', userId: `${acc}-u`, groupId: acc, traits: { plan: 'free' }, messageId: `${acc}-g`, timestamp: new Date(t - 5 * DAY).toISOString() })
      for (let i = 0; i < (busy ? 10 : 4); i++) {
        messages.push({ type: 'track', userId: `${acc}-u`, event: 'Bt Sent', messageId: `${acc}-${i}`, timestamp: new Date(t + i * 60_000).toISOString(), context: { groupId: acc } })
      }
      if (busy) messages.push({ type: 'track', userId: `${acc}-u`, event: 'Order Completed', messageId: `${acc}-o`, timestamp: new Date(t + 5 * DAY).toISOString(), context: { groupId: acc } })
    }
    await batch(messages)
    expect((await put('/v1/outcomes/bt-ordered', { subject: 'account', reached: { event: 'Order Completed' } })).status).toBe(201)
    const draft = (value: number) => ({
      id: 'bt-draft',
      kind: 'pql',
      subject: 'account',
      where: [{ trait: 'plan', op: 'eq', value: 'free' }],
      when: { all: [{ metric: 'count', event: 'Bt Sent', window: '7d', op: 'gte', value }] },
      outcome: 'bt-ordered',
    })
    const run = async (value: number) => {
      const body = { from: new Date(t - DAY).toISOString(), to: new Date(t + 3 * DAY).toISOString(), step: '1d', rule: draft(value) }
      const res = await sb.admin('/v1/rules/bt-draft/backtest', { method: 'POST', body: JSON.stringify(body) })
      expect(res.status).toBe(200)
      return json<{ fired: unknown[]; quality: QualityReport }>(res)
    }
    const [low, high] = await Promise.all([run(3), run(8)])
    expect([low.fired.length, low.quality.fired, low.quality.fired_reached, low.quality.precision]).toEqual([8, 8, 4, 0.5])
    expect([high.fired.length, high.quality.fired, high.quality.fired_reached, high.quality.precision]).toEqual([4, 4, 4, 1])
    expect(high.quality.lead_time.median_s).toBeGreaterThan(0)
    expect(high.quality.useful_share).toBeNull()

    // A custom rule has no outcome to judge it by: the backtest still answers.
    const custom = { ...draft(3), kind: 'custom', outcome: undefined }
    const res = await sb.admin('/v1/rules/bt-draft/backtest', { method: 'POST', body: JSON.stringify({ from: new Date(t).toISOString(), to: new Date(t + DAY).toISOString(), rule: custom }) })
    expect(await json(res)).toMatchObject({ quality: null, quality_unavailable: expect.stringMatching(/names no outcome/) })
  })
})

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Feedback, feedbackOf, recordFeedback } from '../src/feedback/feedback.js'
import type { Signal } from '../src/signals.js'
import { startTestServer, type TestServer, WRITE_KEY } from './harness.js'

let sb: TestServer
beforeAll(async () => {
  sb = await startTestServer({ EVAL_INTERVAL_MS: '0', EVAL_ON_INGEST: 'false' })
})
afterAll(async () => {
  await sb.stop()
})

type ErrorBody = { error: { code: string; message: string; details?: { path: string; message: string }[] } }
type WithFeedback = Signal & { feedback: Feedback[] }
const json = async <T>(res: Response) => (await res.json()) as T
const feedback = (id: string, body: unknown, headers: Record<string, string> = {}) =>
  sb.admin(`/v1/signals/${id}/feedback`, { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body), headers })

/** Two signals of one rule, fired through the real evaluator. */
async function fireTwo(): Promise<Signal[]> {
  const rule = { id: 'fb-rule', kind: 'pql', subject: 'account', when: { all: [{ metric: 'count', event: 'Fb Done', window: '1d', op: 'gte', value: 1 }] } }
  expect((await sb.admin('/v1/rules/fb-rule', { method: 'PUT', body: JSON.stringify(rule) })).status).toBe(201)
  const at = Date.now() - 60_000
  const batch = ['fb-a', 'fb-b'].map((acc, i) => ({ type: 'track', userId: `${acc}-u`, event: 'Fb Done', messageId: `fb-${i}`, timestamp: new Date(at).toISOString(), context: { groupId: acc } }))
  expect((await sb.post('/v1/batch', { batch })).status).toBe(200)
  const out = await json<{ fired: Signal[] }>(await sb.admin('/v1/evaluate', { method: 'POST', body: JSON.stringify({ rule_ids: ['fb-rule'] }) }))
  expect(out.fired).toHaveLength(2)
  return [...out.fired].sort((a, b) => a.subject.id.localeCompare(b.subject.id))
}

describe('signal feedback', () => {
  let a: Signal
  let b: Signal
  beforeAll(async () => {
    ;[a, b] = (await fireTwo()) as [Signal, Signal]
  })

  it('stores a verdict (201) and returns it with the signal, oldest first', async () => {
    const first = await feedback(a.id, { verdict: 'not_useful', reason: 'already a customer', by: 'ana@example.com' })
    expect(first.status).toBe(201)
    const one = await json<Feedback>(first)
    expect(Feedback.parse(one)).toEqual(one)
    expect(one).toMatchObject({ signal_id: a.id, verdict: 'not_useful', reason: 'already a customer', by: 'ana@example.com' })
    expect(one.id).toMatch(/^fb_[0-9A-HJKMNP-TV-Z]{26}$/)

    const second = await json<Feedback>(await feedback(a.id, { verdict: 'useful' }))
    expect(second).toMatchObject({ verdict: 'useful', reason: null, by: null })

    const got = await json<WithFeedback>(await sb.admin(`/v1/signals/${a.id}`))
    expect(got.feedback.map((f) => [f.id, f.verdict])).toEqual([
      [one.id, 'not_useful'],
      [second.id, 'useful'],
    ])
    expect(got.feedback[0]).toEqual(one)

    const page = await json<{ data: WithFeedback[] }>(await sb.admin('/v1/signals?rule_id=fb-rule'))
    const byId = new Map(page.data.map((s) => [s.id, s.feedback.map((f) => f.verdict)]))
    expect(byId.get(a.id)).toEqual(['not_useful', 'useful'])
    expect(byId.get(b.id)).toEqual([])
  })

  it('answers 404 for a signal that is not stored, 400 naming the path for a bad body, and needs the admin token', async () => {
    const missing = 'sig_01ARZ3NDEKTSV4RRFFQ69G5FAV'
    const nf = await feedback(missing, { verdict: 'useful' })
    expect(nf.status).toBe(404)
    expect((await json<ErrorBody>(nf)).error.message).toBe(`no signal ${missing}`)

    const cases: [unknown, string][] = [
      [{ verdict: 'great' }, 'verdict'],
      [{}, 'verdict'],
      [{ verdict: 'useful', reason: 'x'.repeat(1001) }, 'reason'],
      [{ verdict: 'useful', by: 'x'.repeat(201) }, 'by'],
      [{ verdict: 'useful', by: 7 }, 'by'],
      [{ verdict: 'useful', extra: true }, '(root)'],
    ]
    for (const [body, path] of cases) {
      const res = await feedback(b.id, body)
      expect(res.status, JSON.stringify(body)).toBe(400)
      const err = await json<ErrorBody>(res)
      expect(err.error.details?.[0]?.path, JSON.stringify(body)).toBe(path)
    }
    expect((await feedback(b.id, '{not json')).status).toBe(400)
    const badId = await feedback('sig_nope', { verdict: 'useful' })
    expect(badId.status).toBe(404)
    expect((await json<ErrorBody>(badId)).error.message).toBe('no signal sig_nope')

    const noToken = await fetch(`${sb.url}/v1/signals/${b.id}/feedback`, { method: 'POST', body: '{"verdict":"useful"}' })
    expect(noToken.status).toBe(401)
    const writeKey = await fetch(`${sb.url}/v1/signals/${b.id}/feedback`, {
      method: 'POST',
      headers: { authorization: `Bearer ${WRITE_KEY}`, 'content-type': 'application/json' },
      body: '{"verdict":"useful"}',
    })
    expect(writeKey.status).toBe(403)
    // None of the refused requests stored anything.
    expect((await json<WithFeedback>(await sb.admin(`/v1/signals/${b.id}`))).feedback).toEqual([])
  })

  it('recordFeedback / feedbackOf work on the store with the given clock, and are data to SQL', async () => {
    const store = sb.server.store
    const now = Date.UTC(2026, 4, 1, 9, 30)
    const evil = "x'); DROP TABLE signal_feedback_v1; --"
    const f = await recordFeedback(store, { signal_id: b.id, verdict: 'useful', reason: evil, by: '{by:String}' }, now)
    expect(f.created_at).toBe('2026-05-01T09:30:00.000Z')
    const map = await feedbackOf(store, [b.id, 'sig_01ARZ3NDEKTSV4RRFFQ69G5FAV'])
    expect(map.get(b.id)).toEqual([f])
    expect(map.get('sig_01ARZ3NDEKTSV4RRFFQ69G5FAV')).toEqual([])
    await expect(recordFeedback(store, { signal_id: 'sig_01ARZ3NDEKTSV4RRFFQ69G5FAV', verdict: 'useful' }, now)).rejects.toThrow(/no signal/)
  })
})

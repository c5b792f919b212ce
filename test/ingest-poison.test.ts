import { connect } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MAX_DEPTH } from '../ingest/json.js'
import { ADMIN_TOKEN, startTestServer, type TestServer } from './harness.js'

// Inputs that once broke ingestion for everyone (issue 15): a lone UTF-16 surrogate poisoning a
// shared group-commit block, deep nesting, huge numbers; and the minor cases found with them.

let sb: TestServer
const store = () => sb.server.store
beforeAll(async () => {
  // A long quiet period, so that concurrent requests surely share one block.
  sb = await startTestServer({ INGEST_FLUSH_MS: '40' })
})
afterAll(async () => {
  await sb?.stop()
})

let seq = 0
const uid = (prefix: string) => `${prefix}-${++seq}-${Date.now()}`
const iso = (ms: number) => new Date(ms).toISOString()
const storedIds = async (ids: string[]) =>
  (await store().query<{ message_id: string }>('SELECT message_id FROM events_v1 WHERE message_id IN {ids:Array(String)} ORDER BY message_id', { ids })).map(
    (r) => r.message_id,
  )
const track = (messageId: string, extra: Record<string, unknown> = {}) => ({
  type: 'track',
  messageId,
  userId: 'poison-user',
  event: 'Report Exported',
  properties: { format: 'csv' },
  timestamp: iso(Date.now() - 1000),
  ...extra,
})
const errorsFor = (messageId: string) =>
  store().query<{ level: string; path: string; message: string; batch_index: number }>(
    'SELECT level, path, message, batch_index FROM ingest_errors_v1 WHERE message_id = {id:String} ORDER BY path',
    { id: messageId },
  )

describe('a lone surrogate never fails the block it shares', () => {
  const poisons: [string, (id: string) => Record<string, unknown>, (id: string) => Promise<unknown>][] = [
    [
      'userId',
      (id) => track(id, { userId: `u-\ud800-${id}` }),
      async (id) => (await store().query('SELECT user_id FROM users_v1 WHERE user_id = {u:String}', { u: `u-\ufffd-${id}` })).length,
    ],
    ['messageId', (id) => track(`${id}-\udc00`), async (id) => (await storedIds([`${id}-\ufffd`])).length],
    [
      'a trait key',
      (id) => ({ type: 'identify', messageId: id, userId: `trait-${id}`, traits: { 'plan\ud83d': 'pro' } }),
      async (id) => (await store().query('SELECT key FROM user_traits_v1 WHERE user_id = {u:String}', { u: `trait-${id}` })).map((r) => r.key),
    ],
  ]
  for (const [where, poisoned, stored] of poisons) {
    it(`in ${where}: 20 good requests sent beside it are all stored and answered 200; the poisoned one is stored with U+FFFD`, async () => {
      const good = Array.from({ length: 20 }, () => uid('good'))
      const bad = uid('bad')
      const sends = [...good.map((id) => sb.post('/v1/track', track(id))), sb.post('/v1/batch', { batch: [poisoned(bad)] })]
      const responses = await Promise.all(sends)
      expect(responses.map((r) => r.status)).toEqual(Array(21).fill(200))
      expect(await responses[20]?.json()).toEqual({ success: true, accepted: 1, rejected: [] })
      expect(await storedIds(good)).toEqual([...good].sort())
      expect(await stored(bad)).toEqual(where === 'a trait key' ? ['plan\ufffd'] : 1)
    })
  }

  it('a lone surrogate in a batch context, an event name and a property value is replaced too', async () => {
    const id = uid('ctx')
    const res = await sb.post('/v1/batch', { batch: [track(id, { event: 'Sent \udfff', properties: { '\ud800': '\udbff!' } })], context: { page: { title: 'x\ud800' } } })
    expect(await res.json()).toEqual({ success: true, accepted: 1, rejected: [] })
    const [row] = await store().query<{ event: string; properties: string; context: string }>(
      'SELECT event, properties, context FROM events_v1 WHERE message_id = {id:String}',
      { id },
    )
    expect(row?.event).toBe('Sent \ufffd')
    expect(JSON.parse(row?.properties ?? '')).toEqual({ '\ufffd': '\ufffd!' })
    expect(JSON.parse(row?.context ?? '')).toEqual({ page: { title: 'x\ufffd' } })
  })
})

/** `{"a":` … nested `depth` levels (arrays inside one object) … `}`, as text: JSON.stringify itself would overflow. */
const nested = (depth: number) => `${'['.repeat(depth)}${']'.repeat(depth)}`

describe(`nesting deeper than ${MAX_DEPTH} levels is rejected on its own`, () => {
  for (const field of ['properties', 'traits', 'context']) {
    it(`${field} nested 5,000 levels: the message is rejected with its path, the good one beside it is stored`, async () => {
      const [bad, good] = [uid('deep'), uid('deep-good')]
      const type = field === 'traits' ? 'identify' : 'track'
      const body = `{"batch":[{"type":"${type}","messageId":"${bad}","userId":"deep-user","event":"Deep","${field}":{"x":${nested(5000)}}},${JSON.stringify(track(good))}]}`
      const res = await sb.post('/v1/batch', body)
      expect(res.status).toBe(200)
      const json = (await res.json()) as { accepted: number; rejected: { index: number; path: string; message: string }[] }
      expect(json.accepted).toBe(1)
      expect(json.rejected).toEqual([{ index: 0, path: expect.stringMatching(new RegExp(`^${field}\\.x(\\.0)+$`)), message: `nested more than ${MAX_DEPTH} levels deep` }])
      expect(await storedIds([bad, good])).toEqual([good])
      expect(await errorsFor(bad)).toEqual([expect.objectContaining({ level: 'error', batch_index: 0, message: `nested more than ${MAX_DEPTH} levels deep` })])
    })
  }

  it('a single message nested 5,000 levels gets 400 with the path', async () => {
    const res = await sb.post('/v1/track', `{"userId":"deep-user","event":"Deep","properties":{"x":${nested(5000)}}}`)
    expect(res.status).toBe(400)
    const { error } = (await res.json()) as { error: { code: string; details: { path: string; message: string }[] } }
    expect(error.code).toBe('BAD_REQUEST')
    expect(error.details).toEqual([{ path: expect.stringMatching(/^properties\.x(\.0)+$/), message: `nested more than ${MAX_DEPTH} levels deep` }])
  })

  it('200,000 levels (the most 500 KB can hold) is a 400, not a crash', async () => {
    const res = await sb.post('/v1/track', `{"userId":"deep-user","event":"Deep","properties":{"x":${nested(200_000)}}}`)
    expect(res.status).toBe(400)
    expect((await fetch(`${sb.url}/health`)).status).toBe(200)
  })

  it(`exactly ${MAX_DEPTH} levels is stored`, async () => {
    const id = uid('limit')
    // The message is level 1, properties level 2, and the arrays inside it the rest.
    const res = await sb.post('/v1/track', `{"messageId":"${id}","userId":"deep-user","event":"Deep","properties":{"x":${nested(MAX_DEPTH - 2)}}}`)
    expect(res.status).toBe(200)
    expect(await storedIds([id])).toEqual([id])
  })

  it('a batch context nested too deep rejects the batch with 400 and the path', async () => {
    const res = await sb.post('/v1/batch', `{"batch":[${JSON.stringify(track(uid('ctx-deep')))}],"context":{"x":${nested(5000)}}}`)
    expect(res.status).toBe(400)
    const { error } = (await res.json()) as { error: { details: { path: string }[] } }
    expect(error.details[0]?.path).toMatch(/^context\.x(\.0)+$/)
  })
})

describe('numbers are kept as sent', () => {
  it('integers beyond 2^53 keep every digit in properties, traits and the trait read back', async () => {
    const [t, i] = [uid('bigint'), uid('bigint')]
    const user = uid('big-user')
    const body = `{"batch":[
      {"type":"track","messageId":"${t}","userId":"${user}","event":"Big","properties":{"n":9007199254740993,"list":[18446744073709551621,-9223372036854775813]}},
      {"type":"identify","messageId":"${i}","userId":"${user}","traits":{"big":9223372036854775813,"small":1.5}}]}`
    const res = await sb.post('/v1/batch', body)
    expect(await res.json()).toEqual({ success: true, accepted: 2, rejected: [] })
    const [row] = await store().query<{ properties: string }>('SELECT properties FROM events_v1 WHERE message_id = {id:String}', { id: t })
    expect(row?.properties).toBe('{"n":9007199254740993,"list":[18446744073709551621,-9223372036854775813]}')
    const traits = await store().query<{ key: string; value: string }>('SELECT key, value FROM user_traits_v1 WHERE user_id = {u:String} ORDER BY key', { u: user })
    expect(traits).toEqual([
      { key: 'big', value: '9223372036854775813' },
      { key: 'small', value: '1.5' },
    ])
    const [ev] = await store().query<{ traits: string }>('SELECT traits FROM events_v1 WHERE message_id = {id:String}', { id: i })
    expect(ev?.traits).toBe('{"big":9223372036854775813,"small":1.5}')
    // Read back through the API, still every digit.
    const profile = await (await sb.admin(`/v1/users/${user}`)).text()
    expect(profile).toContain('"traits":{"big":9223372036854775813,"small":1.5}')
  })

  it('a numeric id beyond 2^53 is stored with every digit', async () => {
    const id = uid('bigid')
    const res = await sb.post('/v1/track', `{"messageId":"${id}","userId":123456789012345678901,"event":"Big"}`)
    expect(res.status).toBe(200)
    const [row] = await store().query<{ user_id: string }>('SELECT user_id FROM events_v1 WHERE message_id = {id:String}', { id })
    expect(row?.user_id).toBe('123456789012345678901')
  })

  it('1e309 (beyond a 64-bit float) is stored as sent, not as null; an underflow is the nearest double, 0', async () => {
    const id = uid('inf')
    const res = await sb.post('/v1/track', `{"messageId":"${id}","userId":"inf-user","event":"Inf","properties":{"huge":1e309,"tiny":-1e-400,"ok":2.5e10}}`)
    expect(res.status).toBe(200)
    const [row] = await store().query<{ properties: string }>('SELECT properties FROM events_v1 WHERE message_id = {id:String}', { id })
    expect(row?.properties).toBe('{"huge":1e309,"tiny":0,"ok":25000000000}')
  })
})

describe('accepted counts each message once', () => {
  it('a messageId repeated inside one batch is stored once and counted once', async () => {
    const [a, b] = [uid('dup'), uid('dup')]
    const res = await sb.post('/v1/batch', { batch: [track(a), track(a), track(b), track(a)] })
    expect(await res.json()).toEqual({ success: true, accepted: 2, rejected: [] })
    expect(await storedIds([a, b])).toEqual([a, b].sort())
  })

  it('a batch resent as a whole gets the same answer (accepted counts messages already stored)', async () => {
    const batch = [track(uid('resend')), track(uid('resend'))]
    const first = await (await sb.post('/v1/batch', { batch })).json()
    const again = await (await sb.post('/v1/batch', { batch })).json()
    expect(again).toEqual(first)
    expect(first).toEqual({ success: true, accepted: 2, rejected: [] })
  })
})

describe('the minor cases', () => {
  it('a body shorter than its content-length gets 400 with the {error} shape', async () => {
    const { port } = new URL(sb.url)
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1', () => {
        socket.end('POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"userId":"a"}')
      })
      let text = ''
      socket.setEncoding('utf8').on('data', (d: string) => (text += d))
      socket.on('close', () => resolve(text))
      socket.on('error', reject)
    })
    expect(answer).toMatch(/^HTTP\/1\.1 400 /)
    const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as { error: { code: string; message: string } }
    expect(body.error.code).toBe('BAD_REQUEST')
    expect(body.error.message).toMatch(/body/)
  })

  it('the stream refuses the admin token sent as a Basic username', async () => {
    const res = await fetch(`${sb.url}/v1/signals/stream`, { headers: { authorization: `Basic ${Buffer.from(`${ADMIN_TOKEN}:`).toString('base64')}` } })
    expect(res.status).toBe(401)
    await res.body?.cancel()
  })
})

import { type IncomingMessage, request } from 'node:http'
import { createParser } from 'eventsource-parser'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { SignalEvent } from '../src/signals.js'
import { fire, makeSignal } from './delivery-helpers.js'
import { until } from './poll.js'
import { ADMIN_TOKEN, startTestServer, type TestServer, WRITE_KEY } from './harness.js'

const READ_TOKEN = 'read_token_for_the_stream_0001'

let sb: TestServer
beforeAll(async () => {
  sb = await startTestServer({
    RULES_DEFAULT_PACK: 'false',
    EVAL_INTERVAL_MS: '0',
    EVAL_ON_INGEST: 'false',
    READ_TOKENS: READ_TOKEN,
    STREAM_HEARTBEAT_MS: '100',
  })
})
afterAll(async () => {
  await sb?.stop()
})

type Message = { id?: string; event?: string; data: string }

/**
 * A plain SSE client: node:http + eventsource-parser, recording messages and comments. (node:http
 * rather than fetch: undici opens a spare connection after an aborted fetch, which a server
 * shutting down then waits for.)
 */
async function connect(opts: { query?: string; lastEventId?: string; token?: string } = {}) {
  const messages: Message[] = []
  const comments: string[] = []
  let ended = false
  const parser = createParser({ onEvent: (m) => messages.push(m), onComment: (c) => comments.push(c.trim()) })
  const req = request(`${sb.url}/v1/signals/stream${opts.query ?? ''}`, {
    headers: {
      authorization: `Bearer ${opts.token ?? READ_TOKEN}`,
      ...(opts.lastEventId ? { 'last-event-id': opts.lastEventId } : {}),
    },
  })
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    req.on('response', resolve)
    req.on('error', reject)
    req.end()
  })
  expect(res.statusCode).toBe(200)
  expect(res.headers['content-type']).toMatch(/^text\/event-stream/)
  res.setEncoding('utf8')
  res.on('data', (chunk: string) => parser.feed(chunk))
  res.on('close', () => {
    ended = true
  })
  await until(() => comments.includes('connected'), { what: 'the stream to open' })
  return {
    messages,
    comments,
    get ended() {
      return ended
    },
    events: () => messages.map((m) => SignalEvent.parse(JSON.parse(m.data))),
    async close() {
      req.destroy()
      await until(() => ended)
    },
  }
}

describe('GET /v1/signals/stream', () => {
  it('takes a read token or the admin token; refuses a write key, another token or none', async () => {
    const get = (authorization?: string) => fetch(`${sb.url}/v1/signals/stream`, { headers: authorization ? { authorization } : {} })
    const none = await get()
    expect(none.status).toBe(401)
    const write = await get(`Bearer ${WRITE_KEY}`)
    expect(write.status).toBe(403)
    expect(((await write.json()) as { error: { message: string } }).error.message).toMatch(/write key only writes/)
    expect((await get(`Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`)).status).toBe(403)
    expect((await get('Bearer not_a_token_we_know_of_0000')).status).toBe(403)
    for (const token of [READ_TOKEN, ADMIN_TOKEN]) {
      const s = await connect({ token })
      await s.close()
    }
    // The read token reads the stream and nothing else.
    expect((await fetch(`${sb.url}/v1/webhooks`, { headers: { authorization: `Bearer ${READ_TOKEN}` } })).status).toBe(403)
  })

  it('names a bad filter or resume position', async () => {
    const bad = await fetch(`${sb.url}/v1/signals/stream?kinds=pql,vip`, { headers: { authorization: `Bearer ${READ_TOKEN}` } })
    expect(bad.status).toBe(400)
    expect(((await bad.json()) as { error: { details: { path: string }[] } }).error.details[0]?.path).toBe('kinds.1')
    const badId = await fetch(`${sb.url}/v1/signals/stream`, { headers: { authorization: `Bearer ${READ_TOKEN}`, 'last-event-id': 'sig_123' } })
    expect(badId.status).toBe(400)
    expect(((await badId.json()) as { error: { details: { path: string }[] } }).error.details[0]?.path).toBe('Last-Event-ID')
  })

  it('streams live signals of the kinds asked for: id = the log event id, event = its type, data = the signal event', async () => {
    const s = await connect({ query: '?kinds=pql,churn_risk' })
    const pql = makeSignal({ kind: 'pql' })
    const mql = makeSignal({ kind: 'mql' })
    const churn = makeSignal({ kind: 'churn_risk' })
    const events = await fire(sb.server.store, sb.server.bus, pql, mql, churn)
    await until(() => s.messages.length >= 2)
    await s.close()
    expect(s.messages.map((m) => [m.id, m.event])).toEqual([
      [events[0]?.id, 'signal.fired'],
      [events[2]?.id, 'signal.fired'],
    ])
    expect(s.events()).toEqual([events[0], events[2]])
  })

  it('sends heartbeats', async () => {
    const s = await connect()
    await until(() => s.comments.filter((c) => c === 'heartbeat').length >= 2, { what: 'two heartbeats' })
    await s.close()
    expect(s.messages).toHaveLength(0)
  })

  it('disconnect, two signals fire, reconnect with Last-Event-ID: exactly those two arrive, then live ones', async () => {
    const first = await connect()
    const [a] = await fire(sb.server.store, sb.server.bus, makeSignal())
    await until(() => first.messages.length === 1)
    await first.close()
    const lastId = first.messages[0]?.id
    expect(lastId).toBe(a?.id)

    const [b] = await fire(sb.server.store, sb.server.bus, makeSignal())
    const [c] = await fire(sb.server.store, sb.server.bus, { type: 'signal.resolved', signal: makeSignal({ status: 'resolved', resolved_at: new Date().toISOString() }) })
    const again = await connect({ lastEventId: lastId })
    await until(() => again.messages.length >= 2)
    const [d] = await fire(sb.server.store, sb.server.bus, makeSignal())
    await until(() => again.messages.length >= 3)
    await again.close()
    expect(again.messages.map((m) => m.id)).toEqual([b?.id, c?.id, d?.id])
    expect(again.events()).toEqual([b, c, d])
    expect(again.messages[1]?.event).toBe('signal.resolved')

    // The same resume position works as a query parameter (for clients that cannot set headers).
    const byQuery = await connect({ query: `?last_event_id=${lastId}&kinds=pql` })
    await until(() => byQuery.messages.length >= 3)
    await byQuery.close()
    expect(byQuery.messages.map((m) => m.id)).toEqual([b?.id, c?.id, d?.id])
  })

  it('loses nothing and repeats nothing while signals fire during reconnections', async () => {
    const fired: string[] = []
    let firing = true
    const writer = (async () => {
      while (firing) {
        const events = await fire(sb.server.store, sb.server.bus, makeSignal({ kind: 'expansion' }))
        fired.push(...events.map((e) => e.id))
      }
    })()
    const got: string[] = []
    let last: string | undefined
    try {
      await until(() => fired.length >= 1)
      last = fired[0]
      got.push(last as string)
      for (let i = 0; i < 4; i++) {
        const s = await connect({ query: '?kinds=expansion', lastEventId: last })
        const seen = fired.length
        await until(() => s.messages.length >= 3 && fired.length > seen + 2, { what: 'a few signals during the connection' })
        await s.close()
        got.push(...s.messages.map((m) => m.id as string))
        last = got.at(-1)
      }
    } finally {
      firing = false
      await writer
    }
    // Whatever fired after the last disconnect is still replayable.
    const tail = await connect({ query: '?kinds=expansion', lastEventId: last })
    await until(() => got.length + tail.messages.length >= fired.length, { what: 'the rest of the log' })
    await tail.close()
    got.push(...tail.messages.map((m) => m.id as string))
    expect(got).toEqual(fired)
  })

  it('ends open streams when the server shuts down, so it can restart', async () => {
    const s = await connect()
    await sb.restart()
    await until(() => s.ended, { what: 'the stream to end' })
    const again = await connect()
    await again.close()
    expect(again.messages).toHaveLength(0)
  })
})

import { describe, expect, it } from 'vitest'

/**
 * The Segment tracking API as a client sees it, over HTTP only, so the same suite runs against
 * every runtime that serves it: Node (test/ingest-contract.test.ts) and the Cloudflare Worker in
 * workerd. Store-level checks (what was stored, deduplication) live in the Node-only tests.
 */
export type IngestTarget = {
  /** Base URL of the service, without the trailing slash (`http://127.0.0.1:8787`). */
  url: string
  /** A write key the service accepts. */
  writeKey: string
  /** The same service configured with RATE_LIMIT_PER_SECOND=1 and RATE_LIMIT_BURST=`burst`. */
  rateLimited: { url: string; writeKey: string; burst: number }
  /**
   * Make storing fail for real (the store on Node, the queue on the edge) until the returned
   * function repairs it.
   */
  breakStore(): Promise<() => Promise<void>>
}

type SendOptions = {
  key?: string | null
  headers?: Record<string, string>
  method?: string
  url?: string
}

const KB = 1024
const ERROR_BODY = {
  error: expect.objectContaining({ code: expect.any(String), message: expect.any(String) }),
}

export function ingestContract(getTarget: () => IngestTarget) {
  // Unique per run, so the suite can be re-run against a service that keeps its data.
  const run = `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`
  let seq = 0
  const mid = () => `${run}-${++seq}`

  /** POST (by default) without following redirects: a 3xx must show up as a 3xx. */
  function send(path: string, body: unknown, opts: SendOptions = {}) {
    const t = getTarget()
    const key = opts.key === undefined ? t.writeKey : opts.key
    return fetch(`${opts.url ?? t.url}${path}`, {
      method: opts.method ?? 'POST',
      redirect: 'manual',
      headers: {
        'content-type': 'application/json',
        ...(key ? { authorization: `Basic ${btoa(`${key}:`)}` } : {}),
        ...opts.headers,
      },
      body: typeof body === 'string' || body instanceof Uint8Array ? (body as BodyInit) : JSON.stringify(body),
    })
  }

  async function expectError(res: Response, status: number, code: string) {
    const body = await res.json()
    expect({ status: res.status, body }).toEqual({ status, body: ERROR_BODY })
    expect(body.error.code).toBe(code)
    expect(res.headers.get('content-type')).toMatch(/^application\/json/)
    return body.error as { code: string; message: string; details?: { path: string; message: string }[] }
  }

  const track = (extra: Record<string, unknown> = {}) => ({
    type: 'track',
    messageId: mid(),
    userId: 'contract-user',
    event: 'Contract Checked',
    properties: { plan: 'free' },
    timestamp: new Date().toISOString(),
    ...extra,
  })
  const pad = (bytes: number) => 'x'.repeat(bytes)

  async function gzip(text: string): Promise<Uint8Array> {
    const stream = new Blob([text]).stream().pipeThrough(new CompressionStream('gzip'))
    return new Uint8Array(await new Response(stream).arrayBuffer())
  }

  describe('Segment tracking API contract', () => {
    describe('accepted calls', () => {
      const valid: Record<string, Record<string, unknown>> = {
        track: { userId: 'contract-user', event: 'Contract Checked', properties: { n: 1 } },
        identify: { userId: 'contract-user', traits: { plan: 'free' } },
        group: { userId: 'contract-user', groupId: 'contract-account', traits: { seats: 3 } },
        page: { anonymousId: 'contract-anon', name: 'Pricing', properties: { path: '/pricing' } },
        screen: { userId: 'contract-user', name: 'Home' },
        alias: { userId: 'contract-user', previousId: 'contract-anon' },
      }

      it.each(Object.keys(valid))('POST /v1/%s is 200 {"success": true}', async (type) => {
        const res = await send(`/v1/${type}`, { ...valid[type], messageId: mid() })
        expect(res.status).toBe(200)
        expect(await res.json()).toEqual({ success: true })
      })

      it('takes the write key as the Basic username or as "writeKey" in the body', async () => {
        const basic = await send('/v1/track', track())
        const inBody = await send('/v1/track', { ...track(), writeKey: getTarget().writeKey }, { key: null })
        expect([basic.status, inBody.status]).toEqual([200, 200])
      })

      it('accepts the analytics.js short paths, text/plain bodies and the key in the body', async () => {
        const { writeKey } = getTarget()
        const headers = { 'content-type': 'text/plain' }
        const calls: [string, Record<string, unknown>][] = [
          ['/v1/t', { type: 'track', userId: 'contract-user', event: 'Clicked' }],
          ['/v1/i', { type: 'identify', userId: 'contract-user', traits: { title: 'VP' } }],
          ['/v1/g', { type: 'group', userId: 'contract-user', groupId: 'contract-account' }],
          ['/v1/p', { type: 'page', anonymousId: 'contract-anon', name: 'Home' }],
          ['/v1/s', { type: 'screen', userId: 'contract-user', name: 'Home' }],
          ['/v1/a', { type: 'alias', userId: 'contract-user', previousId: 'contract-anon' }],
        ]
        const statuses = await Promise.all(
          calls.map(async ([path, msg]) => (await send(path, { ...msg, messageId: mid(), writeKey, sentAt: new Date().toISOString() }, { key: null, headers })).status),
        )
        expect(statuses).toEqual(calls.map(() => 200))
        const batch = await send('/v1/b', { writeKey, sentAt: new Date().toISOString(), batch: [track(), track()] }, { key: null, headers })
        expect(batch.status).toBe(200)
        expect(await batch.json()).toEqual({ success: true, accepted: 2, rejected: [] })
      })

      it('answers a CORS preflight from any origin with 204', async () => {
        const res = await send('/v1/batch', undefined, {
          method: 'OPTIONS',
          key: null,
          headers: { origin: 'https://www.example.com', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,authorization' },
        })
        expect(res.status).toBe(204)
        expect(res.headers.get('access-control-allow-origin')).toBe('*')
        expect(res.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('authorization')
        const post = await send('/v1/track', track(), { headers: { origin: 'https://www.example.com' } })
        expect(post.status).toBe(200)
        expect(post.headers.get('access-control-allow-origin')).toBe('*')
      })

      it('accepts a gzip-compressed batch', async () => {
        const body = await gzip(JSON.stringify({ batch: [track(), track(), track()], sentAt: new Date().toISOString() }))
        const res = await send('/v1/batch', body, { headers: { 'content-encoding': 'gzip' } })
        expect(res.status).toBe(200)
        expect(await res.json()).toEqual({ success: true, accepted: 3, rejected: [] })
      })

      it('accepts a batch of exactly 2,500 messages', async () => {
        const batch = Array.from({ length: 2500 }, () => ({ type: 'track', messageId: mid(), userId: 'u', event: 'e' }))
        const res = await send('/v1/batch', { batch })
        expect(res.status).toBe(200)
        expect(await res.json()).toMatchObject({ success: true, accepted: 2500, rejected: [] })
      })
    })

    describe('limits: 413', () => {
      it('a batch request over 500 KB', async () => {
        const batch = Array.from({ length: 20 }, () => track({ properties: { blob: pad(26 * KB) } }))
        const body = JSON.stringify({ batch })
        expect(body.length).toBeGreaterThan(500 * KB)
        const err = await expectError(await send('/v1/batch', body), 413, 'PAYLOAD_TOO_LARGE')
        expect(err.message).toMatch(/512000 bytes/)
      })

      it('a single call over 500 KB', async () => {
        await expectError(await send('/v1/track', track({ properties: { blob: pad(501 * KB) } })), 413, 'PAYLOAD_TOO_LARGE')
      })

      it('a gzip body that decompresses to over 500 KB', async () => {
        const body = await gzip(JSON.stringify({ batch: Array.from({ length: 20 }, () => track({ properties: { blob: pad(26 * KB) } })) }))
        expect(body.byteLength).toBeLessThan(100 * KB)
        await expectError(await send('/v1/batch', body, { headers: { 'content-encoding': 'gzip' } }), 413, 'PAYLOAD_TOO_LARGE')
      })

      it('a batch of more than 2,500 messages', async () => {
        const batch = Array.from({ length: 2501 }, () => ({ type: 'track', userId: 'u', event: 'e' }))
        const err = await expectError(await send('/v1/batch', { batch }), 413, 'PAYLOAD_TOO_LARGE')
        expect(err.message).toMatch(/2501 messages; the limit is 2500/)
      })
    })

    describe('a message over 32 KB is invalid', () => {
      it('alone: 400 naming the size', async () => {
        const err = await expectError(await send('/v1/track', track({ properties: { blob: pad(33 * KB) } })), 400, 'BAD_REQUEST')
        expect(err.details).toEqual([{ path: '(message)', message: expect.stringMatching(/^is \d+ bytes; the limit is 32768$/) }])
      })

      it('in a batch: a rejected entry, the others accepted', async () => {
        const res = await send('/v1/batch', { batch: [track(), track({ properties: { blob: pad(33 * KB) } }), track()] })
        expect(res.status).toBe(200)
        expect(await res.json()).toEqual({
          success: true,
          accepted: 2,
          rejected: [{ index: 1, path: '(message)', message: expect.stringMatching(/the limit is 32768$/) }],
        })
      })
    })

    describe('bad bodies: 400', () => {
      it.each([
        ['not JSON', '{"batch": ['],
        ['empty', ''],
      ])('%s', async (_, body) => {
        const err = await expectError(await send('/v1/batch', body), 400, 'BAD_REQUEST')
        expect(err.details).toEqual([{ path: '(body)', message: 'not JSON' }])
      })

      it.each([
        ['an array', '[{"type":"track"}]'],
        ['a string', '"track"'],
        ['null', 'null'],
      ])('JSON that is %s, not an object', async (_, body) => {
        const err = await expectError(await send('/v1/track', body), 400, 'BAD_REQUEST')
        expect(err.details).toEqual([{ path: '(body)', message: 'not an object' }])
      })

      it('a batch whose "batch" is not an array', async () => {
        const err = await expectError(await send('/v1/batch', { batch: { type: 'track' } }), 400, 'BAD_REQUEST')
        expect(err.details?.[0]?.path).toBe('batch')
      })

      it('an unsupported Content-Encoding', async () => {
        await expectError(await send('/v1/track', track(), { headers: { 'content-encoding': 'br' } }), 400, 'BAD_REQUEST')
      })

      it('a body labelled gzip that is not', async () => {
        await expectError(await send('/v1/track', JSON.stringify(track()), { headers: { 'content-encoding': 'gzip' } }), 400, 'BAD_REQUEST')
      })
    })

    describe('write keys: 401', () => {
      it('missing', async () => {
        const err = await expectError(await send('/v1/track', track(), { key: null }), 401, 'UNAUTHORIZED')
        expect(err.message).toMatch(/missing write key/)
      })

      it('unknown, as Basic auth', async () => {
        const err = await expectError(await send('/v1/batch', { batch: [track()] }, { key: 'not-a-known-key' }), 401, 'UNAUTHORIZED')
        expect(err.message).toBe('unknown write key')
      })

      it('unknown, in the body', async () => {
        await expectError(await send('/v1/batch', { writeKey: 'not-a-known-key', batch: [track()] }, { key: null }), 401, 'UNAUTHORIZED')
      })
    })

    describe('a single invalid message: 400 with the details', () => {
      const cases: [string, string, Record<string, unknown>, string][] = [
        ['a track without event', '/v1/track', { userId: 'u' }, 'event'],
        ['a track with an empty event', '/v1/track', { userId: 'u', event: '' }, 'event'],
        ['a call without userId or anonymousId', '/v1/track', { event: 'e' }, 'userId'],
        ['a group without groupId', '/v1/group', { userId: 'u' }, 'groupId'],
        ['an alias without previousId', '/v1/alias', { userId: 'u' }, 'previousId'],
        ['an identify with traits that are not an object', '/v1/identify', { userId: 'u', traits: 'vip' }, 'traits'],
        ['properties that are not an object', '/v1/page', { userId: 'u', properties: [1, 2] }, 'properties'],
        ['a timestamp that is not a date', '/v1/track', { userId: 'u', event: 'e', timestamp: 'yesterday' }, 'timestamp'],
        ['a timestamp on 30 February', '/v1/track', { userId: 'u', event: 'e', timestamp: '2026-02-30T10:00:00Z' }, 'timestamp'],
        ['a timestamp in the year 1000', '/v1/track', { userId: 'u', event: 'e', timestamp: '1000-01-01T00:00:00Z' }, 'timestamp'],
      ]
      it.each(cases)('%s', async (_, path, msg, field) => {
        const err = await expectError(await send(path, { ...msg, messageId: mid() }), 400, 'BAD_REQUEST')
        expect(err.message).toMatch(/^invalid \w+ message$/)
        expect(err.details).toContainEqual({ path: field, message: expect.any(String) })
      })
    })

    describe('a batch mixing good and bad messages', () => {
      it('is 200: the good ones accepted, each bad one listed with its index, path and reason', async () => {
        const batch = [
          track(),
          { type: 'track', messageId: mid(), userId: 'u' },
          { type: 'identify', messageId: mid(), userId: 'u', traits: { plan: 'pro' } },
          { type: 'unknown', messageId: mid(), userId: 'u' },
          'not an object',
          { type: 'group', messageId: mid(), anonymousId: 'a', groupId: 'acc' },
          { type: 'alias', messageId: mid(), previousId: 'x' },
        ]
        const res = await send('/v1/batch', { batch, sentAt: new Date().toISOString() })
        expect(res.status).toBe(200)
        const body = await res.json()
        expect(body).toEqual({
          success: true,
          accepted: 3,
          rejected: [
            { index: 1, path: 'event', message: expect.any(String) },
            { index: 3, path: 'type', message: 'must be one of track, identify, group, page, screen, alias' },
            { index: 4, path: '(message)', message: 'must be a JSON object' },
            { index: 6, path: 'userId', message: expect.any(String) },
          ],
        })
      })

      it('with only bad messages is still 200, accepting none', async () => {
        const res = await send('/v1/batch', { batch: [{ type: 'track', userId: 'u' }, { type: 'track', event: 'e' }] })
        expect(res.status).toBe(200)
        expect(await res.json()).toEqual({
          success: true,
          accepted: 0,
          rejected: [
            { index: 0, path: 'event', message: expect.any(String) },
            { index: 1, path: 'userId', message: 'userId or anonymousId is required' },
          ],
        })
      })
    })

    describe('rate limit: 429', () => {
      it('with an integer Retry-After, per write key', async () => {
        const { rateLimited } = getTarget()
        const statuses: number[] = []
        let limited: Response | undefined
        for (let i = 0; i < rateLimited.burst + 5 && !limited; i++) {
          const res = await send('/v1/track', track(), { url: rateLimited.url, key: rateLimited.writeKey })
          statuses.push(res.status)
          if (res.status === 429) limited = res
          else await res.body?.cancel()
        }
        expect(statuses.slice(0, rateLimited.burst)).toEqual(Array(rateLimited.burst).fill(200))
        expect(limited).toBeDefined()
        const retryAfter = (limited as Response).headers.get('retry-after')
        expect(retryAfter).toMatch(/^\d+$/)
        expect(Number(retryAfter)).toBeGreaterThanOrEqual(1)
        await expectError(limited as Response, 429, 'RATE_LIMITED')
      })
    })

    describe('the store failing: 503, never a 2xx', () => {
      it('a batch and a single call fail with 503 while the store is broken, and the resent batch is then accepted', async () => {
        const batch = [track(), track()]
        const repair = await getTarget().breakStore()
        let statuses: number[]
        try {
          const a = await send('/v1/batch', { batch, sentAt: new Date().toISOString() })
          const b = await send('/v1/track', track())
          statuses = [a.status, b.status]
          await expectError(a, 503, 'STORE_UNAVAILABLE')
          await b.body?.cancel()
        } finally {
          await repair()
        }
        expect(statuses).toEqual([503, 503])
        const again = await send('/v1/batch', { batch, sentAt: new Date().toISOString() })
        expect(again.status).toBe(200)
        expect(await again.json()).toEqual({ success: true, accepted: 2, rejected: [] })
      })
    })

    describe('never a 3xx', () => {
      it.each([
        ['POST', '/v1/track/'],
        ['POST', '/v1/batch/'],
        ['GET', '/v1/track'],
        ['POST', '/v1/Track'],
        ['POST', '/v1'],
      ])('%s %s is a 4xx', async (method, path) => {
        const res = await send(path, method === 'GET' ? undefined : track(), { method })
        expect(res.status).toBeGreaterThanOrEqual(400)
        expect(res.status).toBeLessThan(500)
        await res.body?.cancel()
      })
    })
  })
}

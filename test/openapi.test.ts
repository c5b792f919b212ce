import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestServer, type TestServer } from './harness.js'

let sb: TestServer
beforeAll(async () => {
  sb = await startTestServer({ RULES_DEFAULT_PACK: 'false', EVAL_INTERVAL_MS: '0', EVAL_ON_INGEST: 'false' })
})
afterAll(async () => {
  await sb.stop()
})

describe('GET /openapi.json', () => {
  it('is served without auth and describes the tracking API with its schemas', async () => {
    const res = await fetch(`${sb.url}/openapi.json`)
    expect(res.status).toBe(200)
    const doc = (await res.json()) as { openapi: string; paths: Record<string, Record<string, any>> }
    expect(doc.openapi).toBe('3.0.3')
    const track = doc.paths['/v1/track']?.post
    expect(track.security).toEqual([{ writeKey: [] }])
    expect(track.requestBody.content['application/json'].schema.required).toContain('event')
    expect(doc.paths['/v1/rules/{id}']?.put.requestBody.content['application/json'].schema.properties).toHaveProperty('kind')
    expect(doc.paths['/v1/stats']?.get.security).toEqual([{ adminToken: [] }])
    // Routes declared with createRoute: their parameters and bodies come from the zod schemas they validate with.
    const signals = doc.paths['/v1/signals']?.get
    expect(signals.parameters.map((p: { name: string; in: string }) => `${p.in}:${p.name}`)).toEqual(
      expect.arrayContaining(['query:kind', 'query:rule_id', 'query:status', 'query:after', 'query:limit']),
    )
    expect(doc.paths['/v1/signals/{id}']?.get.responses['200'].content['application/json'].schema.properties).toHaveProperty('feedback')
    expect(doc.paths['/v1/stats']?.get.responses['200'].content['application/json'].schema.required).toContain('events')
    expect(doc.paths['/v1/subjects/{type}/{id}/stage']?.post.requestBody.content['application/json'].schema.required).toContain('stage')
    expect(doc.paths['/v1/funnel']?.get.parameters.map((p: { name: string }) => p.name)).toEqual(expect.arrayContaining(['from', 'to', 'subject_type', 'signal', 'cohort']))
    // The tracking API documents the body its handler checks and the answer it gives; the router does not validate it.
    expect(doc.paths['/v1/batch']?.post.responses['200'].content['application/json'].schema.properties).toHaveProperty('rejected')
    expect(doc.paths['/v1/webhooks/{id}/deliveries']?.get.parameters.map((p: { name: string; in: string }) => `${p.in}:${p.name}`)).toEqual(
      expect.arrayContaining(['path:id', 'query:status', 'query:limit', 'query:cursor']),
    )
    expect(doc.paths['/v1/webhooks']?.post.responses['201'].content['application/json'].schema.required).toContain('secret')
    expect(doc.paths['/v1/signals/stream']?.get.security).toEqual([{ adminToken: [] }, { readToken: [] }])
    // Every error answer is the one error body.
    expect(doc.paths['/v1/signals']?.get.responses['4XX'].content['application/json'].schema.properties.error.properties.code.enum).toContain('BAD_REQUEST')
  })

  it('documents every route the app serves, and no route it does not', async () => {
    const doc = (await (await fetch(`${sb.url}/openapi.json`)).json()) as { paths: Record<string, Record<string, unknown>> }
    const documented = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`))
    // The app's own paths, with `:id` written as `{id}`; analytics.js short aliases (/v1/t …) and
    // CORS preflights are the same operations under other names, and the document itself is not listed.
    const served = sb.server.routes
      .filter((r) => !r.startsWith('OPTIONS ') && r !== 'GET /openapi.json' && !/^POST \/v1\/[tigpsab]$/.test(r))
      .map((r) => r.replace(/:([A-Za-z_]+)(\{(?:[^{}]|\{[^{}]*\})*\})?/g, '{$1}'))
    expect([...new Set(served)].sort()).toEqual(documented.sort())
  })
})

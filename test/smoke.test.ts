import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestServer, type TestServer } from './harness.js'

let sb: TestServer
beforeAll(async () => {
  sb = await startTestServer()
})
afterAll(async () => {
  await sb.stop()
})

describe('smoke', () => {
  it('answers /health with the embedded store', async () => {
    const res = await fetch(`${sb.url}/health`)
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ status: 'ok', store: 'embedded' })
  })

  it('stores a track call and counts it once', async () => {
    const res = await sb.post('/v1/track', { userId: 'u1', event: 'Signed Up', messageId: 'm1' })
    expect(res.status).toBe(200)
    await sb.post('/v1/track', { userId: 'u1', event: 'Signed Up', messageId: 'm1' })
    expect((await sb.stats()).events).toBe(1)
  })

  it('survives a restart on the same data path', async () => {
    await sb.restart()
    expect((await sb.stats()).events).toBe(1)
    await sb.post('/v1/track', { userId: 'u1', event: 'Signed Up', messageId: 'm1' })
    expect((await sb.stats()).events).toBe(1)
  })
})

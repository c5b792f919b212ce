import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { APP_KEY } from './harness.js'
import { type ClickHouseHttp, startClickHouseHttp, startTestWorker, type TestWorker, until } from './worker-harness.js'

let ch: ClickHouseHttp
let w: TestWorker
beforeAll(async () => {
  ch = await startClickHouseHttp()
  w = await startTestWorker({ clickhouse: ch })
})
afterAll(async () => {
  await w?.dispose()
  await ch?.close()
})

const count = async (sql: string, params?: Record<string, unknown>) => Number((await ch.store.query<{ n: number }>(sql, params))[0]?.n ?? 0)

describe('the Worker in workerd', () => {
  it('answers /health through ClickHouse over HTTP', async () => {
    const res = await fetch(`${w.url}/health`)
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ status: 'ok', store: 'server' })
  })

  it('queues a track call, and the consumer stores it once', async () => {
    const res = await w.post('/v1/track', { userId: 'u1', event: 'Signed Up', messageId: 'w-m1' })
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ success: true })
    await until(async () => ((await count("SELECT count() AS n FROM events_v1 WHERE message_id = 'w-m1'")) === 1 ? true : undefined), 'the event to be stored')
    const inserts = ch.matching(/^INSERT INTO events_v1/)
    console.log(JSON.stringify(inserts, null, 1))
  })
})

import { afterAll, beforeAll } from 'vitest'
import { ingestContract } from './contract/ingest.contract.js'
import { WRITE_KEY } from './harness.js'
import { type ClickHouseHttp, startClickHouseHttp, startTestWorker, type TestWorker } from './worker-harness.js'

// The shared tracking-API contract (the same suite as test/ingest-contract.test.ts runs on Node),
// run against the Worker in workerd under wrangler dev, with local queues and ClickHouse's HTTP
// interface behind it.
const RATE_LIMITED_KEY = 'contract_rate_limited_key'
const BURST = 3

let ch: ClickHouseHttp
let w: TestWorker
let limited: TestWorker
let broken: TestWorker
let target: TestWorker
beforeAll(async () => {
  ch = await startClickHouseHttp()
  ;[w, broken, limited] = await Promise.all([
    startTestWorker({ clickhouse: ch }),
    startTestWorker({ clickhouse: ch, brokenQueue: true }),
    startTestWorker({
      clickhouse: ch,
      vars: { WRITE_KEYS: `${RATE_LIMITED_KEY}:limited`, RATE_LIMIT_PER_SECOND: '1', RATE_LIMIT_BURST: String(BURST) },
    }),
  ])
  target = w
})
afterAll(async () => {
  await Promise.all([w?.dispose(), limited?.dispose(), broken?.dispose()])
  await ch?.close()
})

ingestContract(() => ({
  url: target.url,
  writeKey: WRITE_KEY,
  rateLimited: { url: limited.url, writeKey: RATE_LIMITED_KEY, burst: BURST },
  // On the edge "stored" means "in the queue". The local queue cannot be made to fail, so while
  // "broken" the requests go to the same Worker started with its queue binding replaced by one
  // whose sendBatch cannot work: every send rejects, as when a Queue refuses messages.
  async breakStore() {
    target = broken
    return async () => {
      target = w
    }
  },
}))

import { afterAll, beforeAll } from 'vitest'
import { type RunningServer, startServer } from '../src/server.js'
import { ingestContract } from './contract/ingest.contract.js'
import { startTestServer, type TestServer, WRITE_KEY } from './harness.js'

// The shared tracking-API contract, run against the Node server on the embedded engine.
const RATE_LIMITED_KEY = 'contract_rate_limited_key'
const BURST = 3

let sb: TestServer
let limited: RunningServer
beforeAll(async () => {
  sb = await startTestServer()
  // A second server on the same data path (chDB shares one engine per path in a process), with a
  // small per-key rate limit.
  limited = await startServer({
    DATA_DIR: sb.dataDir,
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
    ADMIN_TOKEN: 'contract_admin_token_0123456789',
    WRITE_KEYS: `${RATE_LIMITED_KEY}:limited`,
    RATE_LIMIT_PER_SECOND: '1',
    RATE_LIMIT_BURST: String(BURST),
  })
})
afterAll(async () => {
  await limited?.close()
  await sb?.stop()
})

ingestContract(() => ({
  url: sb.url,
  writeKey: WRITE_KEY,
  rateLimited: { url: limited.url, writeKey: RATE_LIMITED_KEY, burst: BURST },
  // A real ClickHouse failure: with the events table detached, the dedup lookup and the insert fail.
  async breakStore() {
    await sb.server.store.command('DETACH TABLE events_v1')
    return () => sb.server.store.command('ATTACH TABLE events_v1')
  },
}))

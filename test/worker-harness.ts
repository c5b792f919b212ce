import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { unstable_startWorker } from 'wrangler'
import { type CapturedRequest, serveClickHouseHttp } from '../src/edge/local-clickhouse.js'
import { ADMIN_TOKEN, APP_KEY, removeDir, tempDir, WRITE_KEY } from './harness.js'

const ROOT = fileURLToPath(new URL('../', import.meta.url))

export type { CapturedRequest }

/**
 * ClickHouse's HTTP interface answered by the embedded engine in a fresh directory, capturing
 * every request (src/edge/local-clickhouse.ts): no modern ClickHouse server can be installed
 * here, so the server path is tested at its HTTP boundary.
 */
export async function startClickHouseHttp(opts: { user?: string; password?: string; database?: string } = {}) {
  const dataDir = tempDir('signalbox-ch-http-')
  const ch = await serveClickHouseHttp({
    path: join(dataDir, 'clickhouse'),
    user: opts.user ?? 'signalbox',
    password: opts.password ?? 'ch-test-password',
    database: opts.database ?? 'signalbox',
    capture: true,
  })
  const closeServer = ch.close
  return Object.assign(ch, {
    async close() {
      await closeServer()
      removeDir(dataDir)
    },
  })
}

export type ClickHouseHttp = Awaited<ReturnType<typeof startClickHouseHttp>>

/**
 * The Worker in workerd under `wrangler dev` (local queues), from the real wrangler.toml with the
 * queue timings shortened for tests: batches are delivered without waiting, retries are immediate,
 * and optionally a consumer replays the dead-letter queue.
 */
export async function startTestWorker(opts: {
  clickhouse: Pick<ClickHouseHttp, 'url' | 'user' | 'password' | 'database'> | { url: string; user?: string; password?: string; database?: string }
  vars?: Record<string, string>
  maxRetries?: number
  replayDeadLetters?: boolean
  /** `INGEST_QUEUE` bound to something that is not a queue: every send fails. */
  brokenQueue?: boolean
}) {
  const dir = tempDir('signalbox-worker-')
  let toml = readFileSync(join(ROOT, 'wrangler.toml'), 'utf8')
  const patch = (re: RegExp, by: string) => {
    if (!re.test(toml)) throw new Error(`wrangler.toml no longer matches ${re}`)
    toml = toml.replace(re, by)
  }
  patch(/^main = "src\/worker\.ts"$/m, `main = ${JSON.stringify(join(ROOT, 'src/worker.ts'))}`)
  // Every consumer (ingest and deliveries) takes a batch at once.
  patch(/^max_batch_timeout = \d+$/gm, 'max_batch_timeout = 0')
  if (opts.maxRetries !== undefined) patch(/^max_retries = \d+$/m, `max_retries = ${opts.maxRetries}`)
  if (opts.brokenQueue) {
    // Bindings from wrangler.toml take precedence over the API's: take the producer away there.
    patch(/^binding = "INGEST_QUEUE"$/m, 'binding = "INGEST_QUEUE_DETACHED"')
  }
  if (opts.replayDeadLetters) {
    toml += '\n[[queues.consumers]]\nqueue = "signalbox-ingest-dlq"\nmax_batch_size = 100\nmax_batch_timeout = 0\nmax_retries = 3\n'
  }
  const config = join(dir, 'wrangler.toml')
  writeFileSync(config, toml)
  const vars: Record<string, string> = {
    CLICKHOUSE_URL: opts.clickhouse.url,
    CLICKHOUSE_USER: opts.clickhouse.user ?? 'default',
    CLICKHOUSE_PASSWORD: opts.clickhouse.password ?? '',
    CLICKHOUSE_DATABASE: opts.clickhouse.database ?? 'signalbox',
    ADMIN_TOKEN,
    WRITE_KEYS: `${WRITE_KEY}:web,${APP_KEY}:app`,
    QUEUE_RETRY_BASE_SECONDS: '0',
    LOG_LEVEL: 'warn',
    // CLICKHOUSE_URL turns private webhook targets off by default; the tests' receivers are on 127.0.0.1.
    WEBHOOK_ALLOW_PRIVATE: 'true',
    ...opts.vars,
  }
  // wrangler's own log level (its queue broker logs every batch otherwise); WORKER_LOG_LEVEL=log shows all.
  process.env.WRANGLER_LOG ??= process.env.WORKER_LOG_LEVEL ?? 'error'
  type Bindings = NonNullable<Parameters<typeof unstable_startWorker>[0]['bindings']>
  const bindings: Bindings = Object.fromEntries(Object.entries(vars).map(([k, v]) => [k, { type: 'plain_text' as const, value: v }]))
  if (opts.brokenQueue) bindings.INGEST_QUEUE = { type: 'plain_text', value: 'not a queue' }
  const worker = await unstable_startWorker({
    config,
    bindings,
    // testScheduled: the Cron Trigger runs on GET /cdn-cgi/handler/scheduled.
    dev: { server: { hostname: '127.0.0.1', port: 0 }, inspector: false, persist: false, watch: false, testScheduled: true, logLevel: (process.env.WORKER_LOG_LEVEL as 'error' | undefined) ?? 'error' },
  })
  await worker.ready
  const url = (await worker.url).origin
  const harness = {
    url,
    worker,
    post(path: string, body: unknown, key: string | null = WRITE_KEY, headers: Record<string, string> = {}) {
      return fetch(`${url}${path}`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          ...(key ? { authorization: `Basic ${Buffer.from(`${key}:`).toString('base64')}` } : {}),
          ...headers,
        },
        body: typeof body === 'string' ? body : JSON.stringify(body),
      })
    },
    admin(path: string, init: RequestInit = {}) {
      return fetch(`${url}${path}`, {
        ...init,
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json', ...(init.headers ?? {}) },
      })
    },
    async dispose() {
      await worker.dispose()
      removeDir(dir)
    },
  }
  return harness
}

export type TestWorker = Awaited<ReturnType<typeof startTestWorker>>


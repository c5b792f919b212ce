import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import { serve } from '@hono/node-server'
import { GroupCommitWriter } from '../ingest/writer.js'
import { markStateStale, StateKeeper } from '../rules/state/keeper.js'
import { applyDefaultPack } from '../rules/store.js'
import { applyDefaultOutcomes } from './quality/outcome-store.js'
import { createApp } from './app.js'
import { ApiError, errorBody } from './errors.js'
import { allowPrivateTargets, loadConfig } from './config.js'
import { resolvedUrlRefusal } from './delivery/guarded-fetch.js'
import { workspaceRoutes } from './web/index.js'
import { type Credentials, resolveCredentials } from './credentials.js'
import { Delivery } from './delivery/index.js'
import { createLogger } from './logger.js'
import { rulesServices } from './services.js'
import { migrate } from './store/migrate.js'
import { SignalBus } from './signals.js'
import { openStore } from './store/node.js'
import type { Store } from './store/store.js'

export type RunningServer = {
  url: string
  port: number
  adminToken: string
  writeKeys: { key: string; source: string }[]
  /** The open store (tests read rows back through it, and break it to check the 503 path). */
  store: Store
  /** Signal notifications (tests record signals through it, as the evaluator does). */
  bus: SignalBus
  /** What was generated this start and where credentials are kept (for the banner of `npm start`). */
  credentials: Pick<Credentials, 'generated' | 'file'>
  /** The API's routes (`METHOD /path`; the workspace's pages are not API), e.g. to check the OpenAPI document covers them. */
  routes: string[]
  /** Stop taking requests, flush acknowledged-to-be writes, close the store. */
  close(): Promise<void>
}

/**
 * Start signalbox on Node: validate the config, open the store (failing loudly if it cannot),
 * apply migrations, resolve credentials, and serve the app.
 */
export async function startServer(
  env: Record<string, string | undefined>,
  opts: {
    /** Wraps the opened store before anything uses it (tests and `npm run chaos` inject faults through it). */
    wrapStore?: (store: Store) => Store
  } = {},
): Promise<RunningServer> {
  const config = loadConfig(env)
  const logger = createLogger(config)
  const opened = await openStore(config)
  const store = opts.wrapStore ? opts.wrapStore(opened) : opened
  const applied = await migrate(store, undefined, { cluster: config.CLICKHOUSE_CLUSTER })
  if (applied.length) logger.info({ applied }, 'migrations applied')
  const credentials = resolveCredentials(config)
  const { adminToken, writeKeys, readTokens, generated } = credentials
  const bus = new SignalBus()
  // The per-day state the rules read: written with every block of events (rules/state/). With
  // RULES_BACKEND=events nothing reads it, so it is not kept; it is marked stale, so that a later
  // start reading it waits for a rebuild rather than reading a state that missed these events.
  const state = config.RULES_BACKEND === 'state' ? await new StateKeeper(store, { logger }).start(Date.now()) : undefined
  if (!state) await markStateStale(store, Date.now())
  const { lifecycle, evaluator } = rulesServices(store, bus, config, { logger, state })
  if (config.RULES_DEFAULT_PACK) {
    const pack = await applyDefaultPack(store, Date.now())
    if (pack.length) logger.info({ rules: pack }, 'default rule pack stored')
    // The outcomes the default rules are judged by (converted, churned, expanded).
    const outcomes = await applyDefaultOutcomes(store, Date.now())
    if (outcomes.length) logger.info({ outcomes }, 'default outcomes stored')
  }
  const sink = new GroupCommitWriter(store, {
    flushMs: config.INGEST_FLUSH_MS,
    maxRows: config.INGEST_MAX_BATCH_ROWS,
    seenCacheEntries: config.INGEST_SEEN_CACHE,
    // Subjects touched by new events are re-evaluated within EVAL_DEBOUNCE_MS.
    onStored: config.EVAL_ON_INGEST ? (events) => evaluator.touch(events) : undefined,
    logger,
    state,
  })
  const delivery = new Delivery({ store, bus, logger, config })
  const webhookTargetRefusal = (url: string) => resolvedUrlRefusal(url, allowPrivateTargets(config))
  const deps = { webhookTargetRefusal, config, store, sink, adminToken, writeKeys, readTokens, logger, bus, evaluator, lifecycle, delivery }
  const app = createApp(deps)
  const apiRoutes = [...new Set(app.routes.filter((r) => r.method !== 'ALL').map((r) => `${r.method} ${r.path}`))]
  // The workspace is Node's: it reads its assets and session key from disk (the Worker serves the API only).
  app.route('/', workspaceRoutes({ ...deps, dataDir: config.DATA_DIR }))

  // Requests wait until the start has finished (delivery started, the entry's signal handlers in
  // place right after): a client that saw /health answer may stop the process at once, and a
  // SIGTERM before the handlers exist would kill it with requests in flight.
  let started = false
  let markStarted!: () => void
  const ready = new Promise<void>((resolve) => (markStarted = resolve))
  const fetch: typeof app.fetch = (req, env, ctx) => (started ? app.fetch(req, env, ctx) : ready.then(() => app.fetch(req, env, ctx)))
  const server = serve({ fetch, port: config.PORT, hostname: config.HOST })
  server.on('clientError', answerClientError)
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve)
    server.once('error', reject)
  })
  const port = (server.address() as AddressInfo).port
  const url = `http://${config.HOST === '0.0.0.0' ? '127.0.0.1' : config.HOST}:${port}`
  logger.info({ url, store: store.kind, dataDir: config.DATA_DIR }, 'signalbox is listening')
  evaluator.start()
  await delivery.start(url)
  started = true
  markStarted()

  let closing: Promise<void> | undefined
  return {
    url,
    port,
    adminToken,
    writeKeys: [...writeKeys],
    store,
    bus,
    credentials: { generated, file: credentials.file },
    routes: apiRoutes,
    close() {
      closing ??= (async () => {
        logger.info('signalbox is shutting down: finishing requests and flushing events')
        // Live streams never end by themselves: end them first.
        delivery.closeStreams()
        // close() waits for open connections; keep-alive sockets that go idle after it (their
        // last response sent) would hold it for the keep-alive timeout, so they are swept.
        const sweep = setInterval(() => 'closeIdleConnections' in server && server.closeIdleConnections(), 50)
        const drained = new Promise<void>((resolve) => server.close(() => resolve()))
        // The writes waiting for their group commit are flushed now, not after the quiet period
        // (their requests hold their connections open); writes that come after are refused (503).
        await sink.close()
        await drained
        clearInterval(sweep)
        await evaluator.stop()
        state?.stop()
        await delivery.stop()
        await store.close()
        logger.info('signalbox stopped')
      })()
      return closing
    },
  }
}

/**
 * A request Node's HTTP parser cannot read (a body shorter than its Content-Length, broken
 * framing) is answered with the API's `{error}` body instead of Node's bare 400, so clients see
 * what went wrong in the same shape as every other error.
 */
function answerClientError(err: NodeJS.ErrnoException, socket: Duplex) {
  if (err.code === 'ECONNRESET' || !socket.writable) return socket.destroy()
  const [status, text] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'Request Header Fields Too Large']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'Request Timeout']
        : [400, 'Bad Request']
  const message =
    err.code === 'HPE_INVALID_EOF_STATE'
      ? 'the request body ended before the length its Content-Length header announced'
      : `the request could not be read as HTTP (${err.code ?? err.message})`
  const body = JSON.stringify(errorBody(new ApiError({ code: 'BAD_REQUEST', message })))
  socket.end(`HTTP/1.1 ${status} ${text}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
}

/**
 * What `npm start` prints: the workspace URL and where the credentials are kept, on every start;
 * the generated credentials and a first curl once, when they are generated.
 */
export function banner(server: Pick<RunningServer, 'url' | 'credentials' | 'writeKeys'>): string {
  const { url, credentials } = server
  const { generated, file } = credentials
  const where = file ? `kept in ${file}` : 'from ADMIN_TOKEN / READ_TOKENS'
  const workspace = `signalbox workspace: ${url}/  (sign in with the admin token or a read token, ${where})`
  if (!generated.adminToken && !generated.writeKey && !generated.readToken) return `\n${workspace}\n\n`
  const lines = [
    '',
    `signalbox generated credentials (kept in ${file}; shown only this once):`,
    ...(generated.writeKey ? [`  write key:   ${generated.writeKey}`] : []),
    ...(generated.adminToken ? [`  admin token: ${generated.adminToken}`] : []),
    ...(generated.readToken ? [`  read token:  ${generated.readToken}`] : []),
    '',
    'Send an event:',
    `  curl -u '${server.writeKeys[0]?.key}:' -H 'content-type: application/json' \\`,
    `    -d '{"userId":"user_1","event":"Signed Up","properties":{"plan":"free"}}' ${url}/v1/track`,
    '',
    workspace,
    '',
  ]
  return `${lines.join('\n')}\n`
}

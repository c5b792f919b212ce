import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type RunningServer, startServer } from '../src/server.js'

export const WRITE_KEY = 'test_write_key_web'
export const APP_KEY = 'test_write_key_app'
export const ADMIN_TOKEN = 'test_admin_token_0123456789'

export function tempDir(prefix = 'signalbox-test-') {
  return mkdtempSync(join(tmpdir(), prefix))
}

/**
 * Remove a test's directory. The embedded engine may still be finishing a background merge in a
 * store it has closed (a part directory filled while it is being removed: ENOTEMPTY), so the
 * removal is retried as Node's rmSync offers, instead of failing the file's teardown.
 */
export function removeDir(dir: string) {
  rmSync(dir, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 })
}

/**
 * Start a real server (embedded chDB, real HTTP port) for one test file. chDB allows one data path
 * per process, so a file keeps its DATA_DIR for its whole life; `restart` reopens the same path.
 */
export async function startTestServer(env: Record<string, string> = {}, opts: Parameters<typeof startServer>[1] = {}) {
  const dataDir = env.DATA_DIR ?? tempDir()
  const fullEnv = {
    DATA_DIR: dataDir,
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
    ADMIN_TOKEN,
    WRITE_KEYS: `${WRITE_KEY}:web,${APP_KEY}:app`,
    ...env,
  }
  let server: RunningServer = await startServer(fullEnv, opts)
  const harness = {
    dataDir,
    get url() {
      return server.url
    },
    get server() {
      return server
    },
    /** POST JSON with the write key as Basic auth. */
    post(path: string, body: unknown, key: string | null = WRITE_KEY, headers: Record<string, string> = {}) {
      return fetch(`${server.url}${path}`, {
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
      return fetch(`${server.url}${path}`, {
        ...init,
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json', ...(init.headers ?? {}) },
      })
    },
    async stats() {
      const res = await harness.admin('/v1/stats')
      return (await res.json()) as { events: number; users: number; accounts: number; ingest_errors: number; ingest_warnings: number }
    },
    async restart(extra: Record<string, string> = {}) {
      await server.close()
      server = await startServer({ ...fullEnv, ...extra }, opts)
    },
    async stop(opts: { keepData?: boolean } = {}) {
      await server.close()
      if (!opts.keepData && !env.DATA_DIR) removeDir(dataDir)
    },
  }
  return harness
}

export type TestServer = Awaited<ReturnType<typeof startTestServer>>

import { mkdirSync } from 'node:fs'
import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createClient, type ClickHouseClientConfigOptions } from '@clickhouse/client'
import { createChdbConnection } from 'chdb/connection'
import { migrate } from '../store/migrate.js'
import { CLIENT_SETTINGS, INSERT_DEFAULTS, type Store, storeFromClient } from '../store/store.js'

// Node-only, for local development and tests (never part of the Worker bundle).

/** One request as ClickHouse's HTTP interface received it. */
export type CapturedRequest = {
  method: string
  /** Size of the request target (path and query string), which Workers cap at 16 KB. */
  urlBytes: number
  /** The parameters came in a multipart form body. */
  form: boolean
  path: string
  /** URL parameters: `query`, `database`, `query_id`, `param_*` and settings. */
  params: Record<string, string>
  user: string | undefined
  password: string | undefined
  body: string
  /** The statement as ClickHouse runs it: the `query` parameter, else the body. */
  statement: string
  status: number
}

/** URL parameters of the HTTP interface that are not settings. */
const NOT_SETTINGS = new Set(['query', 'database', 'query_id', 'session_id', 'session_timeout', 'session_check', 'default_format', 'user', 'password', 'role', 'compress', 'decompress'])

/**
 * ClickHouse's HTTP interface on a local port, answered by the embedded engine (chDB) in `path`:
 * the Worker's `@clickhouse/client-web` talks to it exactly as to a ClickHouse server. For
 * `npm run dev:worker` without a server, and for the tests, which check every request at this
 * boundary (statement, settings, parameters, rows) and read back what was stored. Requests are
 * kept in `requests` when `capture` is on. The migrations are applied first.
 */
export async function serveClickHouseHttp(opts: { path: string; user: string; password: string; database: string; port?: number; capture?: boolean }) {
  const { path, user, password, database } = opts
  mkdirSync(path, { recursive: true })
  const connection = createChdbConnection({ path })
  const client = createClient({
    connection: connection as unknown as NonNullable<ClickHouseClientConfigOptions['connection']>,
    clickhouse_settings: CLIENT_SETTINGS,
  })
  const store: Store = storeFromClient(client, 'embedded')
  await migrate(store)

  const requests: CapturedRequest[] = []
  /** Answer a request with a ClickHouse error instead of running it (to test retries). */
  let failWhen: ((r: CapturedRequest) => boolean) | undefined

  // ClickHouse accepts URLs up to 1 MiB (http_max_uri_size); Node's default is 16 KB.
  const server = createServer({ maxHeaderSize: 1024 * 1024 }, async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost')
    let body = await readBody(req)
    const params = Object.fromEntries(url.searchParams)
    // A multipart form body: its fields are parameters too (`param_*`), and its `query` field
    // continues the statement, as ClickHouse's HTTP interface reads them.
    const form = /^multipart\/form-data/i.test(req.headers['content-type'] ?? '')
    if (form) {
      const fields = await new Request('http://localhost/', { method: 'POST', headers: { 'content-type': String(req.headers['content-type']) }, body }).formData()
      body = ''
      for (const [k, v] of fields) {
        if (k === 'query') params.query = `${params.query ?? ''}${String(v)}`
        else params[k] = String(v)
      }
    }
    const auth = credentials(req)
    const captured: CapturedRequest = {
      method: req.method ?? 'GET',
      urlBytes: Buffer.byteLength(req.url ?? ''),
      form,
      path: url.pathname,
      params,
      user: auth.user,
      password: auth.password,
      body,
      statement: form ? (params.query ?? '') : (params.query ?? body),
      status: 200,
    }
    if (opts.capture) requests.push(captured)
    const fail = (status: number, code: number, type: string, message: string) => {
      captured.status = status
      res.writeHead(status, { 'content-type': 'text/plain', 'x-clickhouse-exception-code': String(code) })
      res.end(`Code: ${code}. DB::Exception: ${message}. (${type}) (version 25.3.1.1)\n`)
    }
    if (url.pathname === '/ping') return void res.end('Ok.\n')
    if (url.pathname !== '/') return fail(404, 0, 'UNKNOWN', `no handler for ${url.pathname}`)
    if (auth.user !== user || auth.password !== password) {
      return fail(403, 516, 'AUTHENTICATION_FAILED', `${auth.user}: Authentication failed: password is incorrect, or there is no user with such name`)
    }
    // Without `database`, ClickHouse uses the user's default database (here: the same tables).
    if (params.database !== undefined && params.database !== database) {
      return fail(404, 81, 'UNKNOWN_DATABASE', `Database ${params.database} does not exist`)
    }
    if (failWhen?.(captured)) return fail(503, 210, 'NETWORK_ERROR', 'injected failure')

    const query_params: Record<string, unknown> = {}
    const settings: Record<string, string> = {}
    for (const [k, v] of Object.entries(params)) {
      if (k.startsWith('param_')) query_params[k.slice(6)] = fromParamText(v)
      else if (!NOT_SETTINGS.has(k)) settings[k] = v
    }
    try {
      const result = await connection.exec({
        query: params.query ?? body,
        // chDB takes the rows as text; the declared type is Node's stream.
        values: (params.query !== undefined && body !== '' ? body : undefined) as never,
        query_params,
        // A server reads settings per request; chDB would keep them for the next statement.
        clickhouse_settings: { ...INSERT_DEFAULTS, ...settings },
        query_id: params.query_id,
      })
      const chunks: Buffer[] = []
      for await (const chunk of result.stream) chunks.push(Buffer.from(chunk as Uint8Array))
      res.writeHead(200, {
        'content-type': 'text/plain; charset=UTF-8',
        'x-clickhouse-query-id': result.query_id,
        'x-clickhouse-summary': JSON.stringify(result.summary ?? {}),
      })
      res.end(Buffer.concat(chunks))
    } catch (err) {
      const e = err as { code?: string; type?: string; message?: string }
      fail(500, Number(e.code ?? 1000), e.type ?? 'UNKNOWN', String(e.message ?? err))
    }
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port ?? 0, '127.0.0.1', resolve)
  })
  const port = (server.address() as AddressInfo).port

  return {
    url: `http://127.0.0.1:${port}`,
    user,
    password,
    database,
    store,
    requests,
    set failWhen(f: ((r: CapturedRequest) => boolean) | undefined) {
      failWhen = f
    },
    /** Requests whose statement matches, in arrival order. */
    matching(re: RegExp) {
      return requests.filter((r) => re.test(r.statement))
    },
    async close() {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await client.close()
    },
  }
}

export type LocalClickHouse = Awaited<ReturnType<typeof serveClickHouseHttp>>

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}

/** `X-ClickHouse-User`/`X-ClickHouse-Key` headers, or HTTP Basic auth, as ClickHouse accepts them. */
function credentials(req: IncomingMessage): { user?: string; password?: string } {
  const h = req.headers
  if (h['x-clickhouse-user']) return { user: String(h['x-clickhouse-user']), password: String(h['x-clickhouse-key'] ?? '') }
  const basic = h.authorization?.match(/^Basic\s+(.+)$/i)?.[1]
  if (!basic) return {}
  const decoded = Buffer.from(basic, 'base64').toString('utf8')
  const i = decoded.indexOf(':')
  return { user: decoded.slice(0, i), password: decoded.slice(i + 1) }
}

/**
 * A `param_*` value, as text in ClickHouse's escaped format, back to the value chDB's binder takes:
 * arrays are parsed (their elements are quoted literals), NULL is `\N`, anything else is unescaped
 * text that the engine parses as the declared type, as the server does.
 */
export function fromParamText(text: string): unknown {
  if (text === '\\N') return null
  if (text.startsWith('[')) return parseLiteral(text, { i: 0 })
  return text.replace(/\\(.)/g, (_, c: string) => ({ t: '\t', n: '\n', r: '\r', '0': '\0', b: '\b', f: '\f' })[c] ?? c)
}

function parseLiteral(s: string, at: { i: number }): unknown {
  const ch = s[at.i]
  if (ch === '[') {
    at.i++
    const out: unknown[] = []
    while (s[at.i] !== ']') {
      out.push(parseLiteral(s, at))
      if (s[at.i] === ',') at.i++
    }
    at.i++
    return out
  }
  if (ch === "'") {
    let out = ''
    at.i++
    while (s[at.i] !== "'") {
      if (s[at.i] === '\\') {
        at.i++
        const c = s[at.i] as string
        out += ({ t: '\t', n: '\n', r: '\r', '0': '\0', b: '\b', f: '\f' } as Record<string, string>)[c] ?? c
      } else out += s[at.i]
      at.i++
    }
    at.i++
    return out
  }
  const m = /^[^,\]]+/.exec(s.slice(at.i))
  const raw = m?.[0] ?? ''
  at.i += raw.length
  if (raw === 'NULL') return null
  if (raw === 'TRUE' || raw === 'FALSE') return raw === 'TRUE'
  return Number(raw)
}


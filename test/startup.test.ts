import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { afterAll, describe, expect, it } from 'vitest'
import { ConfigError, loadConfig } from '../src/config.js'
import { resolveCredentials } from '../src/credentials.js'
import { createLogger } from '../src/logger.js'
import { type Child, freePort, spawnServer, waitReady } from './child-server.js'
import { removeDir, tempDir } from './harness.js'

// `npm start` on a fresh machine: credentials generated once and kept, a bad environment
// stopping the start with the variable's name, and the admin API closed to write keys.

const dirs: string[] = []
const children: Child[] = []
afterAll(() => {
  for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL')
  for (const d of dirs) removeDir(d)
})
const dir = (prefix: string) => {
  const d = tempDir(prefix)
  dirs.push(d)
  return d
}

async function start(env: Record<string, string>) {
  const child = spawnServer({ PORT: String(await freePort()), HOST: '127.0.0.1', LOG_LEVEL: 'silent', ...env })
  children.push(child)
  await waitReady(child)
  return child
}
async function stop(child: Child) {
  child.proc.kill('SIGTERM')
  expect(await child.exited).toBe(0)
}

const basic = (key: string) => `Basic ${Buffer.from(`${key}:`).toString('base64')}`

describe('zero-config start', () => {
  const dataDir = dir('signalbox-fresh-')
  const file = join(dataDir, 'credentials.json')
  let creds: { adminToken: string; writeKey: string; readToken: string }

  it('generates a write key, an admin token and a read token, keeps them in DATA_DIR and prints them once', async () => {
    const child = await start({ DATA_DIR: dataDir })
    creds = JSON.parse(readFileSync(file, 'utf8'))
    expect(creds).toEqual({
      adminToken: expect.stringMatching(/^sb_admin_[\w-]{32}$/),
      writeKey: expect.stringMatching(/^sb_write_[\w-]{32}$/),
      readToken: expect.stringMatching(/^sb_read_[\w-]{32}$/),
    })
    expect(statSync(file).mode & 0o777).toBe(0o600)
    const out = child.stdout()
    expect(out).toContain(`write key:   ${creds.writeKey}`)
    expect(out).toContain(`admin token: ${creds.adminToken}`)
    expect(out).toContain(`read token:  ${creds.readToken}`)
    expect(out).toContain(`curl -u '${creds.writeKey}:'`)
    expect(out).toContain(`signalbox workspace: ${child.url}/  (sign in with the admin token or a read token, kept in ${file})`)

    // The generated read token reads the live stream.
    const stream = await fetch(`${child.url}/v1/signals/stream`, { headers: { authorization: `Bearer ${creds.readToken}` } })
    expect(stream.status).toBe(200)
    await stream.body?.cancel()

    // The printed curl works as printed.
    const track = await fetch(`${child.url}/v1/track`, {
      method: 'POST',
      headers: { authorization: basic(creds.writeKey), 'content-type': 'application/json' },
      body: JSON.stringify({ userId: 'user_1', event: 'Signed Up', properties: { plan: 'free' } }),
    })
    expect(track.status).toBe(200)
    const stats = await fetch(`${child.url}/v1/stats`, { headers: { authorization: `Bearer ${creds.adminToken}` } })
    expect(stats.status).toBe(200)
    expect(await stats.json()).toMatchObject({ events: 1, users: 1, accounts: 0 })
    await stop(child)
  })

  it('a second start reuses them, prints nothing secret, and still says where the workspace and the credentials are', async () => {
    const child = await start({ DATA_DIR: dataDir })
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual(creds)
    expect(child.stdout()).not.toContain(creds.writeKey)
    expect(child.stdout()).not.toContain(creds.adminToken)
    expect(child.stdout()).not.toContain(creds.readToken)
    expect(child.stdout()).toContain(`signalbox workspace: ${child.url}/  (sign in with the admin token or a read token, kept in ${file})`)
    const track = await fetch(`${child.url}/v1/track`, {
      method: 'POST',
      headers: { authorization: basic(creds.writeKey), 'content-type': 'application/json' },
      body: JSON.stringify({ userId: 'user_1', event: 'Logged In' }),
    })
    expect(track.status).toBe(200)
    await track.body?.cancel()

    // GET /v1/stats: the admin token only. A write key never reads.
    const asWriteKeyBearer = await fetch(`${child.url}/v1/stats`, { headers: { authorization: `Bearer ${creds.writeKey}` } })
    const asWriteKeyBasic = await fetch(`${child.url}/v1/stats`, { headers: { authorization: basic(creds.writeKey) } })
    const anonymous = await fetch(`${child.url}/v1/stats`)
    expect([asWriteKeyBearer.status, asWriteKeyBasic.status, anonymous.status]).toEqual([403, 401, 401])
    expect(await asWriteKeyBearer.json()).toEqual({ error: { code: 'FORBIDDEN', message: expect.any(String) } })
    const stats = await fetch(`${child.url}/v1/stats`, { headers: { authorization: `Bearer ${creds.adminToken}` } })
    expect(await stats.json()).toMatchObject({ events: 2 })
    await stop(child)
  })
})

describe('logs', () => {
  it('are JSON lines when stdout is not a terminal, ending with a shutdown line', async () => {
    const child = await start({ DATA_DIR: dir('signalbox-logs-'), LOG_LEVEL: 'info' })
    await stop(child)
    const lines = child.stdout().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg: string })
    expect(lines.map((l) => l.msg)).toContain('signalbox is listening')
    expect(lines.at(-2)?.msg).toBe('signalbox is shutting down: finishing requests and flushing events')
    expect(lines.at(-1)?.msg).toBe('signalbox stopped')
  })

  it('are readable lines on a terminal', () => {
    let out = ''
    const destination = new Writable({
      write(chunk, _enc, done) {
        out += String(chunk)
        done()
      },
    })
    createLogger({ LOG_LEVEL: 'info' }, { tty: true, destination }).info({ url: 'http://127.0.0.1:8787' }, 'signalbox is listening')
    expect(out).toMatch(/^\[\d\d:\d\d:\d\d\] INFO: signalbox is listening\n {4}url: "http:\/\/127\.0\.0\.1:8787"\n$/)
  })
})

describe('a bad environment stops the start, naming the variable', () => {
  it('PORT=abc: exit code 1 and a message naming PORT, before anything is opened', async () => {
    const dataDir = dir('signalbox-badenv-')
    const child = spawnServer({ DATA_DIR: dataDir, PORT: 'abc' })
    children.push(child)
    expect(await child.exited).toBe(1)
    expect(child.stderr()).toMatch(/^signalbox: invalid configuration:\n {2}PORT: /)
    expect(child.stdout()).toBe('')
  })

  it.each([
    ['PORT', '70000'],
    ['RATE_LIMIT_PER_SECOND', '-1'],
    ['RATE_LIMIT_BURST', '0'],
    ['INGEST_FLUSH_MS', 'soon'],
    ['INGEST_MAX_BATCH_ROWS', '0'],
    ['ADMIN_TOKEN', 'short'],
    ['WRITE_KEYS', 'short'],
    ['WRITE_KEYS', 'a_long_enough_key:bad source'],
    ['CLICKHOUSE_URL', 'ftp://example.com'],
    ['LOG_LEVEL', 'loud'],
  ])('%s=%j', (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError)
    expect(() => loadConfig({ [name]: value })).toThrow(new RegExp(`\\n {2}${name}: `))
  })

  it('a store that cannot be opened stops the start (no silent fallback)', async () => {
    const port = await freePort() // nothing listens there
    const child = spawnServer({ DATA_DIR: dir('signalbox-nostore-'), PORT: String(await freePort()), CLICKHOUSE_URL: `http://127.0.0.1:${port}` })
    children.push(child)
    expect(await child.exited).toBe(1)
    expect(child.stderr()).toBe(`signalbox: could not start: cannot reach ClickHouse at CLICKHOUSE_URL=http://127.0.0.1:${port}/: connect ECONNREFUSED 127.0.0.1:${port}\n`)
  })

  it('a data directory another process holds stops the start, saying so', async () => {
    const dataDir = dir('signalbox-held-')
    const holder = await start({ DATA_DIR: dataDir, ADMIN_TOKEN: 'held_admin_token_0123456789', WRITE_KEYS: 'held_write_key' })
    const second = spawnServer({ DATA_DIR: dataDir, PORT: String(await freePort()), ADMIN_TOKEN: 'held_admin_token_0123456789', WRITE_KEYS: 'held_write_key' })
    children.push(second)
    expect(await second.exited).toBe(1)
    expect(second.stderr()).toMatch(/^signalbox: could not start: cannot open the embedded ClickHouse in .*one process at a time can use a data directory/m)
    await stop(holder)
  })
})

describe('resolveCredentials', () => {
  const config = (env: Record<string, string>) => loadConfig({ DATA_DIR: dir('signalbox-creds-'), ...env })

  it('takes all from the environment and writes nothing', () => {
    const c = config({ ADMIN_TOKEN: 'env_admin_token_0123456789', WRITE_KEYS: 'env_write_key_1:web,env_write_key_2', READ_TOKENS: 'env_read_token_0123456789' })
    expect(resolveCredentials(c)).toEqual({
      adminToken: 'env_admin_token_0123456789',
      writeKeys: [
        { key: 'env_write_key_1', source: 'web' },
        { key: 'env_write_key_2', source: 'default' },
      ],
      readTokens: ['env_read_token_0123456789'],
      generated: {},
      file: null,
    })
    expect(() => statSync(join(c.DATA_DIR, 'credentials.json'))).toThrow()
  })

  it('generates only what is unset, and keeps what it generated', () => {
    const c = config({ ADMIN_TOKEN: 'env_admin_token_0123456789' })
    const first = resolveCredentials(c)
    expect(first.generated).toEqual({ writeKey: expect.stringMatching(/^sb_write_/), readToken: expect.stringMatching(/^sb_read_/) })
    expect(first.writeKeys).toEqual([{ key: first.generated.writeKey, source: 'default' }])
    expect(first.readTokens).toEqual([first.generated.readToken])
    expect(first.file).toBe(join(c.DATA_DIR, 'credentials.json'))
    expect(JSON.parse(readFileSync(join(c.DATA_DIR, 'credentials.json'), 'utf8'))).toEqual({
      writeKey: first.generated.writeKey,
      readToken: first.generated.readToken,
    })
    const second = resolveCredentials(c)
    expect(second).toEqual({ ...first, generated: {} })
  })

  it('a damaged credentials file stops the start rather than replacing the keys', () => {
    const c = config({})
    writeFileSync(join(c.DATA_DIR, 'credentials.json'), '{"adminToken": 42}')
    expect(() => resolveCredentials(c)).toThrow(/credentials\.json/)
  })
})

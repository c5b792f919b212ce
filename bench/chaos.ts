/**
 * `npm run chaos` (not in CI): the fault loop. CHAOS_ROUNDS rounds (default 10); in each, 24
 * concurrent clients send CHAOS_EVENTS events (default 14,400) in batches of 20, resending
 * whatever was not answered 200 (as Segment's libraries do), while:
 *   1. the store fails in the middle of blocks (the tests' fault-injecting wrapper around the real
 *      store lets the first inserts of a block through, then fails the rest);
 *   2. the disk fills up and is freed (DATA_DIR on a tmpfs of its own, filled by a file; needs root,
 *      skipped otherwise);
 *   3. the server is killed with SIGKILL with the 24 connections in flight, and started again;
 *   4. the webhook receiver flaps all along (200, 503, connections dropped, in turn).
 * After each round, read back from the store: every acknowledged event is stored exactly once;
 * users, accounts and the daily rollup match what was sent (by construction); each of the round's
 * accounts that crossed the rule's threshold has one signal; every signal event reached the
 * receiver, and how many webhook-ids were answered 2xx more than once.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, openSync, rmSync, statfsSync, writeSync, closeSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort } from '../test/child-server.js'
import { writeSection } from './report.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const ROUNDS = Number(process.env.CHAOS_ROUNDS ?? 10)
const EVENTS = Number(process.env.CHAOS_EVENTS ?? 14_400)
const CLIENTS = 24
const BATCH = 20
const ACCOUNTS = 20
const USERS = 200
const WRITE_KEY = 'chaos_write_key_0123456789'
const ADMIN = 'chaos_admin_token_0123456789'
const log = (s: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${s}\n`)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** DATA_DIR on a tmpfs of its own, so the disk can be filled without touching the machine's; undefined without root. */
function tmpfsDir(): string | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'signalbox-chaos-disk-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=768m', 'tmpfs', dir], { stdio: 'ignore' })
    return dir
  } catch {
    rmSync(dir, { recursive: true, force: true })
    return undefined
  }
}

/** Fill the file system of `dir` to the last block; returns the filler's path. */
function fill(dir: string): string {
  const path = join(dir, 'filler')
  const fd = openSync(path, 'w')
  const chunk = Buffer.alloc(1 << 20)
  try {
    for (;;) writeSync(fd, chunk)
  } catch {
    // ENOSPC: full
  } finally {
    closeSync(fd)
  }
  return path
}

async function main() {
  const disk = tmpfsDir()
  const dataDir = disk ? join(disk, 'data') : mkdtempSync(join(tmpdir(), 'signalbox-chaos-'))
  mkdirSync(dataDir, { recursive: true })
  const port = await freePort()
  const controlPort = await freePort()
  const url = `http://127.0.0.1:${port}`
  const control = `http://127.0.0.1:${controlPort}`
  const auth = { authorization: `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`, 'content-type': 'application/json' }
  const admin = { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }

  // The flapping receiver: 2xx answers counted per webhook-id.
  const ok = new Map<string, number>()
  let received = 0
  const sockets = new Set<Socket>()
  const receiver: Server = createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      received++
      const phase = Math.floor(Date.now() / 700) % 3
      if (phase === 2) return req.socket.destroy()
      if (phase === 1) return res.writeHead(503).end('flapping')
      const id = String(req.headers['webhook-id'])
      ok.set(id, (ok.get(id) ?? 0) + 1)
      res.writeHead(200).end('ok')
    })
  })
  receiver.on('connection', (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r))
  const hook = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`

  let child: ChildProcess | undefined
  const start = async () => {
    child = spawn(process.execPath, ['--import', 'tsx', 'bench/chaos-server.ts'], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '',
        PORT: String(port),
        HOST: '127.0.0.1',
        DATA_DIR: dataDir,
        ADMIN_TOKEN: ADMIN,
        WRITE_KEYS: WRITE_KEY,
        LOG_LEVEL: 'silent',
        RATE_LIMIT_PER_SECOND: '0',
        RULES_DEFAULT_PACK: 'false',
        CHAOS_CONTROL_PORT: String(controlPort),
        WEBHOOK_BACKOFF_BASE_MS: '200',
        WEBHOOK_BACKOFF_MAX_MS: '2000',
        WEBHOOK_MAX_ATTEMPTS: '100',
        WEBHOOK_TIMEOUT_MS: '2000',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    await new Promise<void>((resolve, reject) => {
      child?.stdout?.on('data', (d: Buffer) => d.toString().includes('chaos server ready') && resolve())
      child?.once('exit', (code) => reject(new Error(`the chaos server exited (${code}) before it was ready`)))
    })
  }
  const fault = (f: Record<string, unknown>) => fetch(`${control}/fault`, { method: 'POST', body: JSON.stringify(f) }).catch(() => {})
  const query = async <T>(sql: string, params: Record<string, unknown> = {}): Promise<T[]> =>
    (await (await fetch(`${control}/query`, { method: 'POST', body: JSON.stringify({ sql, params }) })).json()) as T[]

  await start()
  const rule = { id: 'chaos-rule', kind: 'pql', subject: 'account', when: { all: [{ metric: 'count', event: 'Chaos Event', window: '1d', op: 'gte', value: 3 }] } }
  if (!(await fetch(`${url}/v1/rules/chaos-rule`, { method: 'PUT', headers: admin, body: JSON.stringify(rule) })).ok) throw new Error('rule not stored')
  if (!(await fetch(`${url}/v1/webhooks`, { method: 'POST', headers: admin, body: JSON.stringify({ url: hook }) })).ok) throw new Error('webhook not stored')

  const results: string[] = []
  let allGood = true
  for (let round = 1; round <= ROUNDS; round++) {
    const t0 = Date.now()
    const batches: object[][] = []
    for (let i = 0; i < EVENTS; i += BATCH) {
      batches.push(
        Array.from({ length: Math.min(BATCH, EVENTS - i) }, (_, k) => {
          const n = i + k
          return { type: 'track', messageId: `chaos-${round}-${n}`, userId: `u-${round}-${n % USERS}`, event: 'Chaos Event', context: { groupId: `a-${round}-${n % ACCOUNTS}` } }
        }),
      )
    }
    let nextBatch = 0
    let acked = 0
    let answers503 = 0
    let failedRequests = 0
    const client = async () => {
      for (;;) {
        const i = nextBatch++
        if (i >= batches.length) return
        for (;;) {
          try {
            const res = await fetch(`${url}/v1/batch`, { method: 'POST', headers: auth, body: JSON.stringify({ batch: batches[i] }) })
            const body = (await res.json()) as { accepted?: number }
            if (res.status === 200) {
              acked += body.accepted ?? 0
              break
            }
            if (res.status === 503) answers503++
            else throw new Error(`unexpected ${res.status}: ${JSON.stringify(body)}`)
          } catch (err) {
            if (String(err).includes('unexpected')) throw err
            failedRequests++
          }
          await sleep(100)
        }
      }
    }
    const load = Promise.all(Array.from({ length: CLIENTS }, client))
    // 1. the store fails in the middle of blocks
    await sleep(400)
    await fault({ failInsertsAfter: 2 })
    await sleep(600)
    await fault({})
    // 2. the disk fills up, and is freed
    let filler: string | undefined
    if (disk) {
      filler = fill(disk)
      await sleep(800)
      rmSync(filler)
    }
    // 3. SIGKILL with the connections in flight, and a start again
    await sleep(300)
    child?.kill('SIGKILL')
    await new Promise((r) => child?.once('exit', r))
    await start()
    await load
    const ackMs = Date.now() - t0

    // What the store holds now.
    const [ev] = await query<{ rows: number; messages: number }>(
      'SELECT count() AS rows, uniqExact(source, message_id) AS messages FROM events_v1 WHERE startsWith(message_id, {p:String})',
      { p: `chaos-${round}-` },
    )
    const [users] = await query<{ n: number }>('SELECT uniqExact(user_id) AS n FROM users_v1 WHERE startsWith(user_id, {p:String})', { p: `u-${round}-` })
    const [accounts] = await query<{ n: number }>('SELECT uniqExact(account_id) AS n FROM accounts_v1 WHERE startsWith(account_id, {p:String})', { p: `a-${round}-` })
    const [rollup] = await query<{ n: number }>('SELECT uniqExactMerge(messages) AS n FROM activity_daily_v1 WHERE startsWith(account_id, {p:String})', { p: `a-${round}-` })
    // Signals and their deliveries arrive after the events: poll for them.
    let signals: { id: string }[] = []
    for (let i = 0; i < 120 && signals.length < ACCOUNTS; i++) {
      signals = await query<{ id: string }>("SELECT id FROM signals_v1 FINAL WHERE rule_id = 'chaos-rule' AND startsWith(subject_id, {p:String})", { p: `a-${round}-` })
      if (signals.length < ACCOUNTS) await sleep(500)
    }
    let delivered: { id: string }[] = []
    for (let i = 0; i < 240; i++) {
      delivered = await query<{ id: string }>(
        "SELECT id FROM webhook_deliveries_v1 FINAL WHERE signal_id IN {ids:Array(String)} AND status = 'delivered'",
        { ids: signals.map((s) => s.id) },
      )
      if (delivered.length >= signals.length && delivered.every((d) => ok.has(d.id))) break
      await sleep(500)
    }
    const twice = delivered.filter((d) => (ok.get(d.id) ?? 0) > 1).length
    const missing = delivered.filter((d) => !ok.has(d.id)).length
    const n = (x: { rows?: number; messages?: number; n?: number } | undefined, k: 'rows' | 'messages' | 'n') => Number(x?.[k])
    const good =
      acked === EVENTS &&
      n(ev, 'rows') === EVENTS &&
      n(ev, 'messages') === EVENTS &&
      n(users, 'n') === USERS &&
      n(accounts, 'n') === ACCOUNTS &&
      n(rollup, 'n') === EVENTS &&
      signals.length === ACCOUNTS &&
      delivered.length === ACCOUNTS &&
      missing === 0
    allGood &&= good
    const line = `| ${round} | ${acked.toLocaleString('en-US')} | ${n(ev, 'rows').toLocaleString('en-US')} / ${n(ev, 'messages').toLocaleString('en-US')} | ${n(users, 'n')} / ${n(accounts, 'n')} | ${n(rollup, 'n').toLocaleString('en-US')} | ${answers503} / ${failedRequests} | ${signals.length} | ${delivered.length} / ${twice} | ${(ackMs / 1000).toFixed(1)} s | ${good ? '✓' : '✗'} |`
    results.push(line)
    log(line)
  }
  child?.kill('SIGTERM')
  await new Promise((r) => child?.once('exit', r))
  for (const s of sockets) s.destroy()
  receiver.close()
  if (disk) execFileSync('umount', [disk])
  rmSync(disk ?? dataDir, { recursive: true, force: true })

  writeSection(
    'chaos',
    'npm run chaos — the fault loop',
    `
${ROUNDS} rounds; in each, ${CLIENTS} concurrent clients send ${EVENTS.toLocaleString('en-US')} events (batches of ${BATCH}, ${USERS} users, ${ACCOUNTS} accounts per round, resending until answered 200) while the store fails in the middle of blocks (a fault-injecting wrapper around the real store), the disk fills up and is freed (${disk ? 'DATA_DIR on a 768 MB tmpfs filled by a file' : 'skipped: no root to mount a tmpfs'}), and the server is killed with SIGKILL and started again; the webhook receiver flaps all along (200, 503, dropped connections, 0.7 s each). A rule fires for each account at its 3rd event. Load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(', ')}.

Expected per round, by construction: acknowledged = stored rows = distinct messages = rollup = ${EVENTS.toLocaleString('en-US')}; ${USERS} users, ${ACCOUNTS} accounts, ${ACCOUNTS} signals, ${ACCOUNTS} deliveries.

| round | acknowledged | events rows / distinct | users / accounts | daily rollup (distinct messages) | 503s / failed requests (resent) | signals | delivered / 2xx twice | until all acknowledged | agrees |
| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |
${results.join('\n')}

${allGood ? 'Every round agreed with what was acknowledged; nothing was stored twice.' : 'At least one round disagreed (✗): see the row.'} "2xx twice" counts webhook-ids the receiver answered 2xx more than once: an attempt whose outcome was cut by the SIGKILL before it was recorded is made again with the same webhook-id (at least once), by one sender.
`,
  )
  log(`received ${received} webhook requests in all`)
}

await main()

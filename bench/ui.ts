/**
 * bench:ui — the workspace's server time per page (p50 / p95 over sequential requests) and bytes,
 * on 10 million events, 10,000 accounts and 100,000 users over 90 days (bench/rules-data.ts, the
 * rules benchmark's data), with the default pack evaluated, plus the inbox's first contentful
 * paint in Chromium. The baseline, measured in the same run, is `GET /v1/accounts/:id` (the API
 * answer behind the account page): each page's p95 is given as a ratio of it.
 *
 * BENCH_EVENTS / BENCH_ACCOUNTS / BENCH_USERS scale it down; BENCH_UI_REPEAT sets requests per page.
 */
import { rmSync } from 'node:fs'
import { startServer } from '../src/server.js'
import { tempDir } from '../test/harness.js'
import { launchBrowser, newPage, signIn } from '../test/web/browser.js'
import { percentile, writeSection } from './report.js'
import { generate, generateDirectory } from './rules-data.js'

const DAY = 86_400_000
const shape = {
  events: Number(process.env.BENCH_EVENTS ?? 10_000_000),
  accounts: Number(process.env.BENCH_ACCOUNTS ?? 10_000),
  users: Number(process.env.BENCH_USERS ?? 100_000),
  days: 90,
  now: Math.floor(Date.now() / DAY) * DAY + 12 * 3_600_000,
}
const REPEAT = Number(process.env.BENCH_UI_REPEAT ?? 20)
const ADMIN = 'bench_admin_token_0123456789'
const log = (m: string) => process.stderr.write(`[bench:ui ${new Date().toISOString().slice(11, 19)}] ${m}\n`)

const dir = tempDir('signalbox-bench-ui-')
const server = await startServer({
  DATA_DIR: dir,
  PORT: '0',
  HOST: '127.0.0.1',
  LOG_LEVEL: 'silent',
  ADMIN_TOKEN: ADMIN,
  WRITE_KEYS: 'bench_write_key_0',
  EVAL_INTERVAL_MS: '0',
  EVAL_ON_INGEST: 'false',
})
try {
  const t0 = performance.now()
  await generate(server.store, shape)
  await generateDirectory(server.store, shape)
  log(`generated ${shape.events.toLocaleString('en')} events in ${Math.round((performance.now() - t0) / 1000)} s`)
  const t1 = performance.now()
  const evaluated = (await (await fetch(`${server.url}/v1/evaluate`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}` } })).json()) as { fired: unknown[] }
  log(`evaluated: ${evaluated.fired.length} signals in ${Math.round((performance.now() - t1) / 1000)} s`)

  const login = await fetch(`${server.url}/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: `token=${ADMIN}`,
    redirect: 'manual',
  })
  const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0] as string
  const busy = 'acc3' // a busy free team: the most events of any account
  const pages: [string, string, Record<string, string>][] = [
    ['baseline: GET /v1/accounts/:id', `/v1/accounts/${busy}`, { authorization: `Bearer ${ADMIN}` }],
    ['inbox /', '/', { cookie }],
    ['inbox, PQL only', '/?kind=pql&status=open', { cookie }],
    ['accounts /accounts', '/accounts', { cookie }],
    ['accounts, by open signals', '/accounts?sort=open_signals&dir=desc', { cookie }],
    ['accounts, search', '/accounts?q=acc12', { cookie }],
    ['account /accounts/:id', `/accounts/${busy}`, { cookie }],
    ['user /users/:id', '/users/u3', { cookie }],
    ['rules /rules', '/rules', { cookie }],
    ['rule /rules/:id', '/rules/pql-product-usage', { cookie }],
    ['rule backtest, 30 days', '/rules/pql-product-usage?backtest=1', { cookie }],
    ['funnel /funnel', '/funnel', { cookie }],
    ['webhooks /webhooks', '/webhooks', { cookie }],
    ['events /events', '/events', { cookie }],
    ['events, one account', `/events?subject_type=account&subject_id=${busy}`, { cookie }],
  ]
  const rows: { name: string; p50: number; p95: number; bytes: number }[] = []
  for (const [name, path, headers] of pages) {
    const times: number[] = []
    let bytes = 0
    const n = path.includes('backtest') ? Math.max(3, Math.round(REPEAT / 4)) : REPEAT
    for (let i = 0; i < n + 2; i++) {
      const start = performance.now()
      const res = await fetch(`${server.url}${path}`, { headers })
      const body = await res.arrayBuffer()
      const ms = performance.now() - start
      if (res.status !== 200) throw new Error(`${path}: ${res.status} ${Buffer.from(body).toString('utf8').slice(0, 300)}`)
      bytes = body.byteLength
      if (i >= 2) times.push(ms) // two warm-up requests
    }
    rows.push({ name, p50: percentile(times, 50), p95: percentile(times, 95), bytes })
    log(`${name}: p50 ${percentile(times, 50).toFixed(0)} ms, p95 ${percentile(times, 95).toFixed(0)} ms, ${bytes} bytes`)
  }

  // The inbox's first contentful paint in Chromium (HTML, CSS and script from this server).
  const { browser, close } = await launchBrowser()
  const { page } = await newPage(browser)
  await signIn(page, server.url, ADMIN)
  const paints: number[] = []
  for (let i = 0; i < 7; i++) {
    await page.goto(`${server.url}/`, { waitUntil: 'load' })
    const fcp = await page.evaluate(
      () =>
        new Promise<number>((resolve) => {
          const found = performance.getEntriesByName('first-contentful-paint')[0]
          if (found) return resolve(found.startTime)
          new PerformanceObserver((list) => resolve(list.getEntries()[0]?.startTime ?? Number.NaN)).observe({ type: 'paint', buffered: true })
        }),
    )
    if (i >= 2) paints.push(fcp)
  }
  await close()
  log(`inbox first contentful paint: p50 ${percentile(paints, 50).toFixed(0)} ms`)

  const base = rows[0] as (typeof rows)[number]
  const table = [
    '| page | p50 ms | p95 ms | p95 ÷ baseline | bytes | ≤ 300 ms p95 |',
    '| --- | ---: | ---: | ---: | ---: | :---: |',
    ...rows.map(
      (r) =>
        `| ${r.name} | ${r.p50.toFixed(0)} | ${r.p95.toFixed(0)} | ${(r.p95 / base.p95).toFixed(2)} | ${r.bytes.toLocaleString('en')} | ${r.p95 <= 300 ? 'yes' : 'no'} |`,
    ),
  ].join('\n')
  const body = `${shape.events.toLocaleString('en')} events, ${shape.accounts.toLocaleString('en')} accounts, ${shape.users.toLocaleString('en')} users over ${shape.days} days (bench/rules-data.ts), the default pack evaluated (${evaluated.fired.length.toLocaleString('en')} signals). Each page requested ${REPEAT} times in a row after two warm-ups (backtests ${Math.max(3, Math.round(REPEAT / 4))}), signed in as admin; the time is the whole request on loopback (server time plus a negligible transfer). The baseline is the API answer for one account, measured in the same run.

${table}

Inbox first contentful paint in Chromium (headless, 5 loads after 2): p50 ${percentile(paints, 50).toFixed(0)} ms, p95 ${percentile(paints, 95).toFixed(0)} ms (target ≤ 1,000 ms).`
  writeSection('ui', 'bench:ui — workspace pages', body)
} finally {
  await server.close()
  rmSync(dir, { recursive: true, force: true })
}

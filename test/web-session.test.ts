import { readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ADMIN_TOKEN, startTestServer, type TestServer } from './harness.js'

// Sign-in and sessions of the workspace over plain HTTP: what the browser tests rely on, and
// what a browser cannot show (cookie attributes, refused POSTs, the rate limit).

const READ_TOKEN = 'web_read_token_0123456789'
let sb: TestServer
beforeAll(async () => {
  sb = await startTestServer({ READ_TOKENS: READ_TOKEN, EVAL_INTERVAL_MS: '0', EVAL_ON_INGEST: 'false' })
})
afterAll(async () => {
  await sb.stop()
})

const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString()
const FORM = { 'content-type': 'application/x-www-form-urlencoded' }

async function login(token: string) {
  return fetch(`${sb.url}/login`, { method: 'POST', headers: FORM, body: form({ token }), redirect: 'manual' })
}
async function session(token: string) {
  const res = await login(token)
  expect(res.status).toBe(303)
  const cookie = (res.headers.get('set-cookie') ?? '').split(';')[0] as string
  const page = await fetch(`${sb.url}/`, { headers: { cookie } })
  const html = await page.text()
  const csrf = /name="_csrf" value="([^"]+)"/.exec(html)?.[1] as string
  return { cookie, csrf, html }
}
const get = (path: string, cookie?: string) => fetch(`${sb.url}${path}`, { headers: cookie ? { cookie } : {}, redirect: 'manual' })

describe('workspace sessions', () => {
  it('every page answers 303 to /login when signed out', async () => {
    for (const path of ['/', '/accounts', '/accounts/acme', '/users/u1', '/rules', '/rules/pql-product-usage', '/funnel', '/webhooks', '/events']) {
      const res = await get(path)
      expect([path, res.status, res.headers.get('location')]).toEqual([path, 303, '/login'])
    }
    const login = await get('/login')
    expect(login.status).toBe(200)
    expect(await login.text()).toMatch(/<input id="token" name="token" type="password"/)
  })

  it('the admin token signs in: an HttpOnly, SameSite=Strict cookie signed with a key kept in DATA_DIR, then 303 to /', async () => {
    const res = await login(ADMIN_TOKEN)
    expect(res.status).toBe(303)
    expect(res.headers.get('location')).toBe('/')
    const cookie = res.headers.get('set-cookie') ?? ''
    expect(cookie).toMatch(/^sb_session=[^;]+; Max-Age=43200; Path=\/; HttpOnly; SameSite=Strict$/)
    expect(cookie).not.toContain(ADMIN_TOKEN)
    const key = join(sb.dataDir, 'session.key')
    expect(statSync(key).mode & 0o777).toBe(0o600)
    expect(readFileSync(key, 'utf8').trim().length).toBeGreaterThanOrEqual(32)
    // Behind an https proxy the cookie is Secure.
    const https = await fetch(`${sb.url}/login`, { method: 'POST', headers: { ...FORM, 'x-forwarded-proto': 'https' }, body: form({ token: ADMIN_TOKEN }), redirect: 'manual' })
    expect(https.headers.get('set-cookie')).toMatch(/; Secure; SameSite=Strict$/)
  })

  it('a wrong token is refused (401) and never echoed', async () => {
    const guess = 'sb_admin_not_really_the_token_42'
    const res = await login(guess)
    expect(res.status).toBe(401)
    expect(res.headers.get('set-cookie')).toBeNull()
    const html = await res.text()
    expect(html).toContain('That token is not the admin token or a read token.')
    expect(html).not.toContain(guess)
  })

  it('a tampered cookie is no session', async () => {
    const { cookie } = await session(ADMIN_TOKEN)
    const [name, value] = cookie.split('=') as [string, string]
    const forged = `${name}=${Buffer.from(JSON.stringify({ r: 'admin', t: 'x', c: 'y', s: Date.now() })).toString('base64url')}.${value.split('.')[1]}`
    expect((await get('/', forged)).status).toBe(303)
  })

  it('a read token sees the pages and changes nothing: no buttons, and the POSTs are refused', async () => {
    const reader = await session(READ_TOKEN)
    expect(reader.html).toContain('Viewer')
    // A signal to act on.
    await sb.admin('/v1/rules/web-any', { method: 'PUT', body: JSON.stringify({ id: 'web-any', kind: 'pql', subject: 'account', when: { all: [{ metric: 'count', event: 'Message Sent', window: '30d', op: 'gte', value: 1 }] } }) })
    await sb.post('/v1/track', { userId: 'u1', event: 'Message Sent', context: { groupId: 'acme' } })
    const fired = (await (await sb.admin('/v1/evaluate', { method: 'POST', body: '{}' })).json()) as { fired: { id: string }[] }
    const id = fired.fired[0]?.id as string
    expect(id).toMatch(/^sig_/)

    const readerInbox = await (await get('/', reader.cookie)).text()
    expect(readerInbox).toContain(id)
    expect(readerInbox).not.toContain('>Accept<')
    expect(readerInbox).not.toContain('>Dismiss<')
    const refused = await fetch(`${sb.url}/signals/${id}/accept`, { method: 'POST', headers: { ...FORM, cookie: reader.cookie }, body: form({ _csrf: reader.csrf }), redirect: 'manual' })
    expect(refused.status).toBe(403)
    expect(await refused.text()).toContain('read token')
    const rule = await fetch(`${sb.url}/rules/web-any`, { method: 'POST', headers: { ...FORM, cookie: reader.cookie }, body: form({ _csrf: reader.csrf, source: 'id: web-any' }), redirect: 'manual' })
    expect(rule.status).toBe(403)
    const signal = (await (await sb.admin(`/v1/signals/${id}`)).json()) as { feedback: unknown[] }
    expect(signal.feedback).toEqual([])

    // The admin has the buttons, and a POST without the session's CSRF token is refused.
    const admin = await session(ADMIN_TOKEN)
    expect(await (await get('/', admin.cookie)).text()).toContain('>Accept<')
    const noCsrf = await fetch(`${sb.url}/signals/${id}/accept`, { method: 'POST', headers: { ...FORM, cookie: admin.cookie }, body: form({}), redirect: 'manual' })
    expect(noCsrf.status).toBe(403)
    const wrongCsrf = await fetch(`${sb.url}/signals/${id}/accept`, { method: 'POST', headers: { ...FORM, cookie: admin.cookie }, body: form({ _csrf: reader.csrf }), redirect: 'manual' })
    expect(wrongCsrf.status).toBe(403)
    const ok = await fetch(`${sb.url}/signals/${id}/accept`, { method: 'POST', headers: { ...FORM, cookie: admin.cookie }, body: form({ _csrf: admin.csrf, back: '/' }), redirect: 'manual' })
    expect(ok.status).toBe(303)
    const accepted = (await (await sb.admin(`/v1/signals/${id}`)).json()) as { feedback: { verdict: string; by: string }[] }
    expect(accepted.feedback).toMatchObject([{ verdict: 'useful', by: 'workspace admin' }])
    const account = (await (await sb.admin('/v1/accounts/acme')).json()) as { stage: { name: string }; stages: unknown[] }
    expect(account.stage.name).toBe('sql')
    expect(account.stages.at(-1)).toMatchObject({ to: 'sql', by: 'workspace admin', cause: { type: 'api', reason: `accepted in the workspace (web-any, ${id})` } })

    // The stage API records who made a move too (a CRM integration, say).
    const moved = await sb.admin('/v1/subjects/account/acme/stage', { method: 'POST', body: JSON.stringify({ stage: 'customer', reason: 'closed won', by: 'salesforce' }) })
    expect(await moved.json()).toMatchObject({ to: 'customer', from: 'sql', by: 'salesforce' })
  })

  it('/logout ends the session', async () => {
    const { cookie, csrf } = await session(ADMIN_TOKEN)
    const out = await fetch(`${sb.url}/logout`, { method: 'POST', headers: { ...FORM, cookie }, body: form({ _csrf: csrf }), redirect: 'manual' })
    expect(out.status).toBe(303)
    expect(out.headers.get('location')).toBe('/login')
    expect(out.headers.get('set-cookie')).toMatch(/^sb_session=; Max-Age=0/)
  })

  it('assets are served with a content hash in the URL and a year of caching', async () => {
    const { html } = await session(ADMIN_TOKEN)
    const css = /href="(\/assets\/[0-9a-f]{12}\/app\.css)"/.exec(html)?.[1] as string
    const res = await get(css)
    expect(res.status).toBe(200)
    expect(res.headers.get('cache-control')).toBe('public, max-age=31536000, immutable')
    expect(res.headers.get('content-type')).toBe('text/css; charset=utf-8')
    expect((await get('/assets/000000000000/app.css')).status).toBe(404)
  })

  // Last: it locks this client out of signing in for the rest of the window.
  it('wrong tokens are rate-limited: after 10 failures even the right token gets 429 with Retry-After', async () => {
    let last: Response | undefined
    for (let i = 0; i < 9; i++) {
      last = await login(`wrong_token_${i}_0123456789`)
      expect(last.status).toBe(401)
    }
    const limited = await login(ADMIN_TOKEN)
    expect(limited.status).toBe(429)
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(limited.headers.get('set-cookie')).toBeNull()
  })
})

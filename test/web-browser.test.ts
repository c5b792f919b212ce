import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Analytics } from '@segment/analytics-node'
import type { Browser, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ADMIN_TOKEN, APP_KEY, startTestServer, type TestServer } from './harness.js'
import { launchBrowser, newPage, see, signIn } from './web/browser.js'

// The workspace in a real browser (Debian's Chromium), used as a person uses it: by role and
// label, waiting for what appears, then checking the stored result through the API.

const READ_TOKEN = 'browser_read_token_0123456789'
let sb: TestServer
let browser: Browser
let closeBrowser: () => Promise<void>

const putRule = (id: string, rule: Record<string, unknown>) => sb.admin(`/v1/rules/${id}`, { method: 'PUT', body: JSON.stringify({ id, ...rule }) })
const countRule = (value: number, event = 'Message Sent') => ({
  kind: 'pql',
  subject: 'account',
  description: 'A busy team',
  when: { all: [{ metric: 'count', event, window: '30d', op: 'gte', value }] },
})

async function send(messages: { userId: string; event: string; account: string }[]) {
  const analytics = new Analytics({ writeKey: APP_KEY, host: sb.url, flushAt: 50, maxRetries: 1 })
  for (const m of messages) analytics.track({ userId: m.userId, event: m.event, context: { groupId: m.account } })
  await analytics.closeAndFlush({ timeout: 20_000 })
}
const group = async (account: string, userId: string, traits: Record<string, unknown>) => {
  const analytics = new Analytics({ writeKey: APP_KEY, host: sb.url, flushAt: 1 })
  analytics.group({ userId, groupId: account, traits })
  await analytics.closeAndFlush({ timeout: 20_000 })
}

beforeAll(async () => {
  sb = await startTestServer({ READ_TOKENS: READ_TOKEN, RULES_DEFAULT_PACK: 'false', EVAL_INTERVAL_MS: '0', EVAL_DEBOUNCE_MS: '50' })
  ;({ browser, close: closeBrowser } = await launchBrowser())
})
afterAll(async () => {
  await closeBrowser?.()
  await sb?.stop()
})

async function adminPage(): Promise<Page> {
  const { page } = await newPage(browser)
  await signIn(page, sb.url, ADMIN_TOKEN)
  return page
}

describe('signing in', () => {
  it('the admin token opens the inbox; a wrong token is refused and not echoed', async () => {
    const { page, context } = await newPage(browser)
    await page.goto(`${sb.url}/accounts`)
    await page.waitForURL(`${sb.url}/login`)
    await page.getByLabel('Token').fill('not_the_token_0123456789')
    await page.getByRole('button', { name: 'Sign in' }).click()
    await see(page.getByRole('alert')).text('That token is not the admin token or a read token.')
    await see(page.getByLabel('Token')).value('')
    expect(await page.content()).not.toContain('not_the_token_0123456789')

    await page.getByLabel('Token').fill(ADMIN_TOKEN)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await see(page.getByRole('heading', { name: 'Signals' })).visible()
    await see(page.getByText('Admin', { exact: true })).visible()
    await page.getByRole('button', { name: 'Sign out' }).click()
    await page.waitForURL(`${sb.url}/login`)
    await page.goto(`${sb.url}/`)
    await page.waitForURL(`${sb.url}/login`)
    await context.close()
  })
})

describe('the live inbox', () => {
  it('shows a signal fired by events sent with @segment/analytics-node without a reload; accepting it moves the account to sql', async () => {
    expect((await putRule('busy-team', countRule(3))).status).toBe(201)
    await group('acme', 'ada', { name: 'Acme Corp', domain: 'acme.com', plan: 'free' })
    const page = await adminPage()
    await see(page.locator('[data-live-status]')).className(/on/)
    const url = page.url()

    await send([1, 2, 3].map((i) => ({ userId: `ada`, event: 'Message Sent', account: 'acme', i })))
    const item = page.getByRole('listitem').filter({ hasText: 'Acme Corp' })
    await see(item, 20_000).visible()
    expect(page.url()).toBe(url)
    await see(item.getByRole('list')).contains('3 Message Sent in 30 days, threshold 3')
    await see(item.getByRole('link', { name: 'busy-team' })).visible()

    await item.getByRole('button', { name: 'Accept' }).click()
    await see(page.getByRole('listitem').filter({ hasText: 'Acme Corp' })).contains('Accepted by workspace admin')
    await page.getByRole('link', { name: /Acme Corp/ }).first().click()
    await see(page.getByRole('heading', { name: 'Acme Corp', level: 1 })).visible()
    await see(page.getByRole('list', { name: 'Stage timeline' }).getByRole('listitem').first()).contains('SQL')
    await see(page.getByRole('list', { name: 'Stage timeline' })).contains('by workspace admin')

    const account = (await (await sb.admin('/v1/accounts/acme')).json()) as { stage: { name: string }; signals: { id: string; feedback?: unknown }[] }
    expect(account.stage.name).toBe('sql')
    await page.context().close()
  })
})

describe('the account page', () => {
  it('draws a usage chart whose points are the stored daily counts', async () => {
    const page = await adminPage()
    await page.goto(`${sb.url}/accounts/acme`)
    const chart = page.getByRole('figure', { name: /Usage per day/ })
    await see(chart.locator('canvas')).visible()
    const drawn = await chart.evaluate((el) => (el as HTMLElement & { uplot: { data: number[][] } }).uplot.data)
    const api = (await (await sb.admin('/v1/accounts/acme?days=90')).json()) as { usage: { day: string; events: number; active_users: number }[] }
    expect(drawn[0]).toEqual(api.usage.map((d) => Date.parse(`${d.day}T00:00:00Z`) / 1000))
    expect(drawn[1]).toEqual(api.usage.map((d) => d.events))
    expect(drawn[2]).toEqual(api.usage.map((d) => d.active_users))
    expect(api.usage.at(-1)?.events).toBe(3)
    await page.context().close()
  })
})

describe('the rule editor', () => {
  it('shows an invalid rule\'s error at its path and line, saves a valid change as version 2, and draws a backtest', async () => {
    const page = await adminPage()
    await page.goto(`${sb.url}/rules/busy-team`)
    const editor = page.getByLabel('Rule (YAML)')
    const yaml = (await editor.inputValue()).replace('"value":3', '"value":3')
    const text = `id: busy-team\nkind: pql\nsubject: account\nwhen:\n  all:\n    - { metric: count, event: Message Sent, window: 30 days, op: gte, value: 3 }\n`
    expect(yaml.length).toBeGreaterThan(0)
    await editor.fill(text)
    await page.getByRole('button', { name: 'Save rule' }).click()
    const alert = page.getByRole('alert')
    await see(alert).contains('line 6 · when.all.0.window')
    await see(editor).value(text)

    await editor.fill(text.replace('30 days', '30d').replace('value: 3', 'value: 2'))
    await page.getByRole('button', { name: 'Save rule' }).click()
    await see(page.getByRole('status')).text('Saved as version 2.')
    await see(page.getByText('Version 2', { exact: true })).visible()
    await see(page.locator('.diff .add')).contains('value: 2')
    const stored = (await (await sb.admin('/v1/rules/busy-team')).json()) as { version: number; rule: { when: { all: { value: number }[] } } }
    expect(stored).toMatchObject({ version: 2, rule: { when: { all: [{ value: 2 }] } } })

    await page.getByRole('button', { name: 'Run backtest' }).click()
    const chart = page.getByRole('figure', { name: 'Would-be fires per day' })
    await see(chart.locator('canvas')).visible()
    const bars = await chart.evaluate((el) => (el as HTMLElement & { uplot: { data: number[][] } }).uplot.data[1] as number[])
    expect(bars.reduce((a, b) => a + b, 0)).toBe(1)
    await see(page.getByRole('table').filter({ hasText: 'Would have fired' })).contains('Acme Corp')
    await page.context().close()
  })
})

describe('webhooks', () => {
  let receiver: Server
  let failing = true
  const received: string[] = []
  beforeAll(async () => {
    receiver = createServer((req, res) => {
      req.resume()
      req.on('end', () => {
        received.push(String(req.headers['webhook-id']))
        res.writeHead(failing ? 410 : 200).end()
      })
    })
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve))
  })
  afterAll(() => new Promise<void>((resolve) => receiver.close(() => resolve())))

  it('an endpoint created on the page shows its secret once; a dead delivery replayed from the page ends delivered at the receiver', async () => {
    const page = await adminPage()
    await page.goto(`${sb.url}/webhooks`)
    const target = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`
    await page.getByLabel('URL').fill(target)
    await page.getByRole('button', { name: 'Create endpoint' }).click()
    await see(page.getByLabel('Signing secret', { exact: true })).text(/^whsec_/)
    await page.goto(`${sb.url}/webhooks`)
    await see(page.getByLabel('Signing secret', { exact: true })).count(0)

    // A signal whose delivery the receiver refuses with a 410: dead at once.
    await putRule('hook-rule', { ...countRule(1, 'Seat Added'), kind: 'expansion' })
    await send([{ userId: 'hank', event: 'Seat Added', account: 'globex' }])
    const hooks = (await (await sb.admin('/v1/webhooks')).json()) as { data: { id: string }[] }
    const hook = hooks.data[0]?.id as string
    let dead: { id: string } | undefined
    await expect
      .poll(async () => {
        const list = (await (await sb.admin(`/v1/webhooks/${hook}/deliveries?status=dead`)).json()) as { data: { id: string }[] }
        dead = list.data[0]
        return list.data.length
      }, { timeout: 30_000 })
      .toBeGreaterThan(0)

    failing = false
    await page.goto(`${sb.url}/webhooks`)
    await page.getByRole('button', { name: `Replay ${dead?.id}` }).click()
    await see(page.getByRole('status')).contains(`Delivery ${dead?.id} is queued again.`)
    await expect.poll(async () => ((await (await sb.admin(`/v1/deliveries/${dead?.id}`)).json()) as { status: string }).status, { timeout: 30_000 }).toBe('delivered')
    expect(received.filter((id) => id === dead?.id).length).toBeGreaterThanOrEqual(2)
    await page.reload()
    await see(page.getByRole('table', { name: `Recent deliveries of ${target}` }).locator(`[data-delivery-id="${dead?.id}"]`)).contains('delivered')
    await page.context().close()
  })
})

describe('a read token', () => {
  it('sees the inbox and the rules but has no buttons, and its POSTs are refused', async () => {
    const { page, context } = await newPage(browser)
    await signIn(page, sb.url, READ_TOKEN)
    await see(page.getByText('Viewer')).visible()
    await see(page.getByRole('listitem').filter({ hasText: 'Globex' })).visible()
    await see(page.getByRole('button', { name: 'Accept' })).count(0)
    await see(page.getByRole('button', { name: 'Dismiss' })).count(0)
    await page.goto(`${sb.url}/rules/busy-team`)
    await see(page.getByLabel('Rule (YAML)')).attribute('readonly', '')
    await see(page.getByRole('button', { name: 'Save rule' })).count(0)

    // The POSTs a page would make, with this session's cookie and CSRF token, are refused.
    const signals = (await (await sb.admin('/v1/signals?rule_id=hook-rule')).json()) as { data: { id: string }[] }
    const csrf = await page.locator('input[name=_csrf]').first().inputValue()
    const accept = await page.request.post(`${sb.url}/signals/${signals.data[0]?.id}/accept`, { form: { _csrf: csrf }, maxRedirects: 0 })
    expect(accept.status()).toBe(403)
    const save = await page.request.post(`${sb.url}/rules/busy-team`, { form: { _csrf: csrf, source: 'id: busy-team' }, maxRedirects: 0 })
    expect(save.status()).toBe(403)
    expect(((await (await sb.admin('/v1/rules/busy-team')).json()) as { version: number }).version).toBe(2)
    await context.close()
  })
})

describe('keyboard only', () => {
  async function tabTo(page: Page, name: string, max = 60) {
    for (let i = 0; i < max; i++) {
      await page.keyboard.press('Tab')
      // The focused control's accessible name: its label, aria-label, or text.
      const focused = await page.evaluate(() => {
        const el = document.activeElement as HTMLInputElement | null
        if (!el) return ''
        return (el.labels?.[0]?.textContent ?? el.getAttribute('aria-label') ?? el.textContent ?? '').trim()
      })
      if (focused === name) return
    }
    throw new Error(`Tab never reached "${name}"`)
  }

  it('dismisses a signal in the inbox and saves a rule with Tab and Enter', async () => {
    const page = await adminPage()
    await page.goto(`${sb.url}/?rule_id=hook-rule`)
    await tabTo(page, 'Dismiss reason')
    await page.keyboard.press('ArrowDown') // Bad timing
    await tabTo(page, 'Dismiss')
    await page.keyboard.press('Enter')
    await see(page.getByRole('listitem').filter({ hasText: 'Globex' })).contains('Dismissed: Bad timing')
    const signals = (await (await sb.admin('/v1/signals?rule_id=hook-rule')).json()) as { data: { feedback: { verdict: string; reason: string }[] }[] }
    expect(signals.data[0]?.feedback).toMatchObject([{ verdict: 'not_useful', reason: 'bad_timing' }])

    await page.goto(`${sb.url}/rules/busy-team`)
    await tabTo(page, 'Rule (YAML)')
    await page.keyboard.press('ControlOrMeta+End')
    await page.keyboard.type('cooldown: 7d\n')
    await tabTo(page, 'Save rule')
    await page.keyboard.press('Enter')
    await see(page.getByRole('status')).text('Saved as version 3.')
    expect(((await (await sb.admin('/v1/rules/busy-team')).json()) as { rule: { cooldown: string } }).rule.cooldown).toBe('7d')
    await page.context().close()
  })

  it('every input of every page has a label', async () => {
    const page = await adminPage()
    for (const path of ['/', '/accounts', '/accounts/acme', '/users/ada', '/rules', '/rules/busy-team?backtest=1', '/funnel', '/webhooks', '/events', '/login']) {
      await page.goto(`${sb.url}${path}`)
      const unlabelled = await page
        .locator('input:not([type=hidden]), select, textarea, button')
        .evaluateAll((els) =>
          els
            .filter((el) => {
              const e = el as HTMLInputElement
              const named = (e.labels?.length ?? 0) > 0 || e.getAttribute('aria-label') || (e.tagName === 'BUTTON' && e.textContent?.trim())
              return !named
            })
            .map((el) => el.outerHTML.slice(0, 120)),
        )
      expect([path, unlabelled]).toEqual([path, []])
    }
    await page.context().close()
  })
})

import { type Browser, type BrowserContext, chromium, type Locator, type Page } from 'playwright-core'
import { expect } from 'vitest'

/**
 * Debian's Chromium driven by playwright-core (Playwright's own browser download cannot work
 * here). The background-networking flags keep Chromium from calling home on a closed network.
 * Every launch gets a fresh profile: Playwright makes a new temporary --user-data-dir itself (and
 * refuses one passed in the args).
 */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

export async function launchBrowser(): Promise<{ browser: Browser; close(): Promise<void> }> {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
  return {
    browser,
    async close() {
      await browser.close()
    },
  }
}

export const DESKTOP = { width: 1280, height: 900 }
export const PHONE = { width: 390, height: 844 }

/** A fresh context (its own cookies) with one page. */
export async function newPage(browser: Browser, viewport = DESKTOP): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ viewport })
  const page = await context.newPage()
  return { context, page }
}

/** Sign in as a person does: the Token field, then the Sign in button. */
export async function signIn(page: Page, baseUrl: string, token: string): Promise<void> {
  await page.goto(`${baseUrl}/login`)
  await page.getByLabel('Token').fill(token)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.waitForURL(`${baseUrl}/`)
}

/**
 * Web-first assertions over playwright-core locators (the `expect` of @playwright/test is not in
 * playwright-core): each one retries until the page shows what is expected, or times out.
 */
export function see(l: Locator, timeout = 15_000) {
  const poll = <T>(f: () => Promise<T>) => expect.poll(f, { timeout, interval: 50 })
  return {
    visible: () => l.waitFor({ state: 'visible', timeout }),
    text: (t: string | RegExp) => (typeof t === 'string' ? poll(async () => (await l.innerText()).trim()).toBe(t) : poll(() => l.innerText()).toMatch(t)),
    contains: (t: string) => poll(() => l.innerText()).toContain(t),
    value: (v: string) => poll(() => l.inputValue()).toBe(v),
    count: (n: number) => poll(() => l.count()).toBe(n),
    attribute: (name: string, v: string | null) => poll(() => l.getAttribute(name)).toBe(v),
    className: (re: RegExp) => poll(async () => (await l.getAttribute('class')) ?? '').toMatch(re),
  }
}

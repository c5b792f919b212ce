// Screenshots of every workspace page at 1280 px and at phone width, on the demo company:
// `npx tsx test/web/screenshots.ts [outDir]` (default docs/screenshots).
import { mkdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { startServer } from '../../src/server.js'
import { tempDir } from '../harness.js'
import { DESKTOP, launchBrowser, newPage, PHONE, signIn } from './browser.js'
import { sendDemo } from './demo-data.js'

const out = process.argv[2] ?? 'docs/screenshots'
const ADMIN = 'screenshot_admin_token_0123456789'
const dataDir = tempDir('signalbox-shots-')
const server = await startServer({
  DATA_DIR: dataDir, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent', ADMIN_TOKEN: ADMIN,
  WRITE_KEYS: 'screenshot_write_key', READ_TOKENS: 'screenshot_read_token_0123456789', EVAL_INTERVAL_MS: '0',
})
try {
  await sendDemo({ url: server.url, writeKey: 'screenshot_write_key' })
  await fetch(`${server.url}/v1/evaluate`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}` } })
  mkdirSync(out, { recursive: true })
  const pages = (process.env.PAGES ?? '/,/accounts,/accounts/acme,/users/hooli-1,/rules,/rules/pql-product-usage?backtest=1,/funnel,/webhooks,/events').split(',')
  const { browser, close } = await launchBrowser()
  for (const [name, viewport] of [['desktop', DESKTOP], ['phone', PHONE]] as const) {
    const { context, page } = await newPage(browser, viewport)
    await signIn(page, server.url, ADMIN)
    for (const path of pages) {
      await page.goto(`${server.url}${path}`)
      await page.waitForLoadState('networkidle').catch(() => {})
      const file = `${path === '/' ? 'inbox' : path.slice(1).replace(/\?.*$/, '').replace(/\//g, '-')}-${name}.png`
      await page.screenshot({ path: join(out, file), fullPage: true })
      console.log(join(out, file))
    }
    await context.close()
  }
  await close()
} finally {
  await server.close()
  rmSync(dataDir, { recursive: true, force: true })
}

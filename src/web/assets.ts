import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import type { Hono } from 'hono'
import type { AssetUrls } from './layout.js'

type Asset = { body: string; type: string; etag: string }

const require = createRequire(import.meta.url)
const own = (name: string) => fileURLToPath(new URL(`./assets/${name}`, import.meta.url))

const FILES: Record<keyof AssetUrls, { file: string; name: string; type: string }> = {
  css: { file: own('app.css'), name: 'app.css', type: 'text/css; charset=utf-8' },
  js: { file: own('app.js'), name: 'app.js', type: 'text/javascript; charset=utf-8' },
  // The charting library, served from node_modules as published.
  uplotJs: { file: require.resolve('uplot/dist/uPlot.iife.min.js'), name: 'uPlot.iife.min.js', type: 'text/javascript; charset=utf-8' },
  uplotCss: { file: require.resolve('uplot/dist/uPlot.min.css'), name: 'uPlot.min.css', type: 'text/css; charset=utf-8' },
}

/**
 * The workspace's static files, read once at start. Each URL carries a hash of its content
 * (`/assets/<hash>/app.css`), so it is cached for a year (`immutable`) and a new version is a new URL.
 */
export function mountAssets(app: Hono<any>): AssetUrls {
  const byPath = new Map<string, Asset>()
  const urls = {} as AssetUrls
  for (const [key, f] of Object.entries(FILES) as [keyof AssetUrls, (typeof FILES)[keyof AssetUrls]][]) {
    const body = readFileSync(f.file, 'utf8')
    const hash = createHash('sha256').update(body).digest('hex').slice(0, 12)
    const path = `/assets/${hash}/${f.name}`
    byPath.set(path, { body, type: f.type, etag: `"${hash}"` })
    urls[key] = path
  }
  app.get('/assets/:hash/:name', (c) => {
    const asset = byPath.get(c.req.path)
    if (!asset) return c.text('no such asset', 404)
    c.header('cache-control', 'public, max-age=31536000, immutable')
    c.header('etag', asset.etag)
    c.header('content-type', asset.type)
    if (c.req.header('if-none-match') === asset.etag) return c.body(null, 304)
    return c.body(asset.body)
  })
  return urls
}

import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import { afterAll, describe, expect, it } from 'vitest'
import { removeDir, tempDir } from './harness.js'

const ROOT = fileURLToPath(new URL('../', import.meta.url))
const out = tempDir('signalbox-worker-build-')
afterAll(() => removeDir(out))

type Meta = { inputs: Record<string, { bytes: number }>; outputs: Record<string, { imports?: { path: string; external?: boolean }[] }> }

describe('wrangler deploy --dry-run', () => {
  it('builds the Worker offline from wrangler.toml, without the Node-only store, and reports its size', () => {
    const r = spawnSync(process.execPath, [join(ROOT, 'node_modules/wrangler/bin/wrangler.js'), 'deploy', '--dry-run', '--outdir', out, '--metafile', join(out, 'meta.json')], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CI: '1', NO_COLOR: '1' },
      timeout: 120_000,
    })
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0)
    expect(r.stdout).toMatch(/--dry-run: exiting now/)
    expect(r.stdout).toMatch(/env\.INGEST_QUEUE \(signalbox-ingest\)\s+Queue/)

    const bundle = readFileSync(join(out, 'worker.js'))
    const gzip = gzipSync(bundle).length
    const meta = JSON.parse(readFileSync(join(out, 'meta.json'), 'utf8')) as Meta
    const inputs = Object.keys(meta.inputs)
    const externals = [...new Set(Object.values(meta.outputs).flatMap((o) => (o.imports ?? []).filter((i) => i.external).map((i) => i.path)))].sort()
    console.log(`worker bundle: ${(bundle.length / 1024).toFixed(0)} KiB, ${(gzip / 1024).toFixed(0)} KiB gzipped; runtime imports: ${externals.join(', ')}`)

    // The embedded engine and the Node client never reach the edge; pino is its browser build.
    expect(inputs.filter((i) => /node_modules\/(chdb|@clickhouse\/client\/|thread-stream|pino-std-serializers|sonic-boom)/.test(i))).toEqual([])
    expect(inputs.some((i) => i.includes('node_modules/@clickhouse/client-web/'))).toBe(true)
    expect(inputs.some((i) => i.endsWith('node_modules/pino/browser.js'))).toBe(true)
    // Only what nodejs_compat provides.
    expect(externals.every((e) => /^node:(crypto|events|buffer|async_hooks|util|stream)$/.test(e))).toBe(true)
    // Workers' limit is 3 MiB gzipped on the free plan, 10 MiB on paid.
    expect(gzip).toBeLessThan(3 * 1024 * 1024)
  })
})

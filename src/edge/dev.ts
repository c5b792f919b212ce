import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ConfigError, loadConfig } from '../config.js'
import { resolveCredentials } from '../credentials.js'
import { type LocalClickHouse, serveClickHouseHttp } from './local-clickhouse.js'

/**
 * `npm run dev:worker`: the Worker in workerd under `wrangler dev`, with local queues. With
 * CLICKHOUSE_URL it talks to that server (apply `npm run migrate` to it first); without, the
 * embedded engine in DATA_DIR is served to it over ClickHouse's HTTP interface, so the edge path
 * runs end to end on one machine with nothing to install. Credentials are the Node server's
 * (ADMIN_TOKEN/WRITE_KEYS, or the ones generated in DATA_DIR).
 */
const ROOT = fileURLToPath(new URL('../../', import.meta.url))

async function main() {
  const config = loadConfig(process.env)
  const { adminToken, writeKeys, readTokens } = resolveCredentials(config)
  let local: LocalClickHouse | undefined
  const vars: Record<string, string> = {
    ADMIN_TOKEN: adminToken,
    WRITE_KEYS: writeKeys.map((k) => `${k.key}:${k.source}`).join(','),
    READ_TOKENS: readTokens.join(','),
    LOG_LEVEL: config.LOG_LEVEL,
    QUEUE_RETRY_BASE_SECONDS: String(config.QUEUE_RETRY_BASE_SECONDS),
  }
  if (config.CLICKHOUSE_URL) {
    Object.assign(vars, {
      CLICKHOUSE_URL: config.CLICKHOUSE_URL,
      CLICKHOUSE_USER: config.CLICKHOUSE_USER,
      CLICKHOUSE_PASSWORD: config.CLICKHOUSE_PASSWORD,
      CLICKHOUSE_DATABASE: config.CLICKHOUSE_DATABASE,
    })
  } else {
    const password = randomBytes(18).toString('base64url')
    local = await serveClickHouseHttp({ path: join(config.DATA_DIR, 'clickhouse'), user: 'default', password, database: config.CLICKHOUSE_DATABASE })
    Object.assign(vars, { CLICKHOUSE_URL: local.url, CLICKHOUSE_USER: 'default', CLICKHOUSE_PASSWORD: password, CLICKHOUSE_DATABASE: config.CLICKHOUSE_DATABASE })
    process.stdout.write(`signalbox: the embedded ClickHouse in ${config.DATA_DIR} answers the Worker at ${local.url}\n`)
  }
  // Secrets go to wrangler in a private file, not on its command line.
  const dir = mkdtempSync(join(tmpdir(), 'signalbox-dev-worker-'))
  const envFile = join(dir, '.dev.vars')
  writeFileSync(envFile, Object.entries(vars).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join('\n'), { mode: 0o600 })
  const args = [join(ROOT, 'node_modules/wrangler/bin/wrangler.js'), 'dev', '--local', '--env-file', envFile, '--port', String(config.PORT), '--ip', config.HOST, ...process.argv.slice(2)]
  process.stdout.write(`signalbox: write key ${writeKeys[0]?.key}; admin token in ADMIN_TOKEN or ${config.DATA_DIR}/credentials.json\n`)
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: 'inherit', env: { ...process.env, WRANGLER_SEND_METRICS: 'false' } })
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => child.kill(signal))
  const code = await new Promise<number>((resolve) => child.on('exit', (c) => resolve(c ?? 0)))
  rmSync(dir, { recursive: true, force: true })
  await local?.close()
  process.exit(code)
}

main().catch((err) => {
  console.error(err instanceof ConfigError ? `signalbox: ${err.message}` : `signalbox: ${err instanceof Error ? err.stack : err}`)
  process.exit(1)
})

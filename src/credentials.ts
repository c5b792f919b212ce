import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { z } from 'zod'
import { type Config, ConfigError, type WriteKey } from './config.js'

const Stored = z.object({ adminToken: z.string().optional(), writeKey: z.string().optional(), readToken: z.string().optional() })

export type Credentials = {
  adminToken: string
  writeKeys: WriteKey[]
  /** Tokens that may read (the live stream, the workspace as a viewer) and change nothing. */
  readTokens: string[]
  generated: { adminToken?: string; writeKey?: string; readToken?: string }
  /** Where the generated ones are kept (`DATA_DIR/credentials.json`), or null when all come from the environment. */
  file: string | null
}

const token = (prefix: string) => `${prefix}_${randomBytes(24).toString('base64url')}`

/**
 * The admin token, write keys and read tokens: from the environment where set, otherwise generated
 * once and kept in `DATA_DIR/credentials.json` (mode 0600), so a newcomer can send an event and
 * open the workspace within a minute, and the keys survive restarts.
 */
export function resolveCredentials(config: Config): Credentials {
  const file = join(config.DATA_DIR, 'credentials.json')
  const stored = existsSync(file) ? readStored(file) : {}
  const generated: Credentials['generated'] = {}
  let adminToken = config.ADMIN_TOKEN
  if (!adminToken) {
    if (!stored.adminToken) stored.adminToken = generated.adminToken = token('sb_admin')
    adminToken = stored.adminToken
  }
  let writeKeys = config.WRITE_KEYS
  if (!writeKeys) {
    if (!stored.writeKey) stored.writeKey = generated.writeKey = token('sb_write')
    writeKeys = [{ key: stored.writeKey, source: 'default' }]
  }
  let readTokens = config.READ_TOKENS
  if (!readTokens) {
    if (!stored.readToken) stored.readToken = generated.readToken = token('sb_read')
    readTokens = [stored.readToken]
  }
  if (generated.adminToken || generated.writeKey || generated.readToken) {
    mkdirSync(config.DATA_DIR, { recursive: true })
    writeFileSync(file, `${JSON.stringify(stored, null, 2)}\n`, { mode: 0o600 })
  }
  const fromFile = !config.ADMIN_TOKEN || !config.WRITE_KEYS || !config.READ_TOKENS
  return { adminToken, writeKeys, readTokens, generated, file: fromFile ? file : null }
}

/** A damaged file stops the start: generating new keys over it would lock out every client. */
function readStored(file: string): z.infer<typeof Stored> {
  let json: unknown
  try {
    json = JSON.parse(readFileSync(file, 'utf8'))
  } catch (err) {
    throw new ConfigError(`${file} is not valid JSON (${err instanceof Error ? err.message : err}); fix or remove it`)
  }
  const parsed = Stored.safeParse(json)
  if (!parsed.success) {
    throw new ConfigError(`${file} is damaged: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}; fix or remove it`)
  }
  return parsed.data
}

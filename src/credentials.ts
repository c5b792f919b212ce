import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { z } from 'zod'
import type { Config, WriteKey } from './config.js'

const Stored = z.object({ adminToken: z.string().optional(), writeKey: z.string().optional() })

export type Credentials = { adminToken: string; writeKeys: WriteKey[]; generated: { adminToken?: string; writeKey?: string } }

const token = (prefix: string) => `${prefix}_${randomBytes(24).toString('base64url')}`

/**
 * The admin token and write keys: from the environment where set, otherwise generated once and
 * kept in `DATA_DIR/credentials.json` (mode 0600), so a newcomer can send an event within a minute
 * and the keys survive restarts.
 */
export function resolveCredentials(config: Config): Credentials {
  const file = join(config.DATA_DIR, 'credentials.json')
  const stored = existsSync(file) ? Stored.parse(JSON.parse(readFileSync(file, 'utf8'))) : {}
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
  if (generated.adminToken || generated.writeKey) {
    mkdirSync(config.DATA_DIR, { recursive: true })
    writeFileSync(file, `${JSON.stringify(stored, null, 2)}\n`, { mode: 0o600 })
  }
  return { adminToken, writeKeys, generated }
}

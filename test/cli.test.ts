import { execFile } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ADMIN_TOKEN, removeDir, startTestServer, type TestServer, tempDir } from './harness.js'

const BIN = fileURLToPath(new URL('../bin/signalbox.js', import.meta.url))

let sb: TestServer
let dir: string
beforeAll(async () => {
  sb = await startTestServer({ EVAL_INTERVAL_MS: '0', EVAL_ON_INGEST: 'false', RULES_DEFAULT_PACK: 'false' })
  dir = tempDir('signalbox-cli-')
})
afterAll(async () => {
  await sb.stop()
  removeDir(dir)
})

/** Run the installed command (bin/signalbox.js) against the test server, asynchronously: the server lives in this process. */
function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { cwd: dir, env: { PATH: process.env.PATH ?? '', SIGNALBOX_URL: sb.url, ADMIN_TOKEN, ...env }, timeout: 60_000 },
      (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    )
  })
}

const RULES = join('rules')
const pql = (value: number) => `# the PQL the sales team asked for
id: cli-pql
kind: pql
subject: account
description: busy free workspace
when:
  all:
    - { metric: count, event: Message Sent, window: 1d, op: gte, value: ${value} }
`
const pair = `id: cli-churn
kind: churn_risk
subject: account
when:
  all:
    - { metric: count, event: Message Sent, window: 7d, op: lt, value: 1 }
---
id: cli-expansion
kind: expansion
subject: account
enabled: false
when:
  all:
    - { metric: active_users, window: 7d, op: gte, value: 10 }
`

describe('signalbox rules', () => {
  it('apply creates the rules of a directory (YAML, multi-document YAML, JSON), then reports them unchanged', async () => {
    mkdirSync(join(dir, RULES), { recursive: true })
    writeFileSync(join(dir, RULES, 'a-pql.yaml'), pql(3))
    writeFileSync(join(dir, RULES, 'b-pair.yml'), pair)
    writeFileSync(
      join(dir, RULES, 'c-mql.json'),
      JSON.stringify({ id: 'cli-mql', kind: 'mql', subject: 'user', score: { items: [{ event: 'Demo Requested', points: 50 }] }, threshold: 50 }),
    )
    writeFileSync(join(dir, RULES, 'notes.txt'), 'not a rule')
    const first = await cli(['rules', 'apply', RULES])
    expect(first.stderr).toBe('')
    expect(first.code).toBe(0)
    expect(first.stdout.trim().split('\n')).toEqual(['cli-pql\tv1\tcreated', 'cli-churn\tv1\tcreated', 'cli-expansion\tv1\tcreated', 'cli-mql\tv1\tcreated'])
    const again = await cli(['rules', 'apply', RULES])
    expect(again.stdout.trim().split('\n')).toEqual(['cli-pql\tv1\tunchanged', 'cli-churn\tv1\tunchanged', 'cli-expansion\tv1\tunchanged', 'cli-mql\tv1\tunchanged'])

    // The YAML as written (its comment too) is what the server keeps.
    const stored = await sb.server.store.query<{ source: string }>("SELECT source FROM rules_v1 WHERE rule_id = 'cli-pql'")
    expect(stored[0]?.source).toContain('# the PQL the sales team asked for')
  })

  it('apply of a changed file makes a new version; a bad file fails with its path and problem', async () => {
    writeFileSync(join(dir, RULES, 'a-pql.yaml'), pql(5))
    const changed = await cli(['rules', 'apply', join(RULES, 'a-pql.yaml')])
    expect(changed.stdout.trim()).toBe('cli-pql\tv2\tupdated')
    writeFileSync(join(dir, 'bad.yaml'), 'id: cli-bad\nkind: pql\nsubject: account\nwhen:\n  all:\n    - { metric: count, window: 7d, op: gte, value: many }\n')
    const bad = await cli(['rules', 'apply', 'bad.yaml'])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain('bad.yaml: cli-bad:')
    expect(bad.stderr).toMatch(/when\.all\.0\.value: .*number/)
    expect((await sb.admin('/v1/rules/cli-bad')).status).toBe(404)
  })

  it('apply of a directory without rule files says so and fails (rules/ instead of rules/defaults/)', async () => {
    mkdirSync(join(dir, 'empty', 'defaults'), { recursive: true })
    const r = await cli(['rules', 'apply', 'empty'])
    expect(r).toEqual({ code: 1, stdout: '', stderr: 'no rule files found in empty (*.yaml, *.yml, *.json)\n' })
  })

  it('list prints the current rules', async () => {
    const { code, stdout } = await cli(['rules', 'list'])
    expect(code).toBe(0)
    expect(stdout.trim().split('\n')).toEqual([
      'cli-churn\tv1\tchurn_risk\taccount\tenabled\t',
      'cli-expansion\tv1\texpansion\taccount\tdisabled\t',
      'cli-mql\tv1\tmql\tuser\tenabled\t',
      'cli-pql\tv2\tpql\taccount\tenabled\tbusy free workspace',
    ])
    const asJson = JSON.parse((await cli(['rules', 'list', '--json'])).stdout) as { data: { id: string }[] }
    expect(asJson.data.map((r) => r.id)).toEqual(['cli-churn', 'cli-expansion', 'cli-mql', 'cli-pql'])
  })

  it('backtest prints what a rule would have fired, and when', async () => {
    const at = Date.now() - 3 * 3_600_000
    const batch = Array.from({ length: 5 }, (_, i) => ({
      type: 'track',
      userId: 'cli-user',
      event: 'Message Sent',
      messageId: `cli-m${i}`,
      timestamp: new Date(at + i * 1000).toISOString(),
      context: { groupId: 'cli-acc' },
    }))
    expect((await sb.post('/v1/batch', { batch })).status).toBe(200)
    const from = new Date(at - 3_600_000).toISOString()
    const to = new Date(at + 3_600_000 + 10_000).toISOString()
    const { code, stdout } = await cli(['rules', 'backtest', 'cli-pql', '--from', from, '--to', to, '--step', '1h'])
    expect(code).toBe(0)
    const lines = stdout.trim().split('\n')
    expect(lines).toEqual([`${new Date(at + 3_600_000).toISOString()}\tfired\tcli-acc`, '3 moments: 1 fired, 0 resolved, 1 open at the end'])
    const inline = await cli(['rules', 'backtest', 'cli-pql', '--from', from, '--to', to, '--step', '1h', '--file', join(RULES, 'b-pair.yml')])
    expect(inline.code).toBe(1) // the file's first rule is cli-churn, not cli-pql
    expect(inline.stderr).toMatch(/does not match the id in the path/)
  })

  it('fails clearly without the admin token or a server', async () => {
    const wrong = await cli(['rules', 'list'], { ADMIN_TOKEN: 'not-the-admin-token-at-all' })
    expect(wrong.code).toBe(1)
    expect(wrong.stderr).toContain('the token is not the admin token')
    const none = await cli(['rules', 'list', '--url', 'http://127.0.0.1:9'])
    expect(none.code).toBe(1)
    expect(none.stderr).toMatch(/cannot reach http:\/\/127\.0\.0\.1:9/)
  })
})

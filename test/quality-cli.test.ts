import { execFile } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ADMIN_TOKEN, removeDir, startTestServer, type TestServer, tempDir } from './harness.js'

const BIN = fileURLToPath(new URL('../bin/signalbox.js', import.meta.url))
const DAY = 86_400_000

let sb: TestServer
let dir: string
beforeAll(async () => {
  sb = await startTestServer({ EVAL_INTERVAL_MS: '0', EVAL_ON_INGEST: 'false', RULES_DEFAULT_PACK: 'false' })
  dir = tempDir('signalbox-quality-cli-')
})
afterAll(async () => {
  await sb.stop()
  removeDir(dir)
})

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { cwd: dir, env: { PATH: process.env.PATH ?? '', SIGNALBOX_URL: sb.url, ADMIN_TOKEN }, timeout: 60_000 },
      (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    )
  })
}

const rule = (value: number) => `id: cli-q
kind: pql
subject: account
outcome: cli-ordered
when:
  all:
    - { metric: count, event: Cli Sent, window: 7d, op: gte, value: ${value} }
`

describe('signalbox outcomes and rules quality', () => {
  it('applies outcomes, reports a rule\'s quality, and compares two thresholds of a backtest side by side', async () => {
    mkdirSync(join(dir, 'outcomes'))
    writeFileSync(join(dir, 'outcomes', 'ordered.yaml'), 'id: cli-ordered\nsubject: account\nreached: { event: Order Completed }\n')
    writeFileSync(join(dir, 'outcomes', 'bad.yaml'), 'id: cli-bad\nsubject: account\nreached: { stage: [] }\n')
    const applied = await cli(['outcomes', 'apply', 'outcomes'])
    expect(applied.code).toBe(1)
    expect(applied.stderr).toMatch(/cli-bad: invalid outcome: reached\.stage/)
    expect(applied.stdout).toBe('cli-ordered\tv1\tcreated\n')
    expect((await cli(['outcomes', 'list'])).stdout).toMatch(/^cli-ordered\tv1\taccount/m)

    // Two busy accounts order within days; two light ones never do.
    const t = Date.now() - 45 * DAY
    const batch: object[] = []
    for (const [acc, n] of [['busy-1', 6], ['busy-2', 6], ['light-1', 2], ['light-2', 2]] as const) {
      for (let i = 0; i < n; i++) batch.push({ type: 'track', userId: `${acc}-u`, event: 'Cli Sent', messageId: `${acc}-${i}`, timestamp: new Date(t + i * 1000).toISOString(), context: { groupId: acc } })
      if (acc.startsWith('busy')) batch.push({ type: 'track', userId: `${acc}-u`, event: 'Order Completed', messageId: `${acc}-o`, timestamp: new Date(t + 2 * DAY).toISOString(), context: { groupId: acc } })
    }
    expect((await sb.post('/v1/batch', { batch })).status).toBe(200)
    writeFileSync(join(dir, 'low.yaml'), rule(2))
    writeFileSync(join(dir, 'high.yaml'), rule(5))
    expect((await cli(['rules', 'apply', 'low.yaml'])).code).toBe(0)

    const from = new Date(t - DAY).toISOString()
    const to = new Date(t + 2 * DAY).toISOString()
    const cmp = await cli(['rules', 'backtest', 'cli-q', '--from', from, '--to', to, '--compare', 'high.yaml'])
    expect(cmp.stderr).toBe('')
    const row = (label: string) => cmp.stdout.split('\n').find((l) => l.startsWith(label))?.split(/\s{2,}/)
    expect(row('would fire')).toEqual(['would fire', '4', '2'])
    expect(row('precision')?.map((x) => x.split(' ')[0])).toEqual(['precision', '0.500', '1.000'])

    const q = await cli(['rules', 'quality', 'cli-q', '--from', from, '--to', to])
    expect(q.code).toBe(0)
    // Nothing fired for real (no evaluation ran): no precision, every eligible account counted as not fired.
    expect(q.stdout).toMatch(/^fired\s+0$/m)
    expect(q.stdout).toMatch(/^precision\s+–$/m)
    const json = JSON.parse((await cli(['rules', 'quality', 'cli-q', '--json'])).stdout) as { rule_id: string; outcome: string }
    expect(json).toMatchObject({ rule_id: 'cli-q', outcome: 'cli-ordered' })
  })
})

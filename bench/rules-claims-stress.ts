/**
 * `npx tsx bench/rules-claims-stress.ts`: a stress check of the batched claims' ownership rule
 * (rules/evaluator/claims.ts, `claim`): claimants insert overlapping batches of claim keys at once
 * (merges forced in between), then each reads back the first stored row per key. Every key
 * claimed must have exactly one claimant that believes it owns it. Prints the number of keys and
 * of violations (0 expected). Embedded engine in a scratch directory, removed afterwards.
 */
import { rmSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { ulid } from 'ulid'
import { loadConfig } from '../src/config.js'
import { migrate } from '../src/store/migrate.js'
import { openStore } from '../src/store/node.js'

const ROUNDS = Number(process.env.ROUNDS ?? 40)
const CLAIMANTS = 8
const dir = fileURLToPath(new URL('./.scratch/claims-stress/', import.meta.url))
rmSync(dir, { recursive: true, force: true })
const store = await openStore(loadConfig({ DATA_DIR: dir, LOG_LEVEL: 'silent' }))
// The same read as the evaluator's readClaims in batch mode.
const winners = `SELECT claim_key, argMin(owner, pos) AS owner
  FROM (SELECT claim_key, owner, (toUInt64(splitByChar('_', _part)[2]), _part_offset) AS pos
        FROM signal_claims_v1 WHERE claim_key IN {keys:Array(String)})
  GROUP BY claim_key`
try {
  await migrate(store)
  let keys = 0
  let violations = 0
  const run = ulid()
  for (let round = 0; round < ROUNDS; round++) {
    const all = Array.from({ length: 300 }, (_, i) => `stress|${run}|${round}|${i}`)
    const claimants = Array.from({ length: CLAIMANTS }, () => ({ owner: ulid(), keys: all.filter(() => Math.random() < 0.6).sort() }))
    const owned = await Promise.all(
      claimants.map(async (c, j) => {
        await new Promise((r) => setTimeout(r, Math.random() * 5))
        await store.insert(
          'signal_claims_v1',
          c.keys.map((k) => ({ claim_key: k, owner: c.owner, signal_id: 'x', signal: '{}', claimed_at: '2026-01-01 00:00:00' })),
        )
        if (j % 3 === 0) store.command('OPTIMIZE TABLE signal_claims_v1').catch(() => {})
        const rows = await store.query<{ claim_key: string; owner: string }>(winners, { keys: c.keys })
        return rows.filter((r) => r.owner === c.owner).map((r) => r.claim_key)
      }),
    )
    const count = new Map<string, number>()
    for (const k of owned.flat()) count.set(k, (count.get(k) ?? 0) + 1)
    for (const k of new Set(claimants.flatMap((c) => c.keys))) {
      keys++
      if (count.get(k) !== 1) violations++
    }
  }
  console.log(JSON.stringify({ rounds: ROUNDS, claimants: CLAIMANTS, keys, violations }))
  if (violations) process.exitCode = 1
} finally {
  await store.close()
  rmSync(dir, { recursive: true, force: true })
}

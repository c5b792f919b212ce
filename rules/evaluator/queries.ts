import { idChunks } from '../../src/store/ids.js'
import type { Store } from '../../src/store/store.js'

/** signal_claims_v1, as the claims of the evaluator (rules/evaluator/claims.ts) write and read it. */

/**
 * How fires and resolves are claimed: `batch` writes all the claims of one rule evaluation in one
 * insert and lets the first row per key win (insertion order, exact on a single-node MergeTree);
 * `per-key` inserts each claim alone under its key as deduplication token (Replicated tables in
 * cluster mode, where insertion order is not global).
 */
export type ClaimMode = 'batch' | 'per-key'

export type ClaimRow = { claim_key: string; owner: string; signal_id: string; signal: string; claimed_at: string }

/** One insert, deduplicated by `token`: a second insert with the same token stores nothing. */
export function insertClaims(store: Store, rows: ClaimRow[], token: string): Promise<void> {
  return store.insert('signal_claims_v1', rows, { insert_deduplication_token: token })
}

/**
 * The claim that owns each key. `batch`: the first row stored (lowest block number, then position
 * in the part; see `claim` in rules/evaluator/claims.ts); `per-key`: the only row.
 */
export async function readClaims(store: Store, keys: string[], mode: ClaimMode): Promise<Map<string, ClaimRow>> {
  const out = new Map<string, ClaimRow>()
  const sql =
    mode === 'batch'
      ? `SELECT claim_key, argMin(owner, pos) AS owner, argMin(signal_id, pos) AS signal_id, argMin(signal, pos) AS signal,
                argMin(claimed_at, pos) AS claimed_at
         FROM (SELECT claim_key, owner, signal_id, signal, claimed_at,
                      (toUInt64(splitByChar('_', _part)[2]), _part_offset) AS pos
               FROM signal_claims_v1 WHERE claim_key IN {keys:Array(String)})
         GROUP BY claim_key`
      : 'SELECT claim_key, owner, signal_id, signal, claimed_at FROM signal_claims_v1 WHERE claim_key IN {keys:Array(String)}'
  for (const part of idChunks(keys)) {
    const rows = await store.query<ClaimRow>(sql, { keys: part })
    for (const r of rows) if (!out.has(r.claim_key)) out.set(r.claim_key, r)
  }
  return out
}

import type { Logger } from 'pino'
import { ulid } from 'ulid'
import type { Signal, SignalEventType } from '../../src/signals.js'
import { signalStatuses } from '../../src/signals/queries.js'
import { sha256Hex } from '../../src/hash.js'
import type { Store } from '../../src/store/store.js'
import { chTime, msFromCh } from '../../src/time.js'
import { type ClaimMode, type ClaimRow, insertClaims, readClaims } from './queries.js'

export type { ClaimMode }

/** A fire or resolve an evaluation wants to record. */
export type Change = { type: SignalEventType; signal: Signal }
/** A change and the deterministic key it is claimed under (the same for every evaluator that sees the same history). */
export type Pending = { key: string; change: Change; owner?: string }

/**
 * A fire, claimed as the entry after the subject's previous signal of the rule (`previousId`, ''
 * for none): the same key for every evaluator that sees the same history.
 */
export const firing = (signal: Signal, previousId: string | undefined): Pending => ({
  key: `fire|${signal.rule_id}|${signal.subject.type}|${signal.subject.id}|${previousId ?? ''}`,
  change: { type: 'signal.fired', signal },
})

/**
 * The resolve of an open signal at `now`, claimed under the signal's id; with what was `measured`
 * as it resolved (why it cleared), which replaces what it fired with (the fired event keeps that).
 */
export const resolution = (open: Signal, now: number, measured?: Pick<Signal, 'score' | 'reasons'>): Pending => ({
  key: `resolve|${open.id}`,
  change: { type: 'signal.resolved', signal: { ...open, ...measured, status: 'resolved', resolved_at: new Date(now).toISOString() } },
})

/** A claim older than this whose signal was never recorded belongs to an owner that died. */
const ORPHAN_MS = 60_000
// Claims are one insert each (the deduplication token is per insert); a server takes them in parallel.
const CLAIM_CONCURRENCY = 16

/**
 * Claim each change under its key and return the changes this caller owns; the other claimants
 * of a key read the same owner back and stand down. A claim whose owner died before recording its
 * signal (older than ORPHAN_MS, signal not stored) is completed here.
 *
 * `per-key`: one insert per claim with the key as deduplication token: ClickHouse drops a second
 * block with the same token atomically, so a key has a single row.
 *
 * `batch`: one insert for all the claims of an evaluation (one owner per attempt). Two claimants
 * whose batches overlap both store a row for the shared keys; the owner of a key is the claimant
 * whose row was stored FIRST. On a single-node MergeTree, an insert takes its block number and
 * becomes visible in one step under the table's parts lock (the same step that makes the
 * deduplication token atomic), so readers always see a prefix of the blocks in block order, and
 * a merge keeps equal keys in block order (ties go to the older part). Whoever reads its own row
 * first for a key therefore owns it for good: any later row sorts after it, and its claimant sees
 * both and stands down. Identical batches (same keys) are deduplicated by a token of their keys.
 * Cost: one insert and one read per evaluation instead of one insert per fire.
 */
export async function claim(store: Store, pending: Pending[], now: number, mode: ClaimMode, log?: Logger): Promise<Change[]> {
  if (pending.length === 0) return []
  const keys = pending.map((p) => p.key)
  const existing = await readClaims(store, keys, mode)
  let fresh: Pending[]
  if (mode === 'batch') {
    const owner = ulid()
    fresh = pending.filter((p) => !existing.has(p.key)).map((p) => ({ ...p, owner }))
    fresh.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    if (fresh.length) {
      const token = `claims|${sha256Hex(fresh.map((p) => p.key).join('\n'))}`
      await insertClaims(store, fresh.map((p) => claimRow(p, now)), token)
    }
  } else {
    fresh = pending.filter((p) => !existing.has(p.key)).map((p) => ({ ...p, owner: ulid() }))
    for (let i = 0; i < fresh.length; i += CLAIM_CONCURRENCY) {
      await Promise.all(
        fresh.slice(i, i + CLAIM_CONCURRENCY).map((p) => insertClaims(store, [claimRow(p, now)], p.key)),
      )
    }
  }
  const owners = fresh.length ? await readClaims(store, fresh.map((p) => p.key), mode) : new Map<string, ClaimRow>()
  const mine = fresh.filter((p) => owners.get(p.key)?.owner === p.owner).map((p) => p.change)

  // Orphans: claimed long ago by someone who never recorded the signal.
  const stale = [...existing.values()].filter((c) => now - msFromCh(c.claimed_at) > ORPHAN_MS)
  if (stale.length) {
    const recorded = await signalStatuses(store, stale.map((c) => c.signal_id))
    for (const c of stale) {
      const change = JSON.parse(c.signal) as Change
      const wanted = change.type === 'signal.fired' ? 'open' : 'resolved'
      if (recorded.has(`${c.signal_id}|${wanted}`)) continue
      // A fired signal that was since resolved is recorded too; only a never-recorded one is adopted.
      if (change.type === 'signal.fired' && recorded.has(`${c.signal_id}|resolved`)) continue
      log?.warn({ claim: c.claim_key }, 'completing a signal claimed by an evaluator that stopped before recording it')
      mine.push(change)
    }
  }
  return mine
}

const claimRow = (p: Pending, now: number): ClaimRow => ({
  claim_key: p.key,
  owner: p.owner as string,
  signal_id: p.change.signal.id,
  signal: JSON.stringify(p.change),
  claimed_at: chTime(now),
})

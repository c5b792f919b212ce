import { parseRuleText } from '../../rules/store.js'
import { ApiError } from '../errors.js'
import type { Store } from '../store/store.js'
import { allVersions, anyVersionStored, appendVersion, latestOfAll, latestVersion, versionOf, type VersionedTable, writerFor } from '../store/versions.js'
import { type Outcome, OUTCOME_ID, parseOutcome } from './outcomes.js'

/** Versioned outcome storage (outcomes_v1), as rules are kept: a change is a version, a DELETE a tombstone. */

export type StoredOutcome = {
  id: string
  version: number
  deleted: boolean
  created_at: string
  /** The validated document (for a tombstone: the last document before the delete). */
  outcome: Outcome
}

type OutcomeRow = { outcome_id: string; version: number; deleted: number; document: string; write_id: string; created_ms: number }

const TABLE: VersionedTable = {
  table: 'outcomes_v1',
  idColumn: 'outcome_id',
  columns: 'outcome_id, version, deleted, document, write_id, toUnixTimestamp64Milli(created_at) AS created_ms',
  noun: 'outcome',
}

const conflict = (message: string) => new ApiError({ code: 'CONFLICT', message })

const toStored = (r: OutcomeRow): StoredOutcome => ({
  id: r.outcome_id,
  version: Number(r.version),
  deleted: Number(r.deleted) === 1,
  created_at: new Date(Number(r.created_ms)).toISOString(),
  // Stored documents were validated when written; re-parsing applies the current defaults.
  outcome: parseOutcome(JSON.parse(r.document)),
})

/** An id from a URL path, checked before it is used anywhere. */
export function checkOutcomeId(id: string): string {
  if (!OUTCOME_ID.test(id)) {
    const message = 'must be letters, digits, _ . - (at most 128), starting with a letter or digit'
    throw new ApiError({ code: 'BAD_REQUEST', message: `invalid outcome id: ${message}`, details: [{ path: 'id', message }] })
  }
  return id
}

export type PutOutcomeResult = { stored: StoredOutcome; status: 'created' | 'updated' | 'unchanged' }

/** Store a validated outcome as a new version, unless it is identical to the current one. */
export function putOutcome(store: Store, outcome: Outcome, source: string, now: number): Promise<PutOutcomeResult> {
  return writerFor(store, TABLE.table).run(async () => {
    const document = JSON.stringify(outcome)
    const current = await latestVersion<OutcomeRow>(store, TABLE, outcome.id)
    const live = current && Number(current.deleted) === 0
    if (live && current.document === document) return { stored: toStored(current), status: 'unchanged' }
    const row = await appendVersion<OutcomeRow>(store, TABLE, outcome.id, () => ({ deleted: 0, subject: outcome.subject, document, source }), now, conflict)
    return { stored: toStored(row), status: live ? 'updated' : 'created' }
  })
}

/** Append a tombstone version; undefined when the outcome does not exist (or is already deleted). */
export function deleteOutcome(store: Store, id: string, now: number): Promise<StoredOutcome | undefined> {
  return writerFor(store, TABLE.table).run(async () => {
    const current = await latestVersion<OutcomeRow>(store, TABLE, id)
    if (!current || Number(current.deleted) === 1) return undefined
    const subject = (JSON.parse(current.document) as Outcome).subject
    const row = await appendVersion<OutcomeRow>(store, TABLE, id, () => ({ deleted: 1, subject, document: current.document, source: '' }), now, conflict)
    return toStored(row)
  })
}

/** An outcome's latest version (possibly a tombstone), or a given version. */
export async function getOutcome(store: Store, id: string, version?: number): Promise<StoredOutcome | undefined> {
  const row = version === undefined ? await latestVersion<OutcomeRow>(store, TABLE, id) : await versionOf<OutcomeRow>(store, TABLE, id, version)
  return row && toStored(row)
}

export async function listOutcomes(store: Store): Promise<StoredOutcome[]> {
  return (await latestOfAll<OutcomeRow>(store, TABLE)).map(toStored)
}

export async function listOutcomeVersions(store: Store, id: string): Promise<{ version: number; deleted: boolean; created_at: string }[]> {
  return (await allVersions<OutcomeRow>(store, TABLE, id)).map((r) => {
    const s = toStored(r)
    return { version: s.version, deleted: s.deleted, created_at: s.created_at }
  })
}

/** The outcome documents of a directory (`*.yaml`, `*.yml`, `*.json`), in file-name order. */
export async function readOutcomeDir(dir: string): Promise<{ file: string; outcome: Outcome; source: string }[]> {
  const { readdirSync, readFileSync } = await import('node:fs')
  return readdirSync(dir)
    .filter((f) => /\.(ya?ml|json)$/i.test(f))
    .sort()
    .flatMap((file) => {
      const source = readFileSync(`${dir}/${file}`, 'utf8')
      return parseRuleText(source, /\.json$/i.test(file) ? 'application/json' : 'application/yaml').map((doc) => ({ file, outcome: parseOutcome(doc), source }))
    })
}

/** The default outcomes' directory (rules/defaults/outcomes/, beside the default rule pack). */
export async function defaultOutcomesDir(): Promise<string> {
  const { fileURLToPath } = await import('node:url')
  return fileURLToPath(new URL('../../rules/defaults/outcomes/', import.meta.url))
}

/**
 * Store the default outcomes on the first start, that is when no outcome was ever stored (a
 * deleted default stays deleted). Returns the ids stored.
 */
export async function applyDefaultOutcomes(store: Store, now: number, dir?: string): Promise<string[]> {
  if (await anyVersionStored(store, TABLE)) return []
  const entries = await readOutcomeDir(dir ?? (await defaultOutcomesDir()))
  const applied: string[] = []
  for (const { outcome, source } of entries) {
    const { status } = await putOutcome(store, outcome, source, now)
    if (status !== 'unchanged') applied.push(outcome.id)
  }
  return applied
}

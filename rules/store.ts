import { parseAllDocuments } from 'yaml'
import { z } from 'zod'
import { isoFromCh } from '../src/time.js'
import type { Store } from '../src/store/store.js'
import { allVersions, anyVersionStored, appendVersion, latestOfAll, latestVersion, SerialQueue, type VersionedTable, versionOf, writerFor } from '../src/store/versions.js'
import { RuleError, type RuleErrorDetail } from './errors.js'
import { parseRule, type Rule } from './schema.js'

/**
 * Versioned rule storage (src/store/versions.ts). Every change is a new row `(rule_id, version)`;
 * a DELETE is a tombstone version. Two writers (two instances, or a PUT racing the default pack)
 * never store two documents under one version.
 */

export type StoredRule = {
  id: string
  version: number
  deleted: boolean
  enabled: boolean
  created_at: string
  /** The validated document (for a tombstone: the last document before the delete). */
  rule: Rule
}

export type PutResult = { stored: StoredRule; status: 'created' | 'updated' | 'unchanged' }

type RuleRow = {
  rule_id: string
  version: number
  deleted: number
  enabled: number
  document: string
  write_id: string
  created_at: string
}

const TABLE: VersionedTable = {
  table: 'rules_v1',
  idColumn: 'rule_id',
  columns: 'rule_id, version, deleted, enabled, document, write_id, created_at',
  noun: 'rule',
}

function toStored(r: RuleRow): StoredRule {
  return {
    id: r.rule_id,
    version: Number(r.version),
    deleted: Number(r.deleted) === 1,
    enabled: Number(r.enabled) === 1,
    created_at: isoFromCh(r.created_at),
    // Stored documents were validated when written; re-parsing applies the current defaults.
    rule: parseRule(JSON.parse(r.document)),
  }
}

// The evaluator serialises its runs with the same queue.
export { SerialQueue }

const conflict = (message: string) => new RuleError('CONFLICT', message)
const latestRow = (store: Store, id: string) => latestVersion<RuleRow>(store, TABLE, id)
const appendRuleVersion = (store: Store, id: string, make: (version: number) => Record<string, unknown>, now: number) =>
  appendVersion<RuleRow>(store, TABLE, id, make, now, conflict)

/** Store a validated rule as a new version, unless it is identical to the current one. */
export function putRule(store: Store, rule: Rule, source: string, now: number): Promise<PutResult> {
  return writerFor(store, TABLE.table).run(async () => {
    const document = JSON.stringify(rule)
    const current = await latestRow(store, rule.id)
    if (current && Number(current.deleted) === 0 && current.document === document) {
      return { stored: toStored(current), status: 'unchanged' }
    }
    const row = await appendRuleVersion(
      store,
      rule.id,
      () => ({ deleted: 0, enabled: rule.enabled === false ? 0 : 1, document, source, kind: rule.kind, subject: rule.subject }),
      now,
    )
    return { stored: toStored(row), status: current && Number(current.deleted) === 0 ? 'updated' : 'created' }
  })
}

/** Append a tombstone version; undefined when the rule does not exist (or is already deleted). */
export function deleteRule(store: Store, id: string, now: number): Promise<StoredRule | undefined> {
  return writerFor(store, TABLE.table).run(async () => {
    const current = await latestRow(store, id)
    if (!current || Number(current.deleted) === 1) return undefined
    const rule = JSON.parse(current.document) as Rule
    const row = await appendRuleVersion(
      store,
      id,
      () => ({ deleted: 1, enabled: 0, document: current.document, source: '', kind: rule.kind, subject: rule.subject }),
      now,
    )
    return toStored(row)
  })
}

/** A rule's latest version (possibly a tombstone), or a given version. */
export async function getRule(store: Store, id: string, version?: number): Promise<StoredRule | undefined> {
  if (version === undefined) {
    const row = await latestRow(store, id)
    return row && toStored(row)
  }
  const row = await versionOf<RuleRow>(store, TABLE, id, version)
  return row && toStored(row)
}

/** The current version of every rule that is not deleted, by id. */
export async function listRules(store: Store): Promise<StoredRule[]> {
  return (await latestOfAll<RuleRow>(store, TABLE)).map(toStored)
}

export type RuleVersion = { version: number; deleted: boolean; enabled: boolean; created_at: string }

export async function listVersions(store: Store, id: string): Promise<RuleVersion[]> {
  return (await allVersions<RuleRow>(store, TABLE, id)).map((r) => ({
    version: Number(r.version),
    deleted: Number(r.deleted) === 1,
    enabled: Number(r.enabled) === 1,
    created_at: isoFromCh(r.created_at),
  }))
}

/** Whether any rule version (tombstones included) was ever stored. */
export async function anyRuleEverStored(store: Store): Promise<boolean> {
  return anyVersionStored(store, TABLE)
}

// ---------------------------------------------------------------------------------------------
// Reading and validating rule documents (API bodies, CLI files, the default pack)

const YAML_TYPES = /^(application|text)\/(x-)?yaml\b/i

/**
 * The documents in a body or file: YAML (one or more `---`-separated documents) or JSON (one
 * document, or an array of them). YAML is a superset of JSON, so a JSON body parses either way;
 * the content type only picks which error message reads better.
 */
export function parseRuleText(text: string, contentType = ''): unknown[] {
  const trimmed = text.trim()
  if (!trimmed) throw new RuleError('INVALID', 'the body is empty; expected a rule document (YAML or JSON)')
  if (!YAML_TYPES.test(contentType) && /^[[{]/.test(trimmed)) {
    try {
      const value: unknown = JSON.parse(trimmed)
      return Array.isArray(value) ? value : [value]
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err)
      throw new RuleError('INVALID', `the body is not valid JSON: ${message}`, [{ path: '(body)', message }])
    }
  }
  const docs = parseAllDocuments(trimmed)
  const list = Array.isArray(docs) ? docs : [docs]
  const details: RuleErrorDetail[] = []
  for (const doc of list) {
    for (const e of doc.errors) {
      const at = e.linePos?.[0]
      details.push({ path: at ? `(line ${at.line}, column ${at.col})` : '(body)', message: e.message.split('\n')[0] ?? e.message })
    }
  }
  if (details.length) throw new RuleError('INVALID', 'the body is not valid YAML', details)
  return list.map((d) => d.toJS() as unknown).filter((v) => v !== null && v !== undefined)
}

const IdParam = z
  .string()
  .min(1)
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, 'must be letters, digits, _ . - (at most 128), starting with a letter or digit')

/** An id from a URL path, checked before it is used anywhere. */
export function checkRuleId(id: string): string {
  const r = IdParam.safeParse(id)
  // The id is one string: every issue is about the whole of it.
  if (!r.success) throw new RuleError('INVALID', `invalid rule id: ${r.error.issues[0]?.message}`, r.error.issues.map((i) => ({ path: 'id', message: i.message })))
  return r.data
}

/**
 * Validate one document as a rule. `idFromPath` (PUT /v1/rules/:id) fills a missing `id` and must
 * equal a given one. Errors name the path in the document and the problem.
 */
export function validateRule(input: unknown, idFromPath?: string, prefix: (string | number)[] = []): Rule {
  let doc = input
  if (idFromPath !== undefined && doc !== null && typeof doc === 'object' && !Array.isArray(doc)) {
    const given = (doc as Record<string, unknown>).id
    if (given === undefined) doc = { ...(doc as object), id: idFromPath }
    else if (given !== idFromPath) {
      throw new RuleError('INVALID', `the body's id "${String(given)}" does not match the id in the path "${idFromPath}"`, [
        { path: [...prefix, 'id'].join('.'), message: `must equal "${idFromPath}" (the id in the path) or be omitted` },
      ])
    }
  }
  try {
    return parseRule(doc)
  } catch (err) {
    if (err instanceof RuleError && prefix.length) {
      const p = prefix.join('.')
      const details = err.details?.map((d) => ({ ...d, path: d.path === '(root)' ? p : `${p}.${d.path}` }))
      throw new RuleError(err.code, err.message.replace(/^invalid rule: /, `invalid rule: ${p}.`), details)
    }
    throw err
  }
}

// ---------------------------------------------------------------------------------------------
// The default pack

// node:fs is imported where files are read (Node: start, CLI), so the Workers bundle, which shares
// this module for the API, never needs it.

/** The default pack's directory (rules/defaults/ beside this file). */
export async function defaultsDir(): Promise<string> {
  const { fileURLToPath } = await import('node:url')
  return fileURLToPath(new URL('./defaults/', import.meta.url))
}

/** The rule documents of a directory (`*.yaml`, `*.yml`, `*.json`), in file-name order. */
export async function readRuleDir(dir: string): Promise<{ file: string; rule: Rule; source: string }[]> {
  const { readdirSync, readFileSync } = await import('node:fs')
  const files = readdirSync(dir)
    .filter((f) => /\.(ya?ml|json)$/i.test(f))
    .sort()
  return files.flatMap((file) => {
    const source = readFileSync(`${dir}/${file}`, 'utf8')
    const docs = parseRuleText(source, /\.json$/i.test(file) ? 'application/json' : 'application/yaml')
    return docs.map((doc, i) => ({ file, rule: validateRule(doc, undefined, docs.length > 1 ? [i] : []), source }))
  })
}

/**
 * Store the default pack on the first start, that is when no rule was ever stored (a deleted
 * default stays deleted). Returns the ids stored.
 */
export async function applyDefaultPack(store: Store, now: number, dir?: string): Promise<string[]> {
  if (await anyRuleEverStored(store)) return []
  let entries: Awaited<ReturnType<typeof readRuleDir>>
  try {
    entries = await readRuleDir(dir ?? (await defaultsDir()))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
  const applied: string[] = []
  for (const { rule, source } of entries) {
    const { status } = await putRule(store, rule, source, now)
    if (status !== 'unchanged') applied.push(rule.id)
  }
  return applied
}

export type RuleVersionSource = RuleVersion & { source: string; rule: Rule }

/** Every version of a rule with the text it was written as (for the workspace's history and diffs). */
export async function listVersionSources(store: Store, id: string): Promise<RuleVersionSource[]> {
  const rows = await allVersions<RuleRow & { source: string }>(store, { ...TABLE, columns: `${TABLE.columns}, source` }, id)
  return rows.map((r) => ({ ...toStored(r), version: Number(r.version), source: r.source }))
}

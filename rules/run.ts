import { z } from 'zod'
import { Reason } from '../src/signals.js'
import type { Store } from '../src/store/store.js'
import { type CompileOptions, compileRule } from './compile.js'
import { loadScope } from './scope.js'
import type { Rule } from './schema.js'

export type RuleMatch = { subjectId: string; matched: boolean; score: number | null; reasons: Reason[] }

/** A row of a compiled rule, checked where it crosses into the app. */
const Row = z.object({
  subject_id: z.string(),
  matched: z.coerce.number(),
  score: z.coerce.number().nullable(),
  reasons: z.string(),
})

/**
 * Evaluate one rule inside ClickHouse as of `opts.asOf` and return its subjects (see the contract
 * at the top of rules/compile.ts: with `subjectIds`, one entry per requested subject; otherwise the
 * matched subjects only). With `subjectIds` and no `scope`, the scope is loaded first (one more
 * query; an evaluation loads it once per subject type instead).
 */
export async function runRule(store: Store, rule: Rule, opts: CompileOptions): Promise<RuleMatch[]> {
  if (opts.subjectIds && opts.subjectIds.length === 0) return []
  const scope = opts.subjectIds && !opts.scope ? await loadScope(store, rule.subject, opts.subjectIds, opts.asOf) : opts.scope
  const { sql, params } = compileRule(rule, { ...opts, scope })
  const rows = await store.query(sql, params)
  return rows.map((raw) => {
    const r = Row.parse(raw)
    return {
      subjectId: r.subject_id,
      matched: r.matched === 1,
      score: r.score,
      reasons: z.array(Reason).parse(JSON.parse(r.reasons)),
    }
  })
}

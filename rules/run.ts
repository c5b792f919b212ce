import { z } from 'zod'
import { Reason } from '../src/signals.js'
import type { Store } from '../src/store/store.js'
import { type CompileOptions, compileRules, type ReasonTemplate } from './compile.js'
import { type EdgeRow, edgeRowsQuery } from './compile/state.js'
import { loadScope } from './scope.js'
import type { Rule } from './schema.js'

/** Past this many edge rows a state query finds them itself rather than having them bound (parameters travel in a URL to a server). */
const MAX_BOUND_EDGE_ROWS = 2_000

export type RuleMatch = { subjectId: string; matched: boolean; score: number | null; reasons: Reason[] }

/** One rule's columns in a compiled row (rules/compile.ts): `matched`, or `matched0` for the first of several. */
const Columns = z.object({
  matched: z.coerce.number(),
  score: z.coerce.number().nullable(),
  figures: z.string(),
})
const Figures = z.array(z.unknown())
const SubjectId = z.string()

/** A rule's reasons: its templates filled with a row's figures (measured, passed, detail values, in turn). */
function fillReasons(templates: ReasonTemplate[], figures: unknown[]): Reason[] {
  let at = 0
  const next = () => figures[at++]
  return templates.map(({ detail, ...head }) => {
    const reason: Record<string, unknown> = { ...head, measured: next(), passed: next() }
    if (detail.length) reason.detail = Object.fromEntries(detail.map((key) => [key, next()]))
    return Reason.parse(reason)
  })
}

/**
 * Evaluate one rule inside ClickHouse as of `opts.asOf` and return its subjects (see the contract
 * at the top of rules/compile.ts: with `subjectIds`, one entry per requested subject; otherwise the
 * matched subjects only). With `subjectIds` and no `scope`, the scope is loaded first (one more
 * query; an evaluation loads it once per subject type instead).
 */
export async function runRule(store: Store, rule: Rule, opts: CompileOptions): Promise<RuleMatch[]> {
  return (await runRules(store, [rule], opts))[0] as RuleMatch[]
}

/**
 * Several rules of one subject type and the same sources (`fusable`) in one query: each rule's
 * subjects, in the order of `rules`, as `runRule` would return them.
 */
export async function runRules(store: Store, rules: Rule[], opts: CompileOptions): Promise<RuleMatch[][]> {
  const first = rules[0]
  if (!first || (opts.subjectIds && opts.subjectIds.length === 0)) return rules.map(() => [])
  // The state backend reads the subjects' own rows: it needs no scope.
  const scope = opts.subjectIds && !opts.scope && opts.backend !== 'state' ? await loadScope(store, first.subject, opts.subjectIds, opts.asOf) : opts.scope
  // The state backend first finds the rows a window edge cuts through: bound, they spare the
  // query a second read of the state and let it skip events_v1 when there are none.
  let edges = opts.edges
  if (opts.backend === 'state' && edges === undefined) {
    const q = edgeRowsQuery(rules, opts)
    const found = q ? await store.query<EdgeRow>(q.sql, q.params) : []
    edges = found.length <= MAX_BOUND_EDGE_ROWS ? { rows: found } : 'inline'
  }
  const { sql, params, reasons } = compileRules(rules, { ...opts, scope, edges })
  const rows = await store.query<Record<string, unknown>>(sql, params)
  return rules.map((_, k) => {
    const s = rules.length === 1 ? '' : String(k)
    const out: RuleMatch[] = []
    for (const raw of rows) {
      const r = Columns.parse({ matched: raw[`matched${s}`], score: raw[`score${s}`], figures: raw[`figures${s}`] })
      // A full run returns the subjects matching any of the rules; each rule keeps its own.
      if (!opts.subjectIds && r.matched !== 1) continue
      const figures = Figures.parse(JSON.parse(r.figures))
      // Built when read: the evaluator reads the reasons of the subjects that fire, a few of the
      // thousands a full run matches again and again.
      let built: Reason[] | undefined
      out.push({
        subjectId: SubjectId.parse(raw.subject_id),
        matched: r.matched === 1,
        score: r.score,
        get reasons() {
          built ??= fillReasons(reasons[k] ?? [], figures)
          return built
        },
      })
    }
    return out
  })
}

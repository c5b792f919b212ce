import { z } from 'zod'
import { ApiError } from '../errors.js'
import { type SignalKind, SubjectType } from '../signals.js'
import { parseDuration, PropertyFilter, type Rule, ValueOp } from '../../rules/schema.js'

/**
 * Outcomes (SPEC "Outcomes and signal quality"): what counts as success for a subject, written as
 * a document like a rule. A subject reaches an outcome when it enters a stage, sends an event
 * (with property filters), or a trait changes into a value; `any` of several. The quality report
 * asks, of the subjects a rule fired for, how many reached the rule's outcome within its horizon.
 */

/** Event, stage and trait names: any text (bound as query parameters, never spliced into SQL). */
const Name = z.string().min(1, 'must not be empty').max(256)
const Names = z.union([Name, z.array(Name).min(1, 'must list at least one name').max(100)])
const Scalar = z.union([z.string().max(1024), z.number(), z.boolean()])

export const OUTCOME_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/
const OutcomeId = z.string().regex(OUTCOME_ID, 'must be letters, digits, _ . - (at most 128), starting with a letter or digit')

/** The subject enters one of these lifecycle stages (a row of stage_transitions_v1). */
export const StageReached = z.strictObject({ stage: Names }).meta({ description: 'The subject enters this stage (or one of these)' })

/** The subject sends one of these events (track / page / screen), matching every filter. */
export const EventReached = z
  .strictObject({ event: Names, where: z.array(PropertyFilter).max(50).optional() })
  .meta({ description: 'The subject sends this event (with property filters)' })

/** Trait change operators beyond the filter operators: the new value is above (below) the one before. */
export const CHANGE_OPS = ['rises', 'falls'] as const
const TraitOp = z.union([ValueOp, z.enum(CHANGE_OPS)])

/**
 * The trait changes into a value passing `op value` (it did not pass before: `plan neq free` is
 * reached when the plan stops being free), or, with `rises` / `falls`, to a higher (lower) value
 * than before: numbers compare as numbers, or by their place in `order`.
 */
export const TraitReached = z
  .strictObject({
    trait: Name,
    op: TraitOp,
    value: z.union([Scalar, z.array(Scalar).min(1).max(1000)]).optional(),
    /** With rises / falls: the values from lowest to highest (plans), instead of numbers. */
    order: z.array(z.string().max(1024)).min(2).max(100).optional(),
  })
  .superRefine((t, ctx) => {
    const change = (CHANGE_OPS as readonly string[]).includes(t.op)
    if (change && t.value !== undefined) ctx.addIssue({ code: 'custom', path: ['value'], message: `${t.op} compares with the value before; it takes no value` })
    if (!change && t.order !== undefined) ctx.addIssue({ code: 'custom', path: ['order'], message: 'order goes with rises or falls' })
    if (change) return
    // The filter operators take the values they take in a rule's trait filter.
    const v = t.value
    const bad = (message: string) => ctx.addIssue({ code: 'custom', path: ['value'], message })
    if (t.op === 'exists') {
      if (v !== undefined && typeof v !== 'boolean') bad('exists takes true, false or no value')
    } else if (t.op === 'in') {
      if (!Array.isArray(v)) bad('in takes a list of values')
    } else if (['gt', 'gte', 'lt', 'lte'].includes(t.op)) {
      if (typeof v !== 'number') bad(`${t.op} takes a number`)
    } else if (t.op === 'contains') {
      if (typeof v !== 'string' && !(Array.isArray(v) && v.every((x) => typeof x === 'string'))) bad('contains takes a string (or a list of strings)')
    } else if (v === undefined || Array.isArray(v)) bad(`${t.op} takes one value`)
  })
  .meta({ description: 'A trait of the subject changes into a value (or rises / falls)' })

export type StageReached = z.infer<typeof StageReached>
export type EventReached = z.infer<typeof EventReached>
export type TraitReached = z.infer<typeof TraitReached>
export type Criterion = StageReached | EventReached | TraitReached

const Criterion = z.union([StageReached, EventReached, TraitReached])
export const Reached = z.union([Criterion, z.strictObject({ any: z.array(Criterion).min(1, 'must list at least one way to reach it').max(50) })])
export type Reached = z.infer<typeof Reached>

export const OutcomeDocument = z
  .strictObject({
    id: OutcomeId,
    /** Whose outcome it is; a rule of the other subject type reaches it through memberships. */
    subject: SubjectType,
    description: z.string().max(4000).optional(),
    reached: Reached,
  })
  .meta({ title: 'signalbox outcome', description: 'What counts as success for a subject, for the quality of the rules that name it' })
export type Outcome = z.infer<typeof OutcomeDocument>

/** The ways an outcome is reached, as a flat list. */
export const criteriaOf = (o: Outcome): Criterion[] => ('any' in o.reached ? o.reached.any : [o.reached])

/** The published JSON Schema of an outcome document (GET /v1/outcomes/schema). */
export function outcomeJsonSchema(): object {
  return z.toJSONSchema(OutcomeDocument, { io: 'input', unrepresentable: 'any' })
}

/** The outcome a rule is judged against when it names none (SPEC, issue 14). */
export const DEFAULT_OUTCOME: Record<SignalKind, string | null> = {
  pql: 'converted',
  mql: 'converted',
  churn_risk: 'churned',
  expansion: 'expanded',
  custom: null,
}

/** How long after a fire the outcome may come, when the rule gives no horizon. */
export const DEFAULT_HORIZON: Record<SignalKind, string> = {
  pql: '30d',
  mql: '30d',
  churn_risk: '60d',
  expansion: '60d',
  custom: '30d',
}

/** The outcome id and horizon a rule is measured against: its own, else its kind's default. */
export function ruleTarget(rule: Rule): { outcome: string | null; horizon: string; horizon_ms: number } {
  const horizon = rule.horizon ?? DEFAULT_HORIZON[rule.kind]
  return { outcome: rule.outcome ?? DEFAULT_OUTCOME[rule.kind], horizon, horizon_ms: parseDuration(horizon) }
}

type Detail = { path: string; message: string }
const BRANCHES: [string, z.ZodType][] = [
  ['any', z.strictObject({ any: z.array(Criterion).min(1).max(50) })],
  ['stage', StageReached],
  ['event', EventReached],
  ['trait', TraitReached],
]

/**
 * zod reports a value that fits no branch of a union as one issue holding every branch's; a
 * person wants the problems of the branch they meant, the one whose key (stage, event, trait,
 * any) the value has.
 */
function explain(issues: z.core.$ZodIssue[], input: unknown, prefix: PropertyKey[]): Detail[] {
  return issues.flatMap((issue) => {
    const path = [...prefix, ...issue.path]
    if (issue.code === 'invalid_union') {
      let node: unknown = input
      for (const k of path) node = node && typeof node === 'object' ? (node as Record<PropertyKey, unknown>)[k] : undefined
      const branch = node && typeof node === 'object' && !Array.isArray(node) ? BRANCHES.find(([key]) => key in node) : undefined
      if (branch) {
        const r = branch[1].safeParse(node)
        if (!r.success) return explain(r.error.issues, input, path)
      }
      return [{ path: path.map(String).join('.') || '(root)', message: 'must have one of the keys stage, event, trait, any' }]
    }
    return [{ path: path.map(String).join('.') || '(root)', message: issue.message }]
  })
}

/** Validate an outcome document; errors name each problem's path (`reached.any.1.op`). */
export function parseOutcome(input: unknown): Outcome {
  const r = OutcomeDocument.safeParse(input)
  if (r.success) return r.data
  const details = explain(r.error.issues, input, [])
  throw new ApiError({ code: 'BAD_REQUEST', message: `invalid outcome: ${details[0]?.path}: ${details[0]?.message}`, details })
}

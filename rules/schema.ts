import { z } from 'zod'
import { SignalKind, SubjectType } from '../src/signals.js'
import { RuleError, type RuleErrorDetail } from './errors.js'

/**
 * The rule document (SPEC "Rules and signals"): what a RevOps person writes in YAML or JSON and
 * what the compiler (rules/compile.ts) turns into one ClickHouse query. Objects are strict, so a
 * typo (`treshold`, `windw`) is an error naming the key rather than a silently ignored setting.
 */

const UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 } as const
const DURATION_RE = /^(\d+)(ms|s|m|h|d|w)$/

/** `'30d'`, `'12h'`, `'15m'`, `'90s'`, `'2w'`, `'500ms'` → milliseconds. */
export function parseDuration(s: string): number {
  const ms = durationMs(s)
  if (Number.isNaN(ms)) throw new RuleError('INVALID', `"${s}" is not a duration (e.g. 30d, 12h, 15m)`)
  return ms
}

/** Milliseconds, or NaN when `s` is not a duration. */
const durationMs = (s: string) => {
  const m = DURATION_RE.exec(s.trim())
  return m ? Number(m[1]) * UNITS[m[2] as keyof typeof UNITS] : Number.NaN
}

export const Duration = z
  .string()
  .regex(DURATION_RE, 'must be a duration: a whole number and a unit (ms, s, m, h, d, w), e.g. 30d')
  .refine((s) => !(durationMs(s) <= 0), 'must be longer than zero')
  .refine((s) => !(durationMs(s) > 3650 * UNITS.d), 'must be at most 3650d')
  .meta({ description: 'A duration: a whole number and a unit (ms, s, m, h, d, w), e.g. 30d, 12h' })

/** Event, property and trait names: any text (bound as query parameters, never spliced into SQL). */
const Name = z.string().min(1, 'must not be empty').max(256)
const Scalar = z.union([z.string().max(1024), z.number(), z.boolean()])

export const VALUE_OPS = ['eq', 'neq', 'gt', 'gte', 'lt', 'lte', 'in', 'contains', 'exists'] as const
export const ValueOp = z.enum(VALUE_OPS)
export type ValueOp = z.infer<typeof ValueOp>

const filterValue = z.union([Scalar, z.array(Scalar).min(1, 'must list at least one value').max(1000)]).optional()

/** The value each operator takes: a number to compare, a list for `in`, a boolean (or nothing) for `exists`. */
function checkOpValue(f: { op: ValueOp; value?: unknown }, ctx: z.RefinementCtx) {
  const v = f.value
  const bad = (message: string) => ctx.addIssue({ code: 'custom', path: ['value'], message })
  switch (f.op) {
    case 'exists':
      if (v !== undefined && typeof v !== 'boolean') bad('exists takes true, false or no value')
      break
    case 'in':
      if (!Array.isArray(v)) bad('in takes a list of values')
      break
    case 'gt':
    case 'gte':
    case 'lt':
    case 'lte':
      if (typeof v !== 'number') bad(`${f.op} takes a number`)
      break
    case 'contains':
      if (typeof v !== 'string' && !(Array.isArray(v) && v.every((x) => typeof x === 'string'))) {
        bad('contains takes a string (or a list of strings: contains any of them)')
      }
      break
    default:
      if (v === undefined || Array.isArray(v)) bad(`${f.op} takes one value`)
  }
}

/** A condition on an event property: `{ property: path, op: eq, value: /pricing }`. */
export const PropertyFilter = z
  .strictObject({ property: Name, op: ValueOp, value: filterValue })
  .superRefine(checkOpValue)
  .meta({ description: 'A filter on a top-level property of the event (its JSON value)' })
export type PropertyFilter = z.infer<typeof PropertyFilter>

/** A condition on the subject's current trait value: `{ trait: plan, op: eq, value: free }`. */
export const TraitFilter = z
  .strictObject({ trait: Name, op: ValueOp, value: filterValue })
  .superRefine(checkOpValue)
  .meta({ description: "A filter on the subject's latest value of a trait (identify / group traits)" })
export type TraitFilter = z.infer<typeof TraitFilter>

export const COMPARE_OPS = ['gt', 'gte', 'lt', 'lte', 'eq', 'neq', 'drop_pct_gte', 'rise_pct_gte'] as const
const CompareOp = z.enum(COMPARE_OPS)

const Baseline = z
  .strictObject({
    window: Duration,
    /** How far back the baseline window ends; defaults to the condition's own window. */
    offset: Duration.optional(),
  })
  .meta({ description: 'The earlier window to compare with, normalised per day' })

const eventSelector = {
  /** One event name or several; absent = every activity event (track, page, screen). */
  event: z.union([Name, z.array(Name).min(1).max(100)]).optional(),
  where: z.array(PropertyFilter).max(50).optional(),
}
const comparison = {
  op: CompareOp,
  value: z.number(),
  baseline: Baseline.optional(),
  /** With a baseline: the baseline (per day) must be at least this, or the condition does not hold. */
  min_baseline: z.number().min(0).optional(),
}

const CountMetric = z.strictObject({ metric: z.literal('count'), ...eventSelector, window: Duration, ...comparison })
const ActiveUsersMetric = z.strictObject({ metric: z.literal('active_users'), ...eventSelector, window: Duration, ...comparison })
const ActiveDaysMetric = z.strictObject({ metric: z.literal('active_days'), ...eventSelector, window: Duration, ...comparison })
const numericMetric = <M extends 'sum' | 'avg' | 'max' | 'min'>(m: M) =>
  z.strictObject({ metric: z.literal(m), property: Name, ...eventSelector, window: Duration, ...comparison })
const DaysSinceLastSeenMetric = z.strictObject({
  metric: z.literal('days_since_last_seen'),
  ...eventSelector,
  /** How far back to look for the last activity (default 365d); none found reads as this many days. */
  window: Duration.optional(),
  ...comparison,
})
const SeatUsageMetric = z.strictObject({
  metric: z.literal('seat_usage'),
  /** Account trait holding the number of seats bought (default `seats`). */
  seats_trait: Name.optional(),
  /** Account trait holding the seats in use; absent = distinct active users over `window`. */
  used_trait: Name.optional(),
  ...eventSelector,
  window: Duration.optional(),
  ...comparison,
})
const ChampionQuietMetric = z.strictObject({
  metric: z.literal('champion_quiet'),
  /** `top`: the account's most active user over `window`; or the account's users with this trait. */
  champion: z.union([z.literal('top'), TraitFilter]).default('top'),
  ...eventSelector,
  /** Where the champion is looked for and their last activity searched (default 90d). */
  window: Duration.optional(),
  ...comparison,
})

export const METRICS = [
  'count',
  'active_users',
  'active_days',
  'sum',
  'avg',
  'max',
  'min',
  'days_since_last_seen',
  'seat_usage',
  'champion_quiet',
] as const
export type MetricName = (typeof METRICS)[number]

export const MetricCondition = z
  .discriminatedUnion('metric', [
    CountMetric,
    ActiveUsersMetric,
    ActiveDaysMetric,
    numericMetric('sum'),
    numericMetric('avg'),
    numericMetric('max'),
    numericMetric('min'),
    DaysSinceLastSeenMetric,
    SeatUsageMetric,
    ChampionQuietMetric,
  ])
  .superRefine((c, ctx) => {
    const pct = c.op === 'drop_pct_gte' || c.op === 'rise_pct_gte'
    if (pct && !c.baseline) ctx.addIssue({ code: 'custom', path: ['baseline'], message: `${c.op} needs a baseline: {window, offset}` })
    if (!pct && c.baseline) ctx.addIssue({ code: 'custom', path: ['op'], message: 'a baseline is compared with drop_pct_gte or rise_pct_gte' })
    if (!pct && c.min_baseline !== undefined) ctx.addIssue({ code: 'custom', path: ['min_baseline'], message: 'min_baseline goes with a baseline' })
    if (pct && ['days_since_last_seen', 'seat_usage', 'champion_quiet'].includes(c.metric)) {
      ctx.addIssue({ code: 'custom', path: ['baseline'], message: `${c.metric} cannot be compared with a baseline` })
    }
    if (c.metric === 'champion_quiet' && c.champion !== 'top' && c.event) {
      ctx.addIssue({ code: 'custom', path: ['event'], message: 'event narrows the choice of the top user; a trait champion takes none' })
    }
  })
  .meta({ description: 'A measured metric of the subject compared with a threshold (or with a baseline window)' })
export type MetricCondition = z.infer<typeof MetricCondition>

export type ConditionGroup = { all: Condition[] } | { any: Condition[] }
export type Condition = MetricCondition | TraitFilter | ConditionGroup

const AllGroup: z.ZodType<{ all: Condition[] }> = z.strictObject({
  get all() {
    return z.array(Condition).min(1, 'must list at least one condition').max(100)
  },
})
const AnyGroup: z.ZodType<{ any: Condition[] }> = z.strictObject({
  get any() {
    return z.array(Condition).min(1, 'must list at least one condition').max(100)
  },
})
export const ConditionGroup: z.ZodType<ConditionGroup> = z.union([AllGroup, AnyGroup])
export const Condition: z.ZodType<Condition> = z.union([MetricCondition, TraitFilter, AllGroup, AnyGroup])

const EventItem = z.strictObject({
  ...eventSelector,
  event: eventSelector.event.unwrap(),
  /** Points per matching event (before decay). */
  points: z.number(),
  /** Cap on the points this item gives, after decay. */
  max: z.number().min(0).optional(),
})
const TraitItem = z
  .strictObject({ trait: Name, op: ValueOp, value: filterValue, points: z.number() })
  .superRefine(checkOpValue)
const ConditionItem = z.strictObject({
  /** Points when this condition holds (e.g. repeated visits: active_days of Page Viewed ≥ 3). */
  get when() {
    return Condition
  },
  points: z.number(),
})
export const ScoreItem = z.union([EventItem, TraitItem, ConditionItem])
export type ScoreItem = z.infer<typeof ScoreItem>

export const Score = z.strictObject({
  /** Points of an event halve every half_life; absent = no decay. */
  half_life: Duration.optional(),
  /** How far back event items look (default 90d). */
  window: Duration.optional(),
  items: z.array(ScoreItem).min(1, 'must list at least one item').max(100),
})

export const RuleDocument = z
  .strictObject({
    id: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, 'must be letters, digits, _ . - (at most 128), starting with a letter or digit'),
    kind: SignalKind,
    subject: SubjectType,
    description: z.string().max(4000).optional(),
    /** Only events from these sources (write-key source names) count. */
    sources: z.array(Name).min(1).max(100).optional(),
    /** Filters on the subject's latest traits; a subject failing one is not matched. */
    where: z.array(TraitFilter).max(50).optional(),
    when: ConditionGroup.optional(),
    score: Score.optional(),
    /** With `score`: the rule matches when the score is at least this. */
    threshold: z.number().optional(),
    /** A subject fires this rule at most once per cooldown. */
    cooldown: Duration.optional(),
    /** The outcome (an outcome document's id) the quality report judges this rule by; default by kind. */
    outcome: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, 'must be an outcome id: letters, digits, _ . - (at most 128)')
      .optional(),
    /** How long after a fire the outcome may come and still count (default 30d for pql / mql, 60d otherwise). */
    horizon: Duration.optional(),
    enabled: z.boolean().default(true),
  })
  .superRefine((r, ctx) => {
    if (!r.when && !r.score) ctx.addIssue({ code: 'custom', path: ['when'], message: 'a rule needs either when (conditions) or score' })
    if (r.when && r.score) ctx.addIssue({ code: 'custom', path: ['score'], message: 'a rule has either when or score, not both' })
    if (r.score && r.threshold === undefined) ctx.addIssue({ code: 'custom', path: ['threshold'], message: 'a score rule needs a threshold' })
    if (r.when && r.threshold !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['threshold'], message: 'threshold goes with score; conditions carry their own value' })
    }
    if (r.subject === 'user') {
      const walk = (c: Condition, path: (string | number)[]) => {
        if ('all' in c) c.all.forEach((x, i) => walk(x, [...path, 'all', i]))
        else if ('any' in c) c.any.forEach((x, i) => walk(x, [...path, 'any', i]))
        else if ('metric' in c && (c.metric === 'seat_usage' || c.metric === 'champion_quiet')) {
          ctx.addIssue({ code: 'custom', path: [...path, 'metric'], message: `${c.metric} applies to account rules` })
        }
      }
      if (r.when) walk(r.when, ['when'])
      r.score?.items.forEach((it, i) => 'when' in it && walk(it.when, ['score', 'items', i, 'when']))
    }
  })
  .meta({ title: 'signalbox rule', description: 'A rule that turns events and traits into signals' })

export type Rule = z.infer<typeof RuleDocument>

/** The published JSON Schema of a rule document (GET /v1/rules/schema). */
export function ruleJsonSchema(): object {
  return z.toJSONSchema(RuleDocument, { io: 'input', unrepresentable: 'any' })
}

/**
 * Validate a rule document. Throws a RuleError (INVALID) whose details name each problem's path
 * (`when.all.1.window`) and what is wrong with it.
 */
export function parseRule(input: unknown): Rule {
  const r = RuleDocument.safeParse(input)
  if (r.success) return r.data
  const details = explain(r.error.issues, input, [])
  const first = details[0]
  throw new RuleError('INVALID', first ? `invalid rule: ${first.path}: ${first.message}` : 'invalid rule', details)
}

type Issue = z.core.$ZodIssue
const SHAPE_KEYS = ['metric', 'trait', 'all', 'any', 'event', 'when']

function at(input: unknown, path: PropertyKey[]): unknown {
  let cur = input
  for (const k of path) cur = cur && typeof cur === 'object' ? (cur as Record<PropertyKey, unknown>)[k] : undefined
  return cur
}

/**
 * zod reports a value that fits no branch of a union as one "invalid input" with every branch's
 * issues. A person wants the issues of the branch they meant: the one whose identifying key
 * (metric, trait, all, any, event, when) the value carries.
 */
function explain(issues: Issue[], input: unknown, prefix: PropertyKey[]): RuleErrorDetail[] {
  const out: RuleErrorDetail[] = []
  for (const issue of issues) {
    const path = [...prefix, ...issue.path]
    if (issue.code === 'invalid_union' && issue.errors.length > 0) {
      const node = at(input, path)
      const has = (k: string) => !!node && typeof node === 'object' && !Array.isArray(node) && k in node
      // A branch that complains about its identifying key while the value lacks that key is not
      // the branch the author meant.
      const missingShapeKey = (branch: Issue[]) =>
        branch.some((i) => i.path.length === 1 && SHAPE_KEYS.includes(String(i.path[0])) && !has(String(i.path[0])))
      const ranked = issue.errors
        .map((branch) => ({ branch, cost: branch.length + (missingShapeKey(branch) ? 100 : 0) }))
        .sort((a, b) => a.cost - b.cost)
      const best = ranked[0]
      if (best && best.cost < 100) {
        out.push(...explain(best.branch, input, path))
        continue
      }
      const isObject = !!node && typeof node === 'object' && !Array.isArray(node)
      const expected = issue.errors
        .flatMap((b) => b.filter((i) => i.path.length === 1 && SHAPE_KEYS.includes(String(i.path[0]))).map((i) => String(i.path[0])))
        .filter((k, i, a) => a.indexOf(k) === i)
      out.push({
        path: path.map(String).join('.') || '(root)',
        message:
          isObject && expected.length > 0
            ? `must have one of the keys ${expected.join(', ')}`
            : 'is not one of the allowed values (a string, number, boolean or list)',
      })
      continue
    }
    out.push({ path: path.map(String).join('.') || '(root)', message: issue.message })
  }
  return out
}

import { EventEmitter } from 'node:events'
import { monotonicFactory } from 'ulid'
import { z } from 'zod'
import { chTime, isoFromCh } from './time.js'
import type { Store } from './store/store.js'

/**
 * The signal contract shared by the rules layer (which fires and resolves signals), delivery
 * (webhooks, the live stream) and the SDK (whose types are inferred from these schemas).
 */
export const SIGNAL_KINDS = ['pql', 'mql', 'churn_risk', 'expansion', 'custom'] as const
export const SignalKind = z.enum(SIGNAL_KINDS)
export type SignalKind = z.infer<typeof SignalKind>

export const SubjectType = z.enum(['account', 'user'])
export type SubjectType = z.infer<typeof SubjectType>

/** Why a signal fired: one entry per condition (or score item), with what was measured. */
export const Reason = z.object({
  /** Human-readable condition, e.g. `count(Message Sent, 30d) >= 2000`. */
  condition: z.string(),
  metric: z.string(),
  measured: z.union([z.number(), z.string(), z.boolean(), z.null()]),
  op: z.string(),
  threshold: z.union([z.number(), z.string(), z.boolean(), z.array(z.union([z.string(), z.number()])), z.null()]),
  passed: z.boolean(),
  /** Extra figures, e.g. the baseline of a drop, or points per score item. */
  detail: z.record(z.string(), z.unknown()).optional(),
})
export type Reason = z.infer<typeof Reason>

/** `sig_` + a ULID. */
export const SIGNAL_ID = /^sig_[0-9A-HJKMNP-TV-Z]{26}$/

export const Signal = z.object({
  id: z.string().regex(SIGNAL_ID),
  rule_id: z.string(),
  rule_version: z.number().int(),
  kind: SignalKind,
  subject: z.object({ type: SubjectType, id: z.string() }),
  status: z.enum(['open', 'resolved']),
  fired_at: z.iso.datetime(),
  resolved_at: z.iso.datetime().nullable(),
  score: z.number().nullable(),
  reasons: z.array(Reason),
})
export type Signal = z.infer<typeof Signal>

export const SignalEventType = z.enum(['signal.fired', 'signal.resolved'])
export type SignalEventType = z.infer<typeof SignalEventType>

/** One entry of the signal log; `id` (`evt_` + monotonic ULID) orders the log. */
export const SignalEvent = z.object({
  id: z.string().regex(/^evt_[0-9A-HJKMNP-TV-Z]{26}$/),
  type: SignalEventType,
  timestamp: z.iso.datetime(),
  data: Signal,
})
export type SignalEvent = z.infer<typeof SignalEvent>

/** In-process notification that new signal events are in the log (wakes the stream and outbox). */
export class SignalBus extends EventEmitter<{ events: [SignalEvent[]] }> {}

const nextUlid = monotonicFactory()
export const newSignalId = () => `sig_${nextUlid()}`
const newEventId = () => `evt_${nextUlid()}`

const iso = (ms: number) => new Date(ms).toISOString()

/**
 * Store signal state changes and append them to the signal log, then notify the bus. Signals are
 * written before the log, so a log entry never points at a signal that is not stored.
 */
export async function recordSignalEvents(
  store: Store,
  bus: SignalBus | undefined,
  changes: { type: SignalEventType; signal: Signal }[],
  now: number = Date.now(),
): Promise<SignalEvent[]> {
  if (changes.length === 0) return []
  const events: SignalEvent[] = changes.map(({ type, signal }) => ({ id: newEventId(), type, timestamp: iso(now), data: signal }))
  await store.insert('signals_v1', changes.map(({ signal }) => ({ ...signalToRow(signal), version: now })))
  await store.insert(
    'signal_events_v1',
    events.map((e) => ({
      event_id: e.id,
      type: e.type,
      signal_id: e.data.id,
      rule_id: e.data.rule_id,
      kind: e.data.kind,
      subject_type: e.data.subject.type,
      subject_id: e.data.subject.id,
      at: chTime(now),
      signal: JSON.stringify(e.data),
    })),
  )
  bus?.emit('events', events)
  return events
}

/**
 * A signals_v1 row as written and read (its `version` aside): the one list of its columns, which
 * every query of signals selects (src/signals/queries.ts).
 */
export type SignalRow = {
  id: string
  rule_id: string
  rule_version: number
  kind: string
  subject_type: string
  subject_id: string
  status: string
  fired_at: string
  resolved_at: string | null
  score: number | null
  reasons: string
}

export const SIGNAL_COLUMNS = [
  'id',
  'rule_id',
  'rule_version',
  'kind',
  'subject_type',
  'subject_id',
  'status',
  'fired_at',
  'resolved_at',
  'score',
  'reasons',
] as const satisfies readonly (keyof SignalRow)[]

export function signalToRow(signal: Signal): SignalRow {
  return {
    id: signal.id,
    rule_id: signal.rule_id,
    rule_version: signal.rule_version,
    kind: signal.kind,
    subject_type: signal.subject.type,
    subject_id: signal.subject.id,
    status: signal.status,
    fired_at: chTime(Date.parse(signal.fired_at)),
    resolved_at: signal.resolved_at ? chTime(Date.parse(signal.resolved_at)) : null,
    score: signal.score,
    reasons: JSON.stringify(signal.reasons),
  }
}

/** A row as stored → the API shape. */
export function signalFromRow(r: SignalRow): Signal {
  return Signal.parse({
    id: r.id,
    rule_id: r.rule_id,
    rule_version: Number(r.rule_version),
    kind: r.kind,
    subject: { type: r.subject_type, id: r.subject_id },
    status: r.status,
    fired_at: isoFromCh(r.fired_at),
    resolved_at: r.resolved_at ? isoFromCh(r.resolved_at) : null,
    score: r.score === null ? null : Number(r.score),
    reasons: JSON.parse(r.reasons),
  })
}

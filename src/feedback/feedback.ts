import { monotonicFactory } from 'ulid'
import { z } from 'zod'
import { chTime } from '../time.js'
import { ApiError } from '../errors.js'
import { Signal, SIGNAL_ID } from '../signals.js'
import type { Store } from '../store/store.js'
import { getSignal } from '../signals/queries.js'
import { type FeedbackRow, insertFeedback, selectFeedback } from './queries.js'

export const VERDICTS = ['useful', 'not_useful'] as const
export const Verdict = z.enum(VERDICTS)
export type Verdict = z.infer<typeof Verdict>

/** A person's verdict on one signal, as stored and returned. */
export const Feedback = z.object({
  id: z.string().regex(/^fb_[0-9A-HJKMNP-TV-Z]{26}$/),
  signal_id: z.string().regex(SIGNAL_ID),
  verdict: Verdict,
  reason: z.string().nullable(),
  by: z.string().nullable(),
  created_at: z.iso.datetime(),
})
export type Feedback = z.infer<typeof Feedback>

/** The body of `POST /v1/signals/:id/feedback`. */
export const FeedbackRequest = z.strictObject({
  verdict: Verdict,
  reason: z.string().max(1000).optional(),
  by: z.string().max(200).optional(),
})
export type FeedbackRequest = z.infer<typeof FeedbackRequest>

export type FeedbackInput = FeedbackRequest & { signal_id: string }

const nextUlid = monotonicFactory()

/**
 * Store a verdict on a signal. A signal that is not stored is a NOT_FOUND error, so feedback
 * never points at nothing. An empty reason or author is stored as absent.
 */
export async function recordFeedback(store: Store, input: FeedbackInput, now: number): Promise<Feedback> {
  const { signal_id, verdict } = input
  if (!SIGNAL_ID.test(signal_id) || !(await getSignal(store, signal_id))) {
    throw new ApiError({ code: 'NOT_FOUND', message: `no signal ${signal_id}` })
  }
  const feedback: Feedback = {
    id: `fb_${nextUlid(now)}`,
    signal_id,
    verdict: Verdict.parse(verdict),
    reason: input.reason || null,
    by: input.by || null,
    created_at: new Date(now).toISOString(),
  }
  await insertFeedback(store, {
    id: feedback.id,
    signal_id,
    verdict: feedback.verdict,
    reason: feedback.reason ?? '',
    by: feedback.by ?? '',
    created_at: chTime(now),
  })
  return feedback
}

const fromRow = (r: FeedbackRow): Feedback =>
  Feedback.parse({
    id: r.id,
    signal_id: r.signal_id,
    verdict: r.verdict,
    reason: r.reason || null,
    by: r.by || null,
    created_at: new Date(Number(r.created_ms)).toISOString(),
  })

/** The feedback on each of these signals, oldest first; a signal without any maps to `[]`. */
export async function feedbackOf(store: Store, signalIds: string[]): Promise<Map<string, Feedback[]>> {
  const out = new Map<string, Feedback[]>(signalIds.map((id) => [id, []]))
  for (const row of await selectFeedback(store, [...new Set(signalIds)])) out.get(row.signal_id)?.push(fromRow(row))
  return out
}

/** A signal as the query API returns it: with the feedback people gave on it. */
export const SignalWithFeedback = Signal.extend({ feedback: z.array(Feedback) })
export type SignalWithFeedback = z.infer<typeof SignalWithFeedback>

/** Attach each signal's feedback (one query for all of them). */
export async function withFeedback(store: Store, signals: readonly Signal[]): Promise<SignalWithFeedback[]> {
  const feedback = await feedbackOf(store, signals.map((s) => s.id))
  return signals.map((s) => ({ ...s, feedback: feedback.get(s.id) ?? [] }))
}

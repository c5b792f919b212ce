import { z } from '@hono/zod-openapi'
import { ApiError, zodDetails } from '../errors.js'
import { Feedback, FeedbackRequest, recordFeedback, SignalWithFeedback, withFeedback } from '../feedback/feedback.js'
import type { AppDeps } from '../env.js'
import { SIGNAL_ID, SignalKind, SubjectType } from '../signals.js'
import { getSignal, querySignals } from '../signals/queries.js'
import { IsoTime, parseJsonBody } from './rules.js'
import { adminRoutes, documentedBody, ok, router } from './router.js'

const list = <T extends z.ZodType<unknown, string>>(item: T) =>
  z
    .string()
    .transform((s) => s.split(',').map((x) => x.trim()).filter(Boolean))
    .pipe(z.array(item).min(1))

/** GET /v1/signals query: filters combine with AND; a comma-separated kind/status is any of them. */
export const SignalQuery = z.strictObject({
  kind: list(SignalKind).optional(),
  rule_id: z.string().min(1).optional(),
  subject_type: SubjectType.optional(),
  subject_id: z.string().min(1).optional(),
  status: list(z.enum(['open', 'resolved'])).optional(),
  /** fired_at ≥ from */
  from: IsoTime.optional(),
  /** fired_at < to */
  to: IsoTime.optional(),
  /** The cursor: the `next` of the previous page (signals come in id order, oldest first). */
  after: z.string().regex(SIGNAL_ID, 'must be a signal id (sig_…), the `next` of the previous page').optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
})
export type SignalQuery = z.output<typeof SignalQuery>

export const SignalPageWithFeedback = z.object({ data: z.array(SignalWithFeedback), next: z.string().nullable() })
export type SignalPageWithFeedback = z.infer<typeof SignalPageWithFeedback>

const SignalParams = z.object({ id: z.string() })

/** Signals as stored (admin). The live stream (/v1/signals/stream) is delivery's. */
export function signalsRoutes(deps: AppDeps) {
  const app = router()
  const route = adminRoutes(deps.adminToken)
  const now = deps.now ?? Date.now

  const list = route({
    method: 'get',
    path: '/signals',
    summary: 'Signals, paged with a cursor (`after`), filtered by kind, rule, subject, status, time',
    request: { query: SignalQuery },
    responses: { 200: ok(SignalPageWithFeedback) },
  })
  app.openapi(list, async (c) => {
    const page = await querySignals(deps.store, c.req.valid('query'))
    return c.json({ ...page, data: await withFeedback(deps.store, page.data) } satisfies SignalPageWithFeedback, 200)
  })

  // /v1/signals/stream is the stream route's: it is registered first (src/app.ts) and answers
  // before this one; a malformed id (sig_nope) is a signal that does not exist, not a missing route.
  const one = route({
    method: 'get',
    path: '/signals/{id}',
    summary: 'One signal, with the feedback people gave on it',
    request: { params: SignalParams },
    responses: { 200: ok(SignalWithFeedback) },
  })
  app.openapi(one, async (c) => {
    const signal = await getSignal(deps.store, c.req.param('id'))
    if (!signal) throw new ApiError({ code: 'NOT_FOUND', message: `no signal ${c.req.param('id')}` })
    const [withIt] = await withFeedback(deps.store, [signal])
    return c.json(withIt as SignalWithFeedback, 200)
  })

  // A person's verdict (accepted as useful, dismissed with a reason); the quality report counts it.
  const feedbackRoute = route({
    method: 'post',
    path: '/signals/{id}/feedback',
    summary: 'Record a verdict on a signal: useful | not_useful, with a reason',
    request: { params: SignalParams, body: documentedBody(FeedbackRequest) },
    responses: { 201: ok(Feedback, 'Recorded') },
  })
  app.openapi(feedbackRoute, async (c) => {
    // A malformed id is a signal that does not exist (404 from recordFeedback), as on GET.
    const id = c.req.param('id')
    const parsed = FeedbackRequest.safeParse(parseJsonBody(await c.req.text()))
    if (!parsed.success) {
      const details = zodDetails(parsed.error)
      throw new ApiError({ code: 'BAD_REQUEST', message: `invalid feedback: ${details[0]?.path}: ${details[0]?.message}`, details })
    }
    const feedback = await recordFeedback(deps.store, { ...parsed.data, signal_id: id }, now())
    return c.json(feedback, 201)
  })

  return app
}

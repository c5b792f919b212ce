import type { Child, FC } from 'hono/jsx'
import type { Feedback } from '../feedback/feedback.js'
import type { Reason, Signal, SubjectType } from '../signals.js'
import { CsrfField } from './layout.js'
import type { Label } from './queries.js'
import { reasonText } from './reasons.js'
import type { Session } from './session.js'

export const KIND_LABEL: Record<string, string> = { pql: 'PQL', mql: 'MQL', churn_risk: 'Churn risk', expansion: 'Expansion', custom: 'Custom' }

export const KindBadge: FC<{ kind: string }> = ({ kind }) => <span class={`badge kind-${kind}`}>{KIND_LABEL[kind] ?? kind}</span>

const ACRONYMS = new Set(['mql', 'pql', 'sql'])
export const stageLabel = (stage: string) => (ACRONYMS.has(stage) ? stage.toUpperCase() : (stage.charAt(0).toUpperCase() + stage.slice(1)).replace(/_/g, ' '))

export const StageBadge: FC<{ stage: string }> = ({ stage }) => <span class={`stage stage-${stage}`}>{stageLabel(stage)}</span>

const rtf = new Intl.RelativeTimeFormat('en', { numeric: 'auto' })
const STEPS: [number, Intl.RelativeTimeFormatUnit][] = [
  [60, 'second'],
  [60, 'minute'],
  [24, 'hour'],
  [30, 'day'],
  [12, 'month'],
  [Number.POSITIVE_INFINITY, 'year'],
]

/** "3 minutes ago", with the exact UTC time on hover and in the markup. */
export function relative(iso: string, now: number): string {
  let v = (Date.parse(iso) - now) / 1000
  for (const [size, unit] of STEPS) {
    if (Math.abs(v) < size) return rtf.format(Math.round(v), unit)
    v /= size
  }
  return iso
}

export const Time: FC<{ iso: string | null; now: number }> = ({ iso, now }) =>
  iso ? (
    <time datetime={iso} title={iso.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}>
      {relative(iso, now)}
    </time>
  ) : (
    <span class="muted">never</span>
  )

export const subjectHref = (type: SubjectType, id: string) => `/${type}s/${encodeURIComponent(id)}`

/** Who a subject is, for people: an account's name (or domain), a user's email (or name), then the id. */
export const SubjectName: FC<{ type: SubjectType; id: string; label?: Label; link?: boolean }> = ({ type, id, label, link = true }) => {
  const main = type === 'account' ? (label?.name ?? label?.domain) : (label?.email ?? label?.name)
  const second = type === 'account' ? (label?.name && label?.domain ? label.domain : undefined) : label?.email && label?.name ? label.name : undefined
  const text = (
    <>
      <span class="who-main">{main ?? id}</span>
      {second ? <span class="who-second">{second}</span> : main ? <span class="who-second mono">{id}</span> : null}
    </>
  )
  return link ? (
    <a class="subject" href={subjectHref(type, id)}>
      {text}
    </a>
  ) : (
    <span class="subject">{text}</span>
  )
}

export const Reasons: FC<{ reasons: Reason[] }> = ({ reasons }) => (
  <ul class="reasons">
    {reasons.map((r) => (
      <li class={r.passed ? 'passed' : 'failed'} title={r.condition}>
        {reasonText(r)}
      </li>
    ))}
  </ul>
)

export const DISMISS_REASONS = [
  ['not_a_fit', 'Not a fit'],
  ['bad_timing', 'Bad timing'],
  ['already_customer', 'Already a customer'],
  ['wrong_signal', 'Wrong signal'],
] as const
const DISMISS_LABEL: Record<string, string> = Object.fromEntries(DISMISS_REASONS)

export const FeedbackLine: FC<{ feedback: Feedback[]; now: number }> = ({ feedback, now }) => {
  const last = feedback.at(-1)
  if (!last) return null
  const what = last.verdict === 'useful' ? 'Accepted' : `Dismissed${last.reason ? `: ${DISMISS_LABEL[last.reason] ?? last.reason}` : ''}`
  return (
    <p class={`feedback ${last.verdict}`}>
      {what}
      {last.by ? ` by ${last.by}` : ''} · <Time iso={last.created_at} now={now} />
    </p>
  )
}

/** Accept / dismiss: only for an admin session, on an open signal nobody has judged yet. */
export const SignalActions: FC<{ signal: Signal; feedback: Feedback[]; session: Session; back: string }> = ({ signal, feedback, session, back }) => {
  if (session.role !== 'admin' || signal.status !== 'open' || feedback.length > 0) return null
  const dismissId = `dismiss-${signal.id}`
  return (
    <div class="signal-actions">
      <form method="post" action={`/signals/${signal.id}/accept`}>
        <CsrfField session={session} />
        <input type="hidden" name="back" value={back} />
        <button type="submit" class="primary">
          Accept
        </button>
      </form>
      <form method="post" action={`/signals/${signal.id}/dismiss`} class="dismiss">
        <CsrfField session={session} />
        <input type="hidden" name="back" value={back} />
        <label for={dismissId} class="sr-only">
          Dismiss reason
        </label>
        <select id={dismissId} name="reason" required>
          {DISMISS_REASONS.map(([value, label]) => (
            <option value={value}>{label}</option>
          ))}
        </select>
        <button type="submit">Dismiss</button>
      </form>
    </div>
  )
}

export type SignalView = { signal: Signal; feedback: Feedback[]; label?: Label; stage?: string }

/** One signal as the inbox and the subject pages show it. */
export const SignalItem: FC<{ view: SignalView; session: Session; now: number; back: string; showSubject?: boolean }> = ({
  view,
  session,
  now,
  back,
  showSubject = true,
}) => {
  const { signal, feedback, label, stage } = view
  return (
    <li class={`signal status-${signal.status}`} id={signal.id} data-signal-id={signal.id}>
      <div class="signal-head">
        <KindBadge kind={signal.kind} />
        {showSubject ? <SubjectName type={signal.subject.type} id={signal.subject.id} label={label} /> : null}
        {stage ? <StageBadge stage={stage} /> : null}
        <span class="spacer" />
        <a class="rule-link" href={`/rules/${encodeURIComponent(signal.rule_id)}`}>
          {signal.rule_id}
        </a>
        <Time iso={signal.fired_at} now={now} />
      </div>
      <Reasons reasons={signal.reasons} />
      <div class="signal-foot">
        {signal.status === 'resolved' ? (
          <p class="muted small">
            Resolved <Time iso={signal.resolved_at} now={now} />
          </p>
        ) : null}
        <FeedbackLine feedback={feedback} now={now} />
        <SignalActions signal={signal} feedback={feedback} session={session} back={back} />
      </div>
    </li>
  )
}

export const Empty: FC<{ children: Child }> = ({ children }) => <p class="empty">{children}</p>

/**
 * A chart: drawn by the page script with uPlot from `data-chart` (the same numbers are in the
 * table inside, which is what shows before the script runs or without it).
 */
export const Chart: FC<{ id: string; title: string; spec: ChartSpec; children?: Child }> = ({ id, title, spec, children }) => (
  <figure class="chart" id={id} data-chart={JSON.stringify(spec)} aria-label={title}>
    <figcaption class={spec.type === 'spark' ? 'sr-only' : undefined}>{title}</figcaption>
    <div class="chart-canvas" />
    {children}
  </figure>
)

export type ChartSpec = {
  type: 'line' | 'bars' | 'spark'
  /** Days as YYYY-MM-DD (UTC). */
  x: string[]
  series: { label: string; values: number[]; axis?: 'left' | 'right' }[]
  /** Shaded spans of days, e.g. a churn rule's baseline window. */
  bands?: { from: string; to: string; label: string }[]
}

export const Pager: FC<{ prev?: string | null; next?: string | null }> = ({ prev, next }) =>
  prev || next ? (
    <nav class="pager" aria-label="Pages">
      {prev ? <a href={prev}>← Newer</a> : <span />}
      {next ? <a href={next}>Older →</a> : <span />}
    </nav>
  ) : null

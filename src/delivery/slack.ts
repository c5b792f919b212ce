import type { Reason, Signal, SignalKind } from '../signals.js'
import type { WebhookPayload } from './payload.js'

const LABEL: Record<SignalKind, string> = {
  pql: 'PQL',
  mql: 'MQL',
  churn_risk: 'Churn risk',
  expansion: 'Expansion',
  custom: 'Signal',
}
const EMOJI: Record<SignalKind, string> = {
  pql: ':rocket:',
  mql: ':mega:',
  churn_risk: ':warning:',
  expansion: ':chart_with_upwards_trend:',
  custom: ':bell:',
}
/** Slack's limit for the text of one section block. */
const SECTION_MAX = 3000
const MAX_REASONS = 12

/** Slack mrkdwn treats these three as control characters. */
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

function value(v: Reason['measured'] | Reason['threshold']): string {
  if (v === null) return 'none'
  if (Array.isArray(v)) return v.join(', ')
  if (typeof v === 'number') return Number.isInteger(v) ? v.toLocaleString('en-US') : v.toFixed(2)
  return String(v)
}

function reasonLine(r: Reason): string {
  return `${r.passed ? '✅' : '▫️'} \`${esc(r.condition)}\`: measured *${esc(value(r.measured))}* (${esc(r.op)} ${esc(value(r.threshold))})`
}

/** Where a person looks at the subject: the account or user API page of this service. */
export function subjectLink(publicUrl: string | undefined, signal: Signal): string | undefined {
  if (!publicUrl) return undefined
  const path = signal.subject.type === 'account' ? 'accounts' : 'users'
  return `${publicUrl.replace(/\/+$/, '')}/v1/${path}/${encodeURIComponent(signal.subject.id)}`
}

/**
 * A signal event as a Slack message (incoming-webhook body): who, which rule, why (each reason
 * with what was measured against its threshold), and a link to the subject. `text` is the
 * notification fallback; `blocks` is what people read.
 */
export function slackMessage(event: WebhookPayload, publicUrl?: string) {
  const s = event.data
  const fired = event.type === 'signal.fired'
  const who = `${s.subject.type} *${esc(s.subject.id)}*`
  const headline = fired
    ? `${EMOJI[s.kind]} *${LABEL[s.kind]}* fired for ${who}`
    : `:white_check_mark: *${LABEL[s.kind]}* resolved for ${who}`
  const rule = `Rule \`${esc(s.rule_id)}\` (v${s.rule_version})${s.score === null ? '' : ` · score *${value(s.score)}*`}`
  const shown = s.reasons.slice(0, MAX_REASONS).map(reasonLine)
  if (s.reasons.length > MAX_REASONS) shown.push(`…and ${s.reasons.length - MAX_REASONS} more`)
  let why = shown.length ? `*Why*\n${shown.join('\n')}` : '*Why*\nno conditions recorded'
  if (why.length > SECTION_MAX) why = `${why.slice(0, SECTION_MAX - 1)}…`
  const link = subjectLink(publicUrl, s)
  const when = fired ? `fired ${s.fired_at}` : `resolved ${s.resolved_at ?? event.timestamp} (fired ${s.fired_at})`
  const context = [`${when} · signal ${s.id}`, ...(link ? [`<${link}|Open ${s.subject.type} ${esc(s.subject.id)}>`] : [])]
  const plainWho = `${s.subject.type} ${s.subject.id}`
  return {
    text: `${LABEL[s.kind]} ${fired ? 'fired' : 'resolved'} for ${plainWho} (rule ${s.rule_id})`,
    blocks: [
      { type: 'section', text: { type: 'mrkdwn', text: `${headline}\n${rule}` } },
      { type: 'section', text: { type: 'mrkdwn', text: why } },
      { type: 'context', elements: context.map((text) => ({ type: 'mrkdwn', text })) },
    ],
  }
}

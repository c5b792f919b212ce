import type { Reason } from '../signals.js'

/**
 * A signal's reasons in plain words for people ("2,340 Message Sent in 30 days, threshold 2,000").
 * The rules layer names each condition in a compact notation (`count(Message Sent, 30d) >= 2000`);
 * this reads that notation back. A condition it does not recognise is shown as written, with the
 * measured value, so nothing is hidden.
 */

const nf = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 })
const pf = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0, style: 'percent' })

export function formatNumber(v: unknown): string {
  if (typeof v === 'number') return nf.format(v)
  if (typeof v === 'string' && v !== '' && !Number.isNaN(Number(v))) return nf.format(Number(v))
  if (v === null || v === undefined) return '—'
  if (Array.isArray(v)) return v.map(formatNumber).join(', ')
  return String(v)
}

const UNITS: Record<string, [string, string]> = { ms: ['millisecond', 'milliseconds'], s: ['second', 'seconds'], m: ['minute', 'minutes'], h: ['hour', 'hours'], d: ['day', 'days'], w: ['week', 'weeks'] }

/** `30d` → `30 days`. */
export function durationWords(w: string): string {
  const m = /^(\d+)(ms|s|m|h|d|w)$/.exec(w.trim())
  if (!m) return w
  const n = Number(m[1])
  const [one, many] = UNITS[m[2] as string] as [string, string]
  return `${n} ${n === 1 ? one : many}`
}

const OP_WORDS: Record<string, string> = { gte: '', gt: 'above ', lte: 'at most ', lt: 'below ', eq: '', neq: 'not ', drop_pct_gte: '', rise_pct_gte: '' }

function threshold(r: Reason, unit = ''): string {
  return `threshold ${OP_WORDS[r.op] ?? `${r.op} `}${formatNumber(r.threshold)}${unit}`
}

const CALL = /^(\w+)\((?:(.*), )?(\d+(?:ms|s|m|h|d|w))\)/

export function reasonText(r: Reason): string {
  const d = r.detail ?? {}
  const call = CALL.exec(r.condition)
  const selector = call?.[2]
  const window = call?.[3] ? durationWords(call[3]) : undefined
  switch (r.metric === 'score' || r.metric === 'points' || r.metric === 'trait' ? r.metric : r.op) {
    case 'drop_pct_gte':
    case 'rise_pct_gte': {
      const base = /against the (\S+) before/.exec(r.condition)?.[1]
      const what = r.metric === 'active_users' ? 'daily active users' : r.metric === 'count' ? `${selector ?? 'events'} per day` : `${r.metric.replace(/_/g, ' ')} per day`
      const dir = r.op === 'drop_pct_gte' ? 'down' : 'up'
      const figures =
        d.current_per_day !== undefined
          ? ` (${formatNumber(d.current_per_day)} a day in the last ${window ?? 'window'} against ${formatNumber(d.baseline_per_day)} in the ${base ? durationWords(base) : 'baseline'} before)`
          : ''
      return `${what} ${dir} ${formatNumber(r.measured)}%${figures}, ${threshold(r, '%')}`
    }
    case 'score':
      return `score ${formatNumber(r.measured)}, ${threshold(r)}`
    case 'points':
      return `${formatNumber(r.measured)} points ${r.condition
        .replace(/^[\d.]+ points (per )?/, (_m, per) => (per ? 'from ' : ''))
        .replace(/, halving every \w+$/, '')}`
    case 'trait': {
      const m = /^trait (\S+) (\w+)/.exec(r.condition)
      const name = m?.[1] ?? 'trait'
      const verb = { eq: 'is', neq: 'is not', contains: 'contains', in: 'is one of', exists: 'is set' }[m?.[2] ?? ''] ?? m?.[2] ?? ''
      const measured = r.measured === null || r.measured === 'null' ? 'not set' : formatNumber(r.measured)
      return r.passed ? `${name} is ${measured}` : `${name} is ${measured} (wanted ${verb} ${formatNumber(r.threshold)})`
    }
  }
  switch (r.metric) {
    case 'count':
      return `${formatNumber(r.measured)} ${selector || 'events'} in ${window ?? 'the window'}, ${threshold(r)}`
    case 'active_users':
      return `${formatNumber(r.measured)} active users${selector ? ` of ${selector}` : ''} in ${window ?? 'the window'}, ${threshold(r)}`
    case 'active_days':
      return `active on ${formatNumber(r.measured)} days${selector ? ` (${selector})` : ''} in ${window ?? 'the window'}, ${threshold(r)}`
    case 'sum':
    case 'avg':
    case 'max':
    case 'min': {
      const label = { sum: 'total', avg: 'average', max: 'highest', min: 'lowest' }[r.metric]
      return `${label} ${selector ?? ''}: ${formatNumber(r.measured)} in ${window ?? 'the window'}, ${threshold(r)}`.replace(/ {2,}/g, ' ')
    }
    case 'days_since_last_seen':
      return `last seen ${formatNumber(r.measured)} days ago, ${threshold(r, ' days')}`
    case 'seat_usage': {
      const used = d.seats_used !== undefined && d.seats !== undefined ? `${formatNumber(d.seats_used)} of ${formatNumber(d.seats)} seats used` : 'seats used'
      const share = typeof r.measured === 'number' ? ` (${pf.format(r.measured)})` : ''
      return `${used}${share}, threshold ${typeof r.threshold === 'number' ? pf.format(r.threshold) : formatNumber(r.threshold)}`
    }
    case 'champion_quiet': {
      const who = typeof d.champion === 'string' && d.champion ? `champion ${d.champion}` : 'the champion'
      return `${who} quiet for ${formatNumber(r.measured)} days, ${threshold(r, ' days')}`
    }
  }
  return `${r.condition}: measured ${formatNumber(r.measured)}`
}

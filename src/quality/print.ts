import type { QualityReport } from './quality.js'

type Column = { name: string; quality: QualityReport | null; fires?: number; note?: string }

const num = (x: number | null, digits = 3) => (x === null ? '–' : x.toFixed(digits))
const ci = (i: { low: number; high: number } | null) => (i ? ` [${i.low.toFixed(3)}–${i.high.toFixed(3)}]` : '')
const hours = (s: number | null) => (s === null ? '–' : s >= 172_800 ? `${(s / 86_400).toFixed(1)}d` : `${(s / 3600).toFixed(1)}h`)

/** The figures of one or more quality reports as aligned columns, one row per figure, for the CLI. */
export function formatQuality(columns: Column[]): string {
  const rows: [string, (q: QualityReport, c: Column) => string][] = [
    ['outcome', (q) => q.outcome],
    ['horizon', (q) => q.horizon],
    ['period', (q) => `${q.from.slice(0, 10)} … ${q.to.slice(0, 10)}`],
    ['eligible', (q) => String(q.eligible)],
    ['fired', (q) => String(q.fired)],
    ['pending', (q) => `${q.pending} fired, ${q.counts.not_fired.pending} not fired`],
    ['reached', (q) => `${q.fired_reached} of ${q.counts.fired.decided} fired, ${q.counts.not_fired.reached} of ${q.counts.not_fired.decided} not`],
    ['precision', (q) => `${num(q.precision)}${ci(q.precision_ci)}`],
    ['base rate', (q) => `${num(q.base_rate)}${ci(q.base_rate_ci)}`],
    ['lift', (q) => num(q.lift, 2)],
    ['recall', (q) => `${num(q.recall)} (${q.fired_reached}/${q.counts.outcomes})`],
    ['lead time', (q) => `median ${hours(q.lead_time.median_s)}, p90 ${hours(q.lead_time.p90_s)}`],
    ['useful', (q) => (q.counts.feedback ? `${num(q.useful_share)} (${q.counts.feedback.useful}/${q.counts.feedback.judged} judged)` : '–')],
  ]
  const table: string[][] = [['', ...columns.map((c) => c.name)]]
  if (columns.some((c) => c.fires !== undefined)) table.push(['would fire', ...columns.map((c) => (c.fires === undefined ? '' : String(c.fires)))])
  for (const [label, cell] of rows) table.push([label, ...columns.map((c) => (c.quality ? cell(c.quality, c) : label === 'outcome' ? `– (${c.note ?? 'no quality'})` : ''))])
  const widths = table[0]?.map((_, i) => Math.max(...table.map((r) => (r[i] ?? '').length))) ?? []
  return table.map((r) => r.map((x, i) => (i === r.length - 1 ? x : x.padEnd((widths[i] ?? 0) + 2))).join('').trimEnd()).join('\n')
}

export function printQuality(columns: Column[]): void {
  console.log(formatQuality(columns))
}

/** One line of the headline figures, after a backtest's list of fires. */
export function qualityLine(q: QualityReport): string {
  return `quality against ${q.outcome} within ${q.horizon}: precision ${num(q.precision)}${ci(q.precision_ci)} (${q.fired_reached}/${q.counts.fired.decided}, ${q.pending} pending), base rate ${num(q.base_rate)} (${q.counts.not_fired.reached}/${q.counts.not_fired.decided}), lift ${num(q.lift, 2)}`
}

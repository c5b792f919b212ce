import type { FC } from 'hono/jsx'
import type { Funnel } from '../../lifecycle/lifecycle.js'
import { Empty, stageLabel } from '../components.js'
import { Layout, type PageContext, PageHeader } from '../layout.js'
import { formatNumber } from '../reasons.js'

/** Seconds → "3.2 days", "5 h", "12 min". */
export function durationText(s: number | null): string {
  if (s === null) return '—'
  if (s >= 86_400) return `${formatNumber(s / 86_400)} days`
  if (s >= 3600) return `${formatNumber(s / 3600)} h`
  if (s >= 60) return `${Math.round(s / 60)} min`
  return `${Math.round(s)} s`
}

const pct = (r: number | null) => (r === null ? '—' : `${formatNumber(r * 100)}%`)

export const FunnelPage: FC<{ ctx: PageContext; funnel: Funnel; from: string; to: string }> = ({ ctx, funnel, from, to }) => {
  const max = Math.max(1, ...funnel.stages.map((s) => s.entered))
  return (
    <Layout ctx={ctx} title="Funnel">
      <PageHeader title="Funnel" subtitle="How subjects move through the lifecycle: who entered each stage, who moved on, how long they stayed." />
      <form method="get" action="/funnel" class="filters" aria-label="Funnel period">
        <div class="field">
          <label for="fn-type">Subjects</label>
          <select id="fn-type" name="subject_type">
            <option value="account" selected={funnel.subject_type === 'account'}>
              Accounts
            </option>
            <option value="user" selected={funnel.subject_type === 'user'}>
              People
            </option>
          </select>
        </div>
        <div class="field">
          <label for="fn-from">From</label>
          <input id="fn-from" name="from" type="date" value={from} />
        </div>
        <div class="field">
          <label for="fn-to">To</label>
          <input id="fn-to" name="to" type="date" value={to} />
        </div>
        <button type="submit">Show</button>
      </form>
      {funnel.stages.every((s) => s.entered === 0) ? (
        <Empty>Nobody entered a stage in this period.</Empty>
      ) : (
        <section class="panel" aria-labelledby="ladder-h">
          <h2 id="ladder-h">Stages</h2>
          {funnel.stall_stage ? (
            <p class="flash error" role="status">
              Most subjects stall at <strong>{stageLabel(funnel.stall_stage)}</strong>.
            </p>
          ) : null}
          <ol class="ladder" aria-label="Stages">
            {funnel.stages.map((s) => (
              <li class={`rung ${s.stage === funnel.stall_stage ? 'stall' : ''}`} data-stage={s.stage}>
                <strong>{stageLabel(s.stage)}</strong>
                <div class="bar" aria-hidden="true">
                  <span style={`width:${(s.entered / max) * 100}%`} />
                </div>
                <div class="fig">
                  <small>entered</small>
                  {formatNumber(s.entered)}
                </div>
                <div class="fig">
                  <small>to next</small>
                  {pct(s.conversion_rate)}
                </div>
                <div class="fig">
                  <small>median · p90</small>
                  {durationText(s.time_in_stage.median_seconds)} · {durationText(s.time_in_stage.p90_seconds)}
                </div>
              </li>
            ))}
          </ol>
        </section>
      )}
    </Layout>
  )
}

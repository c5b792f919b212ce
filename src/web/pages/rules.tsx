import { diffLines } from 'diff'
import type { FC } from 'hono/jsx'
import type { BacktestResult } from '../../../rules/backtest.js'
import type { RuleVersionSource, StoredRule } from '../../../rules/store.js'
import type { ErrorDetail } from '../../errors.js'
import { Chart, Empty, KindBadge, Reasons, SubjectName, Time } from '../components.js'
import { CsrfField, Flash, Layout, type PageContext, PageHeader } from '../layout.js'
import type { Label } from '../queries.js'
import { formatNumber } from '../reasons.js'

export const RulesPage: FC<{ ctx: PageContext; rules: StoredRule[]; fires: Map<string, number>; now: number }> = ({ ctx, rules, fires, now }) => (
  <Layout ctx={ctx} title="Rules">
    <PageHeader title="Rules" subtitle="What makes a signal fire. Each change is a new version; a backtest shows what a rule would have fired." />
    {rules.length === 0 ? (
      <Empty>No rules yet. Apply the default pack with <code>npx signalbox rules apply rules/defaults/</code>.</Empty>
    ) : (
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">Rule</th>
              <th scope="col">Kind</th>
              <th scope="col" class="hide-phone">Subject</th>
              <th scope="col">Enabled</th>
              <th scope="col" class="num">Fires, 30 days</th>
              <th scope="col" class="num hide-phone">Version</th>
              <th scope="col" class="hide-phone">Changed</th>
            </tr>
          </thead>
          <tbody>
            {rules.map((r) => (
              <tr>
                <td>
                  <a href={`/rules/${encodeURIComponent(r.id)}`} class="mono">
                    {r.id}
                  </a>
                  {r.rule.description ? <div class="muted small">{r.rule.description.split('. ')[0]}</div> : null}
                </td>
                <td>
                  <KindBadge kind={r.rule.kind} />
                </td>
                <td class="hide-phone">{r.rule.subject}</td>
                <td>{r.enabled ? 'Yes' : <span class="muted">Paused</span>}</td>
                <td class="num">{formatNumber(fires.get(r.id) ?? 0)}</td>
                <td class="num hide-phone">v{r.version}</td>
                <td class="hide-phone">
                  <Time iso={r.created_at} now={now} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    )}
  </Layout>
)

export type EditorError = ErrorDetail & { line?: number }

export type BacktestView = {
  from: string
  to: string
  result?: BacktestResult
  labels?: Map<string, Label>
  error?: string
}

const Diff: FC<{ before: string; after: string }> = ({ before, after }) => (
  <pre class="diff">
    {diffLines(before, after).map((part) => (
      <span class={part.added ? 'add' : part.removed ? 'del' : ''}>
        {(part.added ? part.value.replace(/^/gm, '+ ') : part.removed ? part.value.replace(/^/gm, '- ') : part.value.replace(/^/gm, '  ')).replace(/(\+ |- | {2})$/, '')}
      </span>
    ))}
  </pre>
)

const firesPerDay = (result: BacktestResult) => {
  const days: string[] = []
  for (let t = Date.parse(result.from.slice(0, 10)); t <= Date.parse(result.to); t += 86_400_000) days.push(new Date(t).toISOString().slice(0, 10))
  const counts = new Map(days.map((d) => [d, 0]))
  for (const f of result.fired) counts.set(f.at.slice(0, 10), (counts.get(f.at.slice(0, 10)) ?? 0) + 1)
  return { x: days, values: days.map((d) => counts.get(d) ?? 0) }
}

export const RulePage: FC<{
  ctx: PageContext
  now: number
  rule: StoredRule
  source: string
  versions: RuleVersionSource[]
  errors?: EditorError[]
  errorMessage?: string
  saved?: string
  backtest: BacktestView
}> = ({ ctx, now, rule, source, versions, errors, errorMessage, saved, backtest }) => {
  const admin = ctx.session.role === 'admin'
  const bt = backtest.result
  const series = bt ? firesPerDay(bt) : undefined
  return (
    <Layout ctx={ctx} title={rule.id} charts>
      <PageHeader
        title={<span class="mono">{rule.id}</span>}
        subtitle={
          <>
            <KindBadge kind={rule.rule.kind} /> {rule.rule.subject} rule · version {rule.version} · {rule.enabled ? 'enabled' : 'paused'} · changed{' '}
            <Time iso={rule.created_at} now={now} />
          </>
        }
      />
      {rule.rule.description ? <p class="muted">{rule.rule.description}</p> : null}
      <div class="grid-2">
        <section class="panel" aria-labelledby="editor-h">
          <h2 id="editor-h">Definition</h2>
          {saved ? <Flash kind="ok">{saved}</Flash> : null}
          {errors?.length || errorMessage ? (
            <div class="flash error" role="alert">
              <strong>{errorMessage ?? 'The rule is not valid'}</strong>
              <ul class="errors">
                {(errors ?? []).map((e) => (
                  <li>
                    {e.line ? `line ${e.line} · ` : ''}
                    <code>{e.path}</code>: {e.message}
                  </li>
                ))}
              </ul>
            </div>
          ) : null}
          {admin ? (
            <form method="post" action={`/rules/${encodeURIComponent(rule.id)}`}>
              <CsrfField session={ctx.session} />
              <label for="source">Rule (YAML)</label>
              <textarea id="source" name="source" class="editor" spellcheck={false} aria-describedby="source-hint">
                {source}
              </textarea>
              <p id="source-hint" class="hint">
                Saving stores a new version; the evaluator uses it from its next run. <a href="/v1/rules/schema">JSON Schema</a>
              </p>
              <button type="submit" class="primary">
                Save rule
              </button>
            </form>
          ) : (
            <>
              <label for="source">Rule (YAML)</label>
              <textarea id="source" class="editor" readonly>
                {source}
              </textarea>
            </>
          )}
        </section>
        <section class="panel" aria-labelledby="versions-h">
          <h2 id="versions-h">Versions</h2>
          <ul class="versions">
            {[...versions].reverse().map((v, i, all) => {
              const prev = all[i + 1]
              return (
                <li>
                  <details class="version" open={i === 0 && !!prev}>
                    <summary>
                      <strong>Version {v.version}</strong> <Time iso={v.created_at} now={now} />
                      {v.deleted ? ' · deleted' : v.enabled ? '' : ' · paused'}
                    </summary>
                    {prev ? <Diff before={prev.source} after={v.source} /> : <p class="muted small">The first version.</p>}
                  </details>
                </li>
              )
            })}
          </ul>
        </section>
      </div>
      <section class="panel" aria-labelledby="backtest-h">
        <h2 id="backtest-h">Backtest</h2>
        <p class="muted small">What this rule would have fired on stored history, evaluated once a day. Nothing is stored.</p>
        <form method="get" action={`/rules/${encodeURIComponent(rule.id)}`} class="inline-form">
          <div class="field">
            <label for="bt-from">From</label>
            <input id="bt-from" name="from" type="date" value={backtest.from} required />
          </div>
          <div class="field">
            <label for="bt-to">To</label>
            <input id="bt-to" name="to" type="date" value={backtest.to} required />
          </div>
          <input type="hidden" name="backtest" value="1" />
          <button type="submit">Run backtest</button>
        </form>
        {backtest.error ? <Flash kind="error">{backtest.error}</Flash> : null}
        {bt && series ? (
          <div class="backtest">
            <p>
              <strong>{formatNumber(bt.fired.length)}</strong> would-be fires of <strong>{formatNumber(new Set(bt.fired.map((f) => f.subject.id)).size)}</strong> subjects over{' '}
              {bt.moments} days; {formatNumber(bt.resolved.length)} resolved, {formatNumber(bt.open_at_end)} still open at the end.
            </p>
            <Chart id="backtest-chart" title="Would-be fires per day" spec={{ type: 'bars', x: series.x, series: [{ label: 'fires', values: series.values }] }}>
              <details>
                <summary>The figures</summary>
                <table class="compact">
                  <tbody>
                    {series.x.map((d, i) =>
                      series.values[i] ? (
                        <tr>
                          <td>{d}</td>
                          <td class="num">{series.values[i]}</td>
                        </tr>
                      ) : null,
                    )}
                  </tbody>
                </table>
              </details>
            </Chart>
            {bt.fired.length ? (
              <div class="table-wrap" style="margin-top:1rem">
                <table>
                  <caption class="sr-only">Subjects the backtest fired for</caption>
                  <thead>
                    <tr>
                      <th scope="col">Subject</th>
                      <th scope="col">Would have fired</th>
                      <th scope="col">Why</th>
                    </tr>
                  </thead>
                  <tbody>
                    {bt.fired.slice(0, 200).map((f) => (
                      <tr>
                        <td>
                          <SubjectName type={f.subject.type} id={f.subject.id} label={backtest.labels?.get(`${f.subject.type}:${f.subject.id}`)} />
                        </td>
                        <td>{f.at.slice(0, 10)}</td>
                        <td>
                          <Reasons reasons={f.reasons.filter((r) => r.passed)} />
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
            ) : (
              <Empty>It would not have fired in this period.</Empty>
            )}
          </div>
        ) : null}
      </section>
    </Layout>
  )
}

import type { FC } from 'hono/jsx'
import type { SubjectProfile } from '../../subjects/profile.js'
import { Chart, type ChartSpec, Empty, SignalItem, type SignalView, StageBadge, stageLabel, SubjectName, Time } from '../components.js'
import type { AccountFigures } from '../figures.js'
import { Layout, type PageContext, PageHeader } from '../layout.js'
import type { Label } from '../queries.js'
import { formatNumber } from '../reasons.js'

const CAUSE: Record<string, string> = { first_seen: 'first seen', signal: 'signal fired', signal_resolved: 'signal resolved', trait: 'trait changed', api: 'moved by hand' }

const traitText = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v))

export const SubjectPage: FC<{
  ctx: PageContext
  now: number
  profile: SubjectProfile
  label?: Label
  memberLabels: Map<string, Label>
  figures?: AccountFigures
  bands: ChartSpec['bands']
  open: SignalView[]
  past: SignalView[]
}> = ({ ctx, now, profile, label, memberLabels, figures, bands, open, past }) => {
  const account = profile.type === 'account'
  const title = account ? (label?.name ?? label?.domain ?? profile.id) : (label?.email ?? label?.name ?? profile.id)
  const spec: ChartSpec = {
    type: 'line',
    x: profile.usage.map((d) => d.day),
    series: [
      { label: 'events', values: profile.usage.map((d) => d.events) },
      { label: 'active users', values: profile.usage.map((d) => d.active_users), axis: 'right' },
    ],
    bands,
  }
  const days = profile.usage.length
  const total = profile.usage.reduce((a, d) => a + d.events, 0)
  const back = `/${profile.type}s/${encodeURIComponent(profile.id)}`
  return (
    <Layout ctx={ctx} title={title} charts>
      <PageHeader
        title={title}
        subtitle={
          <>
            <span class="mono">{profile.id}</span>
            {account && label?.domain && label.domain !== title ? ` · ${label.domain}` : ''}
            {!account && label?.name && label.name !== title ? ` · ${label.name}` : ''}
          </>
        }
      >
        <StageBadge stage={profile.stage.name} />
      </PageHeader>
      <dl class="facts">
        <div>
          <dt>Stage</dt>
          <dd>
            {stageLabel(profile.stage.name)} {profile.stage.since ? <span class="muted small">since <Time iso={profile.stage.since} now={now} /></span> : null}
          </dd>
        </div>
        <div>
          <dt>Plan</dt>
          <dd>{profile.traits.plan !== undefined ? traitText(profile.traits.plan) : <span class="muted">—</span>}</dd>
        </div>
        <div>
          <dt>Last seen</dt>
          <dd>
            <Time iso={profile.last_seen} now={now} />
          </dd>
        </div>
        <div>
          <dt>Events, {days} days</dt>
          <dd>{formatNumber(total)}</dd>
        </div>
        {figures ? (
          <div>
            <dt>Seats used (30 days)</dt>
            <dd>
              {figures.seats ? (
                <>
                  {formatNumber(figures.seatsUsed)} of {formatNumber(figures.seats)}
                  <div class="meter" role="meter" aria-label="Seats used" aria-valuemin={0} aria-valuemax={figures.seats} aria-valuenow={figures.seatsUsed ?? 0}>
                    <span style={`width:${Math.min(100, ((figures.seatsUsed ?? 0) / figures.seats) * 100)}%`} />
                  </div>
                </>
              ) : (
                <span class="muted">no seats trait</span>
              )}
            </dd>
          </div>
        ) : null}
      </dl>

      <section class="panel" aria-labelledby="usage-h">
        <Chart id="usage-chart" title={`Usage per day, last ${days} days (UTC)`} spec={spec}>
          {bands?.length ? (
            <p class="muted small">
              <span class="legend-band" /> {bands.map((b) => b.label).join('; ')}
            </p>
          ) : null}
          <details>
            <summary>The figures</summary>
            <table class="compact" data-usage={JSON.stringify(profile.usage)}>
              <thead>
                <tr>
                  <th scope="col">Day</th>
                  <th scope="col" class="num">Events</th>
                  <th scope="col" class="num">Active users</th>
                </tr>
              </thead>
              <tbody>
                {[...profile.usage].reverse().map((d) => (
                  <tr>
                    <td>{d.day}</td>
                    <td class="num">{d.events}</td>
                    <td class="num">{d.active_users}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </details>
        </Chart>
      </section>

      <div class="grid-2" style="margin-top:1rem">
        <section class="panel" aria-labelledby="signals-h">
          <h2 id="signals-h">Open signals</h2>
          {open.length ? (
            <ul class="inbox">
              {open.map((v) => (
                <SignalItem view={v} session={ctx.session} now={now} back={back} showSubject={false} />
              ))}
            </ul>
          ) : (
            <Empty>No open signals.</Empty>
          )}
          {past.length ? (
            <>
              <h2 style="margin-top:1.25rem">Past signals</h2>
              <ul class="inbox">
                {past.map((v) => (
                  <SignalItem view={v} session={ctx.session} now={now} back={back} showSubject={false} />
                ))}
              </ul>
            </>
          ) : null}
        </section>
        <div>
          <section class="panel" aria-labelledby="timeline-h">
            <h2 id="timeline-h">Stage timeline</h2>
            <ol class="timeline" aria-label="Stage timeline">
              {[...profile.stages].reverse().map((t) => (
                <li>
                  <strong>{stageLabel(t.to)}</strong> <Time iso={t.at} now={now} />
                  <div class="cause">
                    {CAUSE[t.cause.type] ?? t.cause.type}
                    {t.cause.reason && t.cause.reason !== 'first seen' ? `: ${t.cause.reason}` : ''}
                    {t.by ? ` · by ${t.by}` : ''}
                  </div>
                </li>
              ))}
            </ol>
          </section>
          <section class="panel" aria-labelledby="members-h">
            <h2 id="members-h">{account ? 'Members' : 'Accounts'}</h2>
            {profile.members.length ? (
              <table class="compact">
                <thead>
                  <tr>
                    <th scope="col">{account ? 'Person' : 'Account'}</th>
                    <th scope="col">Last seen</th>
                  </tr>
                </thead>
                <tbody>
                  {profile.members.map((m) => (
                    <tr>
                      <td>
                        <SubjectName type={account ? 'user' : 'account'} id={m.id} label={memberLabels.get(m.id)} />
                        {figures?.champion === m.id ? (
                          <span class="champion" title="The most active person over the last 90 days">
                            champion
                          </span>
                        ) : null}
                      </td>
                      <td>
                        <Time iso={m.last_seen} now={now} />
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            ) : (
              <Empty>None yet.</Empty>
            )}
          </section>
          <section class="panel" aria-labelledby="traits-h">
            <h2 id="traits-h">Traits</h2>
            {Object.keys(profile.traits).length ? (
              <table class="kv compact">
                <tbody>
                  {Object.entries(profile.traits).map(([k, v]) => (
                    <tr>
                      <th scope="row">{k}</th>
                      <td>{traitText(v)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            ) : (
              <Empty>No traits yet.</Empty>
            )}
          </section>
        </div>
      </div>
    </Layout>
  )
}

import type { FC } from 'hono/jsx'
import type { UsageDay } from '../../subjects/queries.js'
import { Chart, Empty, StageBadge, Time } from '../components.js'
import { Layout, type PageContext, PageHeader } from '../layout.js'
import type { AccountListQuery, AccountListRow, AccountSort } from '../queries.js'
import { formatNumber } from '../reasons.js'

export type AccountRowView = AccountListRow & { usage: UsageDay[]; activeUsers: number }

const COLUMNS: { key: AccountSort | null; label: string; num?: boolean; phone?: boolean }[] = [
  { key: 'name', label: 'Account', phone: true },
  { key: 'stage', label: 'Stage', phone: true },
  { key: 'open_signals', label: 'Open signals', num: true, phone: true },
  { key: 'last_seen', label: 'Last seen' },
  { key: null, label: 'Active users, 30 days', num: true },
  { key: null, label: 'Usage, 30 days' },
]

export const AccountsPage: FC<{ ctx: PageContext; now: number; query: AccountListQuery; rows: AccountRowView[]; total: number }> = ({ ctx, now, query, rows, total }) => {
  const link = (over: Partial<AccountListQuery>) => {
    const q = { ...query, ...over }
    const p = new URLSearchParams()
    if (q.q) p.set('q', q.q)
    p.set('sort', q.sort)
    p.set('dir', q.dir)
    if (q.offset) p.set('offset', String(q.offset))
    return `/accounts?${p}`
  }
  return (
    <Layout ctx={ctx} title="Accounts" charts>
      <PageHeader title="Accounts" subtitle={`${formatNumber(total)} accounts${query.q ? ` matching “${query.q}”` : ''}`} />
      <form method="get" action="/accounts" class="filters" role="search">
        <div class="field" style="flex:1">
          <label for="q">Search accounts</label>
          <input id="q" name="q" type="search" value={query.q ?? ''} placeholder="Name, domain or id" />
        </div>
        <input type="hidden" name="sort" value={query.sort} />
        <input type="hidden" name="dir" value={query.dir} />
        <button type="submit">Search</button>
      </form>
      {rows.length === 0 ? (
        <Empty>No accounts{query.q ? ' match this search' : ' yet: they appear with the first group call'}.</Empty>
      ) : (
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                {COLUMNS.map((col) => {
                  const active = col.key === query.sort
                  const sortDir = active ? (query.dir === 'asc' ? 'ascending' : 'descending') : undefined
                  return (
                    <th scope="col" class={`${col.num ? 'num' : ''} ${col.phone ? '' : 'hide-phone'}`} aria-sort={sortDir}>
                      {col.key ? (
                        <a href={link({ sort: col.key, dir: active && query.dir === 'desc' ? 'asc' : 'desc', offset: 0 })}>
                          {col.label}
                          {active ? (query.dir === 'asc' ? ' ↑' : ' ↓') : ''}
                        </a>
                      ) : (
                        col.label
                      )}
                    </th>
                  )
                })}
              </tr>
            </thead>
            <tbody>
              {rows.map((r) => (
                <tr>
                  <td>
                    <a href={`/accounts/${encodeURIComponent(r.id)}`} class="subject">
                      <span class="who-main">{r.name ?? r.domain ?? r.id}</span>
                    </a>
                    <div class="muted small">
                      {r.name && r.domain ? r.domain : r.id}
                      {r.plan ? ` · ${r.plan}` : ''}
                    </div>
                  </td>
                  <td>
                    <StageBadge stage={r.stage} />
                  </td>
                  <td class="num">{r.open_signals ? <strong>{r.open_signals}</strong> : <span class="muted">0</span>}</td>
                  <td class="hide-phone">
                    <Time iso={r.last_seen} now={now} />
                  </td>
                  <td class="num hide-phone">{formatNumber(r.activeUsers)}</td>
                  <td class="spark hide-phone">
                    <Chart
                      id={`spark-${r.id}`}
                      title={`${r.name ?? r.id}: events per day`}
                      spec={{ type: 'spark', x: r.usage.map((d) => d.day), series: [{ label: 'events', values: r.usage.map((d) => d.events) }] }}
                    />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <nav class="pager" aria-label="Pages">
        {query.offset > 0 ? <a href={link({ offset: Math.max(0, query.offset - query.limit) })}>← Previous</a> : <span />}
        <span class="muted small">
          {total ? `${formatNumber(query.offset + 1)}–${formatNumber(Math.min(total, query.offset + query.limit))} of ${formatNumber(total)}` : ''}
        </span>
        {query.offset + query.limit < total ? <a href={link({ offset: query.offset + query.limit })}>Next →</a> : <span />}
      </nav>
    </Layout>
  )
}

import type { FC } from 'hono/jsx'
import { SIGNAL_KINDS } from '../../signals.js'
import { Empty, KIND_LABEL, Pager, SignalItem, type SignalView, stageLabel } from '../components.js'
import { Layout, type PageContext, PageHeader } from '../layout.js'

export type InboxFilters = { kind?: string; rule_id?: string; stage?: string; status?: 'open' | 'resolved' }

export const filterQuery = (f: InboxFilters, extra: Record<string, string> = {}) => {
  const p = new URLSearchParams()
  for (const [k, v] of Object.entries({ ...f, ...extra })) if (v) p.set(k, v)
  const s = p.toString()
  return s ? `?${s}` : ''
}

const Select: FC<{ name: string; label: string; value?: string; options: readonly (readonly [string, string])[] }> = ({ name, label, value, options }) => (
  <div class="field">
    <label for={`f-${name}`}>{label}</label>
    <select id={`f-${name}`} name={name}>
      <option value="">All</option>
      {options.map(([v, l]) => (
        <option value={v} selected={v === value}>
          {l}
        </option>
      ))}
    </select>
  </div>
)

export const InboxList: FC<{ views: SignalView[]; ctx: PageContext; now: number; back: string }> = ({ views, ctx, now, back }) => (
  <>
    {views.map((v) => (
      <SignalItem view={v} session={ctx.session} now={now} back={back} />
    ))}
  </>
)

export const InboxPage: FC<{
  ctx: PageContext
  now: number
  filters: InboxFilters
  views: SignalView[]
  rules: string[]
  stages: string[]
  next: string | null
  flash?: string
}> = ({ ctx, now, filters, views, rules, stages, next, flash }) => {
  const back = `/${filterQuery(filters)}`
  return (
    <Layout ctx={ctx} title="Inbox">
      <PageHeader title="Signals" subtitle="Accounts and people worth a conversation today, newest first.">
        <span class="live" data-live-status aria-live="polite">
          Live
        </span>
      </PageHeader>
      {flash ? (
        <div class="flash ok" role="status">
          {flash}
        </div>
      ) : null}
      <form method="get" action="/" class="filters" aria-label="Filter signals">
        <Select name="kind" label="Kind" value={filters.kind} options={SIGNAL_KINDS.map((k) => [k, KIND_LABEL[k] ?? k] as const)} />
        <Select name="rule_id" label="Rule" value={filters.rule_id} options={rules.map((r) => [r, r] as const)} />
        <Select name="stage" label="Stage" value={filters.stage} options={stages.map((s) => [s, stageLabel(s)] as const)} />
        <Select
          name="status"
          label="Status"
          value={filters.status}
          options={[
            ['open', 'Open'],
            ['resolved', 'Resolved'],
          ]}
        />
        <button type="submit">Filter</button>
      </form>
      <ul
        class="inbox"
        aria-label="Signals"
        data-live-inbox={`/inbox/rows${filterQuery(filters)}`}
        data-newest={views[0]?.signal.id ?? ''}
      >
        <InboxList views={views} ctx={ctx} now={now} back={back} />
      </ul>
      {views.length === 0 ? <Empty>No signals yet. They appear here the moment a rule fires: send events and keep this page open.</Empty> : null}
      <Pager next={next ? `/${filterQuery(filters, { before: next })}` : null} />
    </Layout>
  )
}

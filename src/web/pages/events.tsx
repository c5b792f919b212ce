import type { FC } from 'hono/jsx'
import type { IngestError, StoredEvent } from '../../events/queries.js'
import { Empty, Time } from '../components.js'
import { Layout, type PageContext, PageHeader } from '../layout.js'

export type EventFilters = { subject_type?: 'account' | 'user'; subject_id?: string; event?: string }

const pretty = (v: unknown) => (v === null || v === undefined || (typeof v === 'object' && Object.keys(v as object).length === 0) ? '' : JSON.stringify(v, null, 2))

export const EventRows: FC<{ events: StoredEvent[]; now: number }> = ({ events, now }) => (
  <>
    {events.map((e) => {
      const props = pretty(e.properties)
      const traits = pretty(e.traits)
      return (
        <tr data-cursor={e.cursor}>
          <td>
            <Time iso={e.received_at} now={now} />
          </td>
          <td>
            <span class="badge">{e.type}</span>
          </td>
          <td>{e.event || <span class="muted">—</span>}</td>
          <td class="small">
            {e.user_id ? (
              <a href={`/users/${encodeURIComponent(e.user_id)}`}>{e.user_id}</a>
            ) : e.anonymous_id ? (
              <span class="muted">anonymous {e.anonymous_id}</span>
            ) : null}
            {e.account_id ? (
              <>
                {' · '}
                <a href={`/accounts/${encodeURIComponent(e.account_id)}`}>{e.account_id}</a>
              </>
            ) : null}
          </td>
          <td>
            {props || traits ? (
              <details>
                <summary class="small">{props ? 'properties' : 'traits'}</summary>
                <pre class="json">{props || traits}</pre>
              </details>
            ) : (
              <span class="muted small">none</span>
            )}
          </td>
          <td class="small hide-phone muted">{e.source}</td>
        </tr>
      )
    })}
  </>
)

export const ErrorRows: FC<{ errors: IngestError[]; now: number }> = ({ errors, now }) => (
  <>
    {errors.map((e) => (
      <tr data-cursor={e.cursor}>
        <td>
          <Time iso={e.received_at} now={now} />
        </td>
        <td>
          <span class={`status status-${e.level}`}>{e.level === 'error' ? 'rejected' : 'corrected'}</span>
        </td>
        <td class="small">
          <code>{e.path}</code>: {e.message}
        </td>
        <td class="small hide-phone">
          {e.route}
          {e.batch_index !== null ? ` #${e.batch_index}` : ''} · {e.source}
        </td>
        <td>
          <details>
            <summary class="small">as sent</summary>
            <pre class="json">{pretty(e.payload)}</pre>
          </details>
        </td>
      </tr>
    ))}
  </>
)

export const EventsPage: FC<{
  ctx: PageContext
  now: number
  filters: EventFilters
  events: StoredEvent[]
  next: string | null
  errors: IngestError[]
  rowsUrl: string
}> = ({ ctx, now, filters, events, next, errors, rowsUrl }) => (
  <Layout ctx={ctx} title="Events">
    <PageHeader title="Events" subtitle="What arrives, as it arrives: every stored event with its properties, and every message refused with the reason." />
    <form method="get" action="/events" class="filters" aria-label="Filter events">
      <div class="field">
        <label for="ev-type">Subject type</label>
        <select id="ev-type" name="subject_type">
          <option value="">Any</option>
          <option value="account" selected={filters.subject_type === 'account'}>
            Account
          </option>
          <option value="user" selected={filters.subject_type === 'user'}>
            User
          </option>
        </select>
      </div>
      <div class="field">
        <label for="ev-subject">Subject id</label>
        <input id="ev-subject" name="subject_id" value={filters.subject_id ?? ''} placeholder="acme, user_42…" />
      </div>
      <div class="field">
        <label for="ev-event">Event name</label>
        <input id="ev-event" name="event" value={filters.event ?? ''} placeholder="Message Sent" />
      </div>
      <button type="submit">Filter</button>
    </form>
    <section aria-labelledby="events-h">
      <h2 id="events-h">Newest events</h2>
      <div class="table-wrap">
        <table class="compact">
          <thead>
            <tr>
              <th scope="col">Received</th>
              <th scope="col">Type</th>
              <th scope="col">Event</th>
              <th scope="col">Who</th>
              <th scope="col">Properties</th>
              <th scope="col" class="hide-phone">Source</th>
            </tr>
          </thead>
          <tbody data-poll={rowsUrl} data-newest={events[0]?.cursor ?? ''} aria-live="polite">
            <EventRows events={events} now={now} />
          </tbody>
        </table>
      </div>
      {events.length === 0 ? <Empty>No events {filters.subject_id || filters.event ? 'match these filters' : 'yet'}. New ones appear here as they arrive.</Empty> : null}
      {next ? (
        <nav class="pager" aria-label="Pages">
          <span />
          <a href={`/events?${new URLSearchParams({ ...(filters as Record<string, string>), before: next })}`}>Older →</a>
        </nav>
      ) : null}
    </section>
    <section aria-labelledby="errors-h" style="margin-top:1.5rem">
      <h2 id="errors-h">Rejected and corrected messages</h2>
      {errors.length ? (
        <div class="table-wrap">
          <table class="compact">
            <thead>
              <tr>
                <th scope="col">Received</th>
                <th scope="col">What</th>
                <th scope="col">Why</th>
                <th scope="col" class="hide-phone">Where</th>
                <th scope="col">Message</th>
              </tr>
            </thead>
            <tbody>
              <ErrorRows errors={errors} now={now} />
            </tbody>
          </table>
        </div>
      ) : (
        <Empty>Nothing was refused.</Empty>
      )}
    </section>
  </Layout>
)

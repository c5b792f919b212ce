import type { FC } from 'hono/jsx'
import type { Delivery } from '../../delivery/outbox.js'
import type { Webhook } from '../../delivery/webhooks.js'
import { SIGNAL_KINDS } from '../../signals.js'
import { Empty, KIND_LABEL, Time } from '../components.js'
import { CsrfField, Flash, Layout, type PageContext, PageHeader } from '../layout.js'

export type EndpointView = { webhook: Webhook; recent: Delivery[]; dead: Delivery[] }

const DeliveryRow: FC<{ d: Delivery; now: number; replay: boolean; ctx: PageContext }> = ({ d, now, replay, ctx }) => {
  const last = d.attempts.at(-1)
  return (
    <tr data-delivery-id={d.id}>
      <td class="mono small">{d.id}</td>
      <td>
        <span class={`status status-${d.status}`}>{d.status}</span>
      </td>
      <td class="small">
        {d.type} · <a href={`/rules/${encodeURIComponent(d.rule_id)}`}>{d.rule_id}</a>
      </td>
      <td class="num">{d.attempt_count}</td>
      <td class="small hide-phone">{last ? (last.status_code ? `HTTP ${last.status_code}` : last.error || '—') : '—'}</td>
      <td>
        <Time iso={d.updated_at} now={now} />
      </td>
      {replay ? (
        <td>
          {ctx.session.role === 'admin' ? (
            <form method="post" action={`/deliveries/${d.id}/replay`}>
              <CsrfField session={ctx.session} />
              <button type="submit" aria-label={`Replay ${d.id}`}>
                Replay
              </button>
            </form>
          ) : null}
        </td>
      ) : null}
    </tr>
  )
}

const Deliveries: FC<{ list: Delivery[]; now: number; replay: boolean; ctx: PageContext; caption: string }> = ({ list, now, replay, ctx, caption }) => (
  <div class="table-wrap">
    <table class="compact">
      <caption class="sr-only">{caption}</caption>
      <thead>
        <tr>
          <th scope="col">Delivery</th>
          <th scope="col">Status</th>
          <th scope="col">Signal</th>
          <th scope="col" class="num">Attempts</th>
          <th scope="col" class="hide-phone">Last answer</th>
          <th scope="col">Updated</th>
          {replay ? <th scope="col">Action</th> : null}
        </tr>
      </thead>
      <tbody>
        {list.map((d) => (
          <DeliveryRow d={d} now={now} replay={replay} ctx={ctx} />
        ))}
      </tbody>
    </table>
  </div>
)

export const WebhooksPage: FC<{
  ctx: PageContext
  now: number
  endpoints: EndpointView[]
  created?: { url: string; secret: string }
  flash?: string
  error?: string
  status?: number
}> = ({ ctx, now, endpoints, created, flash, error }) => (
  <Layout ctx={ctx} title="Webhooks">
    <PageHeader title="Webhooks" subtitle="Where signals are sent: signed POSTs (Standard Webhooks), retried, dead-lettered and replayable." />
    {created ? (
      <section class="panel" aria-labelledby="secret-h">
        <h2 id="secret-h">Endpoint created: copy its signing secret now</h2>
        <p>
          This is the only time the secret of <span class="mono">{created.url}</span> is shown. Receivers verify deliveries with it.
        </p>
        <p class="secret" aria-label="Signing secret">
          {created.secret}
        </p>
      </section>
    ) : null}
    {flash ? <Flash kind="ok">{flash}</Flash> : null}
    {error ? <Flash kind="error">{error}</Flash> : null}
    {endpoints.length === 0 ? <Empty>No endpoints yet.</Empty> : null}
    {endpoints.map(({ webhook: w, recent, dead }) => (
      <section class="panel" aria-label={`Endpoint ${w.url}`}>
        <div class="page-header" style="margin-bottom:0.5rem">
          <div>
            <h2 class="mono" style="margin:0">
              {w.url}
            </h2>
            <p class="subtitle small">
              {w.id} · {w.format} · {w.kinds.length ? w.kinds.map((k) => KIND_LABEL[k] ?? k).join(', ') : 'every kind'}
              {w.rule_ids.length ? ` · rules ${w.rule_ids.join(', ')}` : ''} · {w.enabled ? 'enabled' : 'disabled'}
            </p>
          </div>
        </div>
        <h3>Dead letters</h3>
        {dead.length ? <Deliveries list={dead} now={now} replay ctx={ctx} caption={`Dead letters of ${w.url}`} /> : <p class="muted small">None.</p>}
        <h3 style="margin-top:1rem">Recent deliveries</h3>
        {recent.length ? <Deliveries list={recent} now={now} replay={false} ctx={ctx} caption={`Recent deliveries of ${w.url}`} /> : <p class="muted small">None yet.</p>}
      </section>
    ))}
    {ctx.session.role === 'admin' ? (
      <section class="panel" aria-labelledby="new-h">
        <h2 id="new-h">New endpoint</h2>
        <form method="post" action="/webhooks" class="inline-form">
          <CsrfField session={ctx.session} />
          <div class="field" style="flex:2;min-width:16rem">
            <label for="wh-url">URL</label>
            <input id="wh-url" name="url" type="url" required placeholder="https://crm.example.com/hooks/signalbox" />
          </div>
          <div class="field">
            <label for="wh-format">Format</label>
            <select id="wh-format" name="format">
              <option value="json">JSON</option>
              <option value="slack">Slack message</option>
            </select>
          </div>
          <fieldset class="field" style="border:0;padding:0;margin:0">
            <legend class="small" style="font-weight:600;color:var(--ink-2)">
              Kinds (none: all)
            </legend>
            <div style="display:flex;gap:0.75rem;flex-wrap:wrap">
              {SIGNAL_KINDS.map((k) => (
                <label style="font-weight:400;display:flex;gap:0.3rem;align-items:center">
                  <input type="checkbox" name="kinds" value={k} /> {KIND_LABEL[k]}
                </label>
              ))}
            </div>
          </fieldset>
          <button type="submit" class="primary">
            Create endpoint
          </button>
        </form>
      </section>
    ) : null}
  </Layout>
)

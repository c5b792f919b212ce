import { getConnInfo } from '@hono/node-server/conninfo'
import { type Context, Hono, type MiddlewareHandler } from 'hono'
import { every } from 'hono/combine'
import { streamSSE } from 'hono/streaming'
import { z } from 'zod'
import { Lifecycle, lifecycleFromConfig } from '../lifecycle/lifecycle.js'
import YAML from 'yaml'
import { backtest } from '../../rules/backtest.js'
import { checkRuleId, getRule, listRules, listVersionSources, parseRuleText, putRule, validateRule } from '../../rules/store.js'
import { secretEquals } from '../auth.js'
import { StreamHub, streamSignals } from '../delivery/stream.js'
import type { AppDeps, AppEnv } from '../env.js'
import { ApiError, toApiError, zodDetails } from '../errors.js'
import { feedbackOf, recordFeedback } from '../feedback/feedback.js'
import { getSignal } from '../signals/queries.js'
import { subjectProfile } from '../subjects/profile.js'
import { usagePerDay } from '../subjects/queries.js'
import { Dispatcher } from '../delivery/dispatcher.js'
import { OutboxStore } from '../delivery/outbox.js'
import { publicWebhook, WebhookInput, WebhookStore } from '../delivery/webhooks.js'
import { targetRefusal } from '../routes/webhooks.js'
import { decodeCursor, listEvents, listIngestErrors } from '../events/queries.js'
import { parseDuration } from '../../rules/schema.js'
import { AccountsPage } from './pages/accounts.js'
import { EventRows, EventsPage } from './pages/events.js'
import { FunnelPage } from './pages/funnel.js'
import { SubjectPage } from './pages/subject.js'
import { WebhooksPage } from './pages/webhooks.js'
import { accountFigures, activeUsers30d } from './figures.js'
import { SignalKind, type SubjectType } from '../signals.js'
import { mountAssets } from './assets.js'
import type { ChartSpec, SignalView } from './components.js'
import { BareLayout, type PageContext } from './layout.js'
import { InboxList, InboxPage } from './pages/inbox.js'
import { LoginPage } from './pages/login.js'
import { type BacktestView, type EditorError, RulePage, RulesPage } from './pages/rules.js'
import { ACCOUNT_SORTS, accountList, firesPerRule, inboxSignals, labelsFor, subjectLabels } from './queries.js'
import { lineOfPath } from './yaml-lines.js'
import { LoginThrottle, type Session, Sessions, sessionKey, type WebEnv } from './session.js'

export type WorkspaceDeps = AppDeps & {
  /** Where the session signing key is kept. */
  dataDir: string
  /** Failed sign-ins allowed per client per window (default 10 per 15 minutes). */
  loginFailures?: { limit: number; windowMs: number }
}

type Env = AppEnv & WebEnv

export const INBOX_PAGE = 50
export const ACCOUNTS_PAGE = 25
export const EVENTS_PAGE = 30
/** The account and user pages chart this many days of usage. */
export const USAGE_CHART_DAYS = 90

const InboxQuery = z.object({
  kind: SignalKind.optional().catch(undefined),
  rule_id: z.string().min(1).max(200).optional().catch(undefined),
  stage: z.string().regex(/^[a-z][a-z0-9_]*$/).optional().catch(undefined),
  status: z.enum(['open', 'resolved']).optional().catch(undefined),
  before: z.string().regex(/^sig_[0-9A-Z]{26}$/).optional().catch(undefined),
  after: z.string().regex(/^sig_[0-9A-Z]{26}$/).optional().catch(undefined),
  ids: z
    .string()
    .transform((s) => s.split(',').filter((x) => /^sig_[0-9A-Z]{26}$/.test(x)).slice(0, 100))
    .optional()
    .catch(undefined),
})

/** A local path to go back to after a form (never another site). */
const localPath = (s: unknown, fallback = '/') => (typeof s === 'string' && /^\/(?!\/)[^\s\\]*$/.test(s) ? s : fallback)

/**
 * The workspace: server-rendered pages over the API's own query functions, signed in with the
 * admin token or a read token. Node only (it reads its assets and session key from disk).
 */
export function workspaceRoutes(deps: WorkspaceDeps) {
  const app = new Hono<Env>()
  const now = deps.now ?? Date.now
  const lifecycle = deps.lifecycle ?? new Lifecycle(deps.store, lifecycleFromConfig(deps.config))
  const hub = deps.delivery?.streams ?? new StreamHub()
  const sessions = new Sessions({
    key: sessionKey(deps.dataDir),
    adminToken: deps.adminToken,
    readTokens: deps.readTokens ?? deps.config.READ_TOKENS ?? [],
    publicUrl: deps.config.PUBLIC_URL,
    now,
  })
  const throttle = new LoginThrottle(deps.loginFailures?.limit ?? 10, deps.loginFailures?.windowMs ?? 15 * 60_000, now)
  const assets = mountAssets(app)
  const stages = [...lifecycle.config.stages, ...lifecycle.config.after]

  app.onError((caught, c) => {
    const err = toApiError(caught) ?? caught
    const status = err instanceof ApiError ? err.status : 500
    if (status >= 500) c.get('logger')?.error({ err }, 'workspace page failed')
    const message = err instanceof ApiError ? err.message : 'Something went wrong; the error is in the server log.'
    return c.html(
      <BareLayout title="Error" css={assets.css}>
        <div class="login">
          <h1>{status === 404 ? 'Not found' : status === 403 ? 'Not allowed' : 'Something went wrong'}</h1>
          <p role="alert">{message}</p>
          <p>
            <a href="/">Back to the inbox</a>
          </p>
        </div>
      </BareLayout>,
      status as 400,
    )
  })

  // Only the workspace's own routes read the session (this app is mounted at / beside the API,
  // where a middleware without a path would run for every API and ingestion request too).
  const session = sessions.middleware()
  // Pages are never cached: they show live data and who is signed in.
  const noStore: MiddlewareHandler<Env> = async function noStore(c, next) {
    await next()
    if (!c.res.headers.has('cache-control')) c.header('cache-control', 'no-store')
  }

  const client = (c: Context) => {
    try {
      return getConnInfo(c).remote.address ?? 'unknown'
    } catch {
      return 'unknown'
    }
  }

  app.get('/login', session, noStore, (c) => (c.var.session ? c.redirect('/', 303) : c.html(<LoginPage css={assets.css} />)))

  app.post('/login', noStore, async (c) => {
    const who = client(c)
    const wait = throttle.retryAfter(who)
    if (wait > 0) {
      c.header('retry-after', String(wait))
      return c.html(<LoginPage css={assets.css} error={`Too many failed sign-ins. Try again in ${Math.ceil(wait / 60)} minute(s).`} />, 429)
    }
    const form = await c.req.parseBody()
    const token = typeof form.token === 'string' ? form.token.trim() : ''
    const role = token ? sessions.roleOf(token) : undefined
    if (!role) {
      throttle.fail(who)
      c.get('logger')?.warn({ client: who }, 'workspace sign-in refused')
      // The token is never echoed back, not even into the field.
      return c.html(<LoginPage css={assets.css} error="That token is not the admin token or a read token." />, 401)
    }
    await sessions.start(c, token, role)
    return c.redirect('/', 303)
  })

  const logout = (c: Context) => {
    sessions.end(c)
    return c.redirect('/login', 303)
  }
  app.get('/logout', noStore, logout)
  app.post('/logout', noStore, logout)

  /** Pages: signed out → 303 to /login. */
  const signedIn: MiddlewareHandler<Env> = async function signedIn(c, next) {
    if (!c.var.session) return c.redirect('/login', 303)
    await next()
  }
  const page = every(session, noStore, signedIn)

  /**
   * Everything that changes something: an admin session and the session's CSRF token (a form
   * field `_csrf` or the `x-csrf-token` header), checked here for every such route.
   */
  const adminChange: MiddlewareHandler<Env> = async function adminChange(c, next) {
    const s = c.var.session
    if (!s) return c.redirect('/login', 303)
    const ct = c.req.header('content-type') ?? ''
    const form = ct.includes('form') ? await c.req.parseBody() : {}
    const given = c.req.header('x-csrf-token') ?? (typeof form._csrf === 'string' ? form._csrf : '')
    if (!given || !secretEquals(given, s.csrf)) {
      throw new ApiError({ code: 'FORBIDDEN', message: 'This form has expired (its security token does not match your session). Reload the page and try again.' })
    }
    if (s.role !== 'admin') throw new ApiError({ code: 'FORBIDDEN', message: 'You are signed in with a read token: it can see everything and change nothing.' })
    await next()
  }
  const change = every(session, noStore, adminChange)

  const ctx = (c: Context<Env>): PageContext => ({ session: c.var.session as Session, assets, path: c.req.path })

  async function signalViews(signals: Awaited<ReturnType<typeof inboxSignals>>['data']): Promise<SignalView[]> {
    const [feedback, labels, accountStages, userStages] = await Promise.all([
      feedbackOf(deps.store, signals.map((s) => s.id)),
      labelsFor(deps.store, signals.map((s) => s.subject)),
      lifecycle.current('account', signals.filter((s) => s.subject.type === 'account').map((s) => s.subject.id)),
      lifecycle.current('user', signals.filter((s) => s.subject.type === 'user').map((s) => s.subject.id)),
    ])
    return signals.map((signal) => ({
      signal,
      feedback: feedback.get(signal.id) ?? [],
      label: labels.get(`${signal.subject.type}:${signal.subject.id}`),
      stage: (signal.subject.type === 'account' ? accountStages : userStages).get(signal.subject.id)?.stage,
    }))
  }

  app.get('/', page, async (c) => {
    const q = InboxQuery.parse(c.req.query())
    const filters = { kind: q.kind, rule_id: q.rule_id, stage: q.stage, status: q.status }
    const [result, rules] = await Promise.all([
      inboxSignals(deps.store, { ...filters, before: q.before, limit: INBOX_PAGE }, lifecycle.first),
      listRules(deps.store),
    ])
    const views = await signalViews(result.data)
    return c.html(
      <InboxPage
        ctx={ctx(c)}
        now={now()}
        filters={filters}
        views={views}
        rules={rules.map((r) => r.id)}
        stages={stages}
        next={result.next}
        flash={c.req.query('done')}
      />,
    )
  })

  /** The rows of signals newer than `after` (or the given ids) that match the inbox's filters: what the live inbox inserts. */
  app.get('/inbox/rows', page, async (c) => {
    const q = InboxQuery.parse(c.req.query())
    const filters = { kind: q.kind, rule_id: q.rule_id, stage: q.stage, status: q.status }
    const result = await inboxSignals(deps.store, { ...filters, after: q.after, ids: q.ids, limit: INBOX_PAGE }, lifecycle.first)
    const views = await signalViews(result.data)
    const back = `/${new URLSearchParams(Object.entries(filters).filter(([, v]) => v) as [string, string][]).toString().replace(/^(?=.)/, '?')}`
    return c.html(<InboxList views={views} ctx={ctx(c)} now={now()} back={back} />)
  })

  /** The signal stream for the live inbox: the same stream as /v1/signals/stream, behind the session. */
  app.get('/live/signals', page, (c) => {
    const log = c.get('logger')
    return streamSSE(
      c,
      (stream) => streamSignals(stream, { store: deps.store, bus: deps.bus, hub, heartbeatMs: deps.config.STREAM_HEARTBEAT_MS }),
      async (err) => log?.warn({ err }, 'workspace signal stream ended by an error'),
    )
  })

  const by = (c: Context<Env>) => `workspace ${c.var.session?.role ?? ''}`.trim()

  app.post('/signals/:id/accept', change, async (c) => {
    const signal = await getSignal(deps.store, c.req.param('id'))
    if (!signal) throw new ApiError({ code: 'NOT_FOUND', message: `no signal ${c.req.param('id')}` })
    const form = await c.req.parseBody()
    const t = now()
    await lifecycle.setStage(signal.subject.type, signal.subject.id, 'sql', `accepted in the workspace (${signal.rule_id}, ${signal.id})`, t, by(c))
    await recordFeedback(deps.store, { signal_id: signal.id, verdict: 'useful', by: by(c) }, t)
    return c.redirect(localPath(form.back), 303)
  })

  app.post('/signals/:id/dismiss', change, async (c) => {
    const form = await c.req.parseBody()
    const reason = typeof form.reason === 'string' ? form.reason : ''
    if (!['not_a_fit', 'bad_timing', 'already_customer', 'wrong_signal'].includes(reason)) {
      throw new ApiError({ code: 'BAD_REQUEST', message: 'Choose why the signal is dismissed (not a fit, bad timing, already a customer, wrong signal).' })
    }
    await recordFeedback(deps.store, { signal_id: c.req.param('id'), verdict: 'not_useful', reason, by: by(c) }, now())
    return c.redirect(localPath(form.back), 303)
  })

  // ---- Rules

  app.get('/rules', page, async (c) => {
    const [rules, fires] = await Promise.all([listRules(deps.store), firesPerRule(deps.store, now(), 30)])
    return c.html(<RulesPage ctx={ctx(c)} rules={rules} fires={fires} now={now()} />)
  })

  const DAY = 86_400_000
  const isoDay = (ms: number) => new Date(ms).toISOString().slice(0, 10)

  async function rulePage(c: Context<Env>, id: string, editor: { source?: string; errors?: EditorError[]; errorMessage?: string; status?: number } = {}) {
    const [rule, versions] = await Promise.all([getRule(deps.store, id), listVersionSources(deps.store, id)])
    if (!rule || rule.deleted) throw new ApiError({ code: 'NOT_FOUND', message: `no rule ${id}` })
    const latest = versions.at(-1)
    const source = editor.source ?? (latest?.source || YAML.stringify(rule.rule))
    const q = c.req.query()
    const to = Date.parse(q.to ?? '') || now()
    const from = Date.parse(q.from ?? '') || to - 29 * DAY
    const view: BacktestView = { from: isoDay(from), to: isoDay(to) }
    if (q.backtest) {
      try {
        // One moment a day, the last one now (or the end of the last day chosen).
        const end = Math.min(Date.parse(`${isoDay(to)}T23:59:59.999Z`), now())
        const days = Math.max(0, Math.round((end - Date.parse(`${isoDay(from)}T23:59:59.999Z`)) / DAY))
        view.result = await backtest(deps.store, rule.rule, { from: end - days * DAY, to: end, step: DAY, version: rule.version })
        view.labels = await labelsFor(deps.store, view.result.fired.map((f) => f.subject))
      } catch (caught) {
        const err = toApiError(caught)
        view.error = err ? err.message : `The backtest failed: ${caught instanceof Error ? caught.message : caught}`
      }
    }
    const saved = q.saved ? (q.saved === 'unchanged' ? 'Nothing changed: the rule is the same as the current version.' : `Saved as version ${q.saved}.`) : undefined
    return c.html(
      <RulePage ctx={ctx(c)} now={now()} rule={rule} source={source} versions={versions} errors={editor.errors} errorMessage={editor.errorMessage} saved={saved} backtest={view} />,
      (editor.status ?? 200) as 200,
    )
  }

  app.get('/rules/:id', page, (c) => rulePage(c, checkRuleId(c.req.param('id'))))

  app.post('/rules/:id', change, async (c) => {
    const id = checkRuleId(c.req.param('id'))
    const form = await c.req.parseBody()
    const source = typeof form.source === 'string' ? form.source.replace(/\r\n/g, '\n') : ''
    try {
      const docs = parseRuleText(source, 'application/yaml')
      if (docs.length !== 1) throw new ApiError({ code: 'BAD_REQUEST', message: `A rule page saves one rule document; this text has ${docs.length}.` })
      const rule = validateRule(docs[0], id)
      const { stored, status } = await putRule(deps.store, rule, source, now())
      return c.redirect(`/rules/${encodeURIComponent(id)}?saved=${status === 'unchanged' ? 'unchanged' : stored.version}`, 303)
    } catch (caught) {
      const err = toApiError(caught)
      if (!err || err.status !== 400) throw caught
      const errors = (err.details ?? []).map((d) => ({ ...d, line: lineOfPath(source, d.path) }))
      return rulePage(c, id, { source, errors, errorMessage: err.message, status: 400 })
    }
  })

  // ---- Accounts and users

  const AccountsQuery = z.object({
    q: z.string().max(200).optional().catch(undefined),
    sort: z.enum(ACCOUNT_SORTS).catch('last_seen'),
    dir: z.enum(['asc', 'desc']).catch('desc'),
    offset: z.coerce.number().int().min(0).max(1_000_000).catch(0),
  })

  app.get('/accounts', page, async (c) => {
    const q = { ...AccountsQuery.parse(c.req.query()), limit: ACCOUNTS_PAGE }
    const t = now()
    const { rows, total } = await accountList(deps.store, q, lifecycle.first)
    const ids = rows.map((r) => r.id)
    const [usage, active] = await Promise.all([
      Promise.all(ids.map((id) => usagePerDay(deps.store, 'account', id, t))),
      activeUsers30d(deps.store, ids, t),
    ])
    const views = rows.map((r, i) => ({ ...r, usage: usage[i] ?? [], activeUsers: active.get(r.id) ?? 0 }))
    return c.html(<AccountsPage ctx={ctx(c)} now={t} query={q} rows={views} total={total} />)
  })

  /** The shaded baseline windows of the enabled churn rules with a baseline, for a subject type. */
  async function baselineBands(type: SubjectType, t: number) {
    const rules = (await listRules(deps.store)).filter((r) => r.enabled && r.rule.kind === 'churn_risk' && r.rule.subject === type)
    const bands: NonNullable<ChartSpec['bands']> = []
    const walk = (c: unknown, ruleId: string) => {
      if (!c || typeof c !== 'object') return
      const o = c as Record<string, unknown>
      for (const k of ['all', 'any']) if (Array.isArray(o[k])) for (const x of o[k] as unknown[]) walk(x, ruleId)
      const base = o.baseline as { window: string; offset?: string } | undefined
      if (base && typeof o.window === 'string') {
        const offset = parseDuration(base.offset ?? o.window)
        const end = t - offset
        bands.push({ from: isoDay(end - parseDuration(base.window)), to: isoDay(end), label: `${ruleId}: baseline, the ${base.window} before the last ${base.offset ?? o.window}` })
      }
    }
    for (const r of rules) walk(r.rule.when, r.id)
    return bands
  }

  for (const type of ['account', 'user'] as const) {
    app.get(`/${type}s/:id`, page, async (c) => {
      const id = c.req.param('id')
      const t = now()
      const profile = await subjectProfile(deps.store, lifecycle, type, id, t, USAGE_CHART_DAYS)
      if (!profile) throw new ApiError({ code: 'NOT_FOUND', message: `no ${type} ${id}` })
      const [labels, memberLabels, figures, bands, history] = await Promise.all([
        subjectLabels(deps.store, type, [id]),
        subjectLabels(deps.store, type === 'account' ? 'user' : 'account', profile.members.map((m) => m.id)),
        type === 'account' ? accountFigures(deps.store, id, t) : undefined,
        baselineBands(type, t),
        inboxSignals(deps.store, { subject: { type, id }, limit: 50 }, lifecycle.first),
      ])
      const views = await signalViews(history.data)
      return c.html(
        <SubjectPage
          ctx={ctx(c)}
          now={t}
          profile={profile}
          label={labels.get(id)}
          memberLabels={memberLabels}
          figures={figures}
          bands={bands}
          open={views.filter((v) => v.signal.status === 'open')}
          past={views.filter((v) => v.signal.status !== 'open')}
        />,
      )
    })
  }

  // ---- Funnel

  app.get('/funnel', page, async (c) => {
    const q = c.req.query()
    const type = q.subject_type === 'user' ? 'user' : 'account'
    const toDay = Date.parse(q.to ?? '') || now()
    const fromDay = Date.parse(q.from ?? '') || toDay - 89 * DAY
    const from = Date.parse(`${isoDay(fromDay)}T00:00:00Z`)
    const to = Math.min(Date.parse(`${isoDay(toDay)}T23:59:59.999Z`), now())
    if (from > to) throw new ApiError({ code: 'BAD_REQUEST', message: 'The period starts after it ends.' })
    const funnel = await lifecycle.funnel(type, from, to)
    return c.html(<FunnelPage ctx={ctx(c)} funnel={funnel} from={isoDay(from)} to={isoDay(to)} />)
  })

  // ---- Webhooks

  const webhooks = deps.delivery?.dispatcher.webhooks ?? new WebhookStore(deps.store, now)
  const outbox = deps.delivery?.dispatcher.outbox ?? new OutboxStore(deps.store)
  const refusal = targetRefusal(deps)

  async function webhooksPage(c: Context<Env>, extra: { created?: { url: string; secret: string }; error?: string; status?: number } = {}) {
    const list = await webhooks.list()
    const endpoints = await Promise.all(
      list.map(async (w) => {
        const [recent, dead] = await Promise.all([outbox.list(w.id, { limit: 10 }), outbox.list(w.id, { status: 'dead', limit: 20 })])
        return { webhook: publicWebhook(w), recent: recent.data, dead: dead.data }
      }),
    )
    const flash = c.req.query('replayed') ? `Delivery ${c.req.query('replayed')} is queued again.` : undefined
    return c.html(<WebhooksPage ctx={ctx(c)} now={now()} endpoints={endpoints} flash={flash} {...extra} />, (extra.status ?? 200) as 200)
  }

  app.get('/webhooks', page, (c) => webhooksPage(c))

  app.post('/webhooks', change, async (c) => {
    const form = await c.req.parseBody({ all: true })
    const kinds = ([] as unknown[]).concat(form.kinds ?? []).filter((k): k is string => typeof k === 'string')
    const input = WebhookInput.safeParse({ url: form.url, kinds, format: form.format === 'slack' ? 'slack' : 'json' })
    if (!input.success) {
      const d = zodDetails(input.error)[0]
      return webhooksPage(c, { error: `The endpoint was not created: ${d?.path}: ${d?.message}`, status: 400 })
    }
    const why = await refusal(input.data.url)
    if (why) return webhooksPage(c, { error: `The endpoint was not created: the URL is refused: ${why}`, status: 400 })
    const w = await webhooks.create(input.data)
    deps.delivery?.dispatcher.webhookChanged(w)
    // The secret is rendered in this answer only (never put in a URL or stored for the page).
    return webhooksPage(c, { created: { url: w.url, secret: w.secret }, status: 201 })
  })

  app.post('/deliveries/:id/replay', change, async (c) => {
    const d = await Dispatcher.requeue(webhooks, outbox, c.req.param('id'), now())
    deps.delivery?.dispatcher.enqueue(d)
    await deps.onDeliveryReplayed?.(d)
    return c.redirect(`/webhooks?replayed=${encodeURIComponent(d.id)}`, 303)
  })

  // ---- Events

  const EventsQueryWeb = z.object({
    subject_type: z.enum(['account', 'user']).optional().catch(undefined),
    subject_id: z.string().min(1).max(500).optional().catch(undefined),
    event: z.string().min(1).max(500).optional().catch(undefined),
    before: z.string().optional().catch(undefined),
    after: z.string().optional().catch(undefined),
  })

  app.get('/events', page, async (c) => {
    const q = EventsQueryWeb.parse(c.req.query())
    const filters = { subject_type: q.subject_type, subject_id: q.subject_id, event: q.event }
    const before = q.before ? decodeCursor(q.before) : undefined
    const [events, errors] = await Promise.all([listEvents(deps.store, { ...filters, before, limit: EVENTS_PAGE }), listIngestErrors(deps.store, { limit: 50 })])
    const rowsUrl = `/events/rows?${new URLSearchParams(Object.entries(filters).filter(([, v]) => v) as [string, string][])}`
    return c.html(<EventsPage ctx={ctx(c)} now={now()} filters={filters} events={events.data} next={events.next} errors={errors.data} rowsUrl={rowsUrl} />)
  })

  /** Events newer than `after`, oldest of them last: what the open debugger prepends. */
  app.get('/events/rows', page, async (c) => {
    const q = EventsQueryWeb.parse(c.req.query())
    const after = q.after ? decodeCursor(q.after) : undefined
    if (!after) return c.html('')
    const events = await listEvents(deps.store, { subject_type: q.subject_type, subject_id: q.subject_id, event: q.event, after, limit: EVENTS_PAGE })
    return c.html(<EventRows events={events.data} now={now()} />)
  })

  return app
}

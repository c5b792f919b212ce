import { z } from 'zod'
import { ApiError } from '../errors.js'
import { SignalKind } from '../signals.js'
import type { Store } from '../store/store.js'
import { newWebhookId, newWebhookSecret, nextVersion } from './ids.js'
import { WebhookFormat } from './payload.js'
import { chTime, isoFromCh, msFromCh } from '../time.js'

/** How long the previous secret keeps signing after a rotation. */
export const SECRET_GRACE_MS = 24 * 3_600_000

const HttpUrl = z
  .url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' })
  .max(2048, 'must be at most 2048 characters')

export const WebhookInput = z.strictObject({
  url: HttpUrl,
  description: z.string().max(500).default(''),
  /** Only signals of these kinds (none: every kind). */
  kinds: z.array(SignalKind).max(16).default([]),
  /** Only signals of these rules (none: every rule). */
  rule_ids: z.array(z.string().min(1).max(200)).max(1000).default([]),
  format: WebhookFormat.default('json'),
  enabled: z.boolean().default(true),
})
export type WebhookInput = z.input<typeof WebhookInput>

export const WebhookPatch = z.strictObject({
  url: HttpUrl.optional(),
  description: z.string().max(500).optional(),
  kinds: z.array(SignalKind).max(16).optional(),
  rule_ids: z.array(z.string().min(1).max(200)).max(1000).optional(),
  format: WebhookFormat.optional(),
  enabled: z.boolean().optional(),
})
export type WebhookPatch = z.input<typeof WebhookPatch>

/** An endpoint as the API shows it (never with its secret, which is shown on create and rotation only). */
export const Webhook = z.object({
  id: z.string(),
  url: z.string(),
  description: z.string(),
  kinds: z.array(SignalKind),
  rule_ids: z.array(z.string()),
  format: WebhookFormat,
  enabled: z.boolean(),
  created_at: z.iso.datetime(),
  updated_at: z.iso.datetime(),
})
export type Webhook = z.infer<typeof Webhook>

/** The endpoint with what signing needs: the current secret, and the previous one during its grace period. */
export type WebhookRecord = Webhook & {
  secret: string
  previous_secret: string
  previous_secret_until: number | null
  deleted: boolean
  /** Signal events from this time (ms) on are delivered: creation, or the last re-enabling. */
  active_since: number
}

type Row = {
  id: string
  url: string
  description: string
  kinds: string[]
  rule_ids: string[]
  format: string
  enabled: boolean
  secret: string
  previous_secret: string
  previous_secret_until: string | null
  created_at: string
  updated_at: string
  active_since: string
  deleted: boolean
  version?: number
}

const COLUMNS = 'id, url, description, kinds, rule_ids, format, enabled, secret, previous_secret, previous_secret_until, created_at, updated_at, active_since, deleted'

function fromRow(r: Row): WebhookRecord {
  return {
    ...Webhook.parse({ ...r, created_at: isoFromCh(r.created_at), updated_at: isoFromCh(r.updated_at), enabled: Boolean(r.enabled) }),
    secret: r.secret,
    previous_secret: r.previous_secret,
    previous_secret_until: r.previous_secret_until ? msFromCh(r.previous_secret_until) : null,
    deleted: Boolean(r.deleted),
    active_since: msFromCh(r.active_since),
  }
}

function toRow(w: WebhookRecord) {
  return {
    id: w.id,
    url: w.url,
    description: w.description,
    kinds: w.kinds,
    rule_ids: w.rule_ids,
    format: w.format,
    enabled: w.enabled,
    secret: w.secret,
    previous_secret: w.previous_secret,
    previous_secret_until: w.previous_secret_until === null ? null : chTime(w.previous_secret_until),
    created_at: chTime(Date.parse(w.created_at)),
    updated_at: chTime(Date.parse(w.updated_at)),
    active_since: chTime(w.active_since),
    deleted: w.deleted,
    version: nextVersion(),
  }
}

/** The public view of an endpoint. */
export const publicWebhook = (w: WebhookRecord): Webhook => Webhook.parse(w)

/** The secrets that sign at `now`: the current one, and the previous one until its grace ends. */
export function signingSecrets(w: WebhookRecord, now: number): string[] {
  return w.previous_secret && w.previous_secret_until !== null && now < w.previous_secret_until ? [w.secret, w.previous_secret] : [w.secret]
}

/** Whether a signal of this kind and rule goes to this endpoint. */
export function webhookWants(w: Pick<Webhook, 'kinds' | 'rule_ids'>, kind: string, ruleId: string): boolean {
  return (w.kinds.length === 0 || (w.kinds as string[]).includes(kind)) && (w.rule_ids.length === 0 || w.rule_ids.includes(ruleId))
}

/** Endpoints in the store (ReplacingMergeTree read with FINAL), one function per query. */
export class WebhookStore {
  constructor(
    private readonly store: Store,
    private readonly now: () => number = Date.now,
  ) {}

  async list(opts: { includeDeleted?: boolean } = {}): Promise<WebhookRecord[]> {
    const rows = await this.store.query<Row>(
      `SELECT ${COLUMNS} FROM webhooks_v1 FINAL WHERE deleted = 0 OR {all:Bool} ORDER BY id`,
      { all: opts.includeDeleted ?? false },
    )
    return rows.map(fromRow)
  }

  async find(id: string): Promise<WebhookRecord | undefined> {
    const rows = await this.store.query<Row>(`SELECT ${COLUMNS} FROM webhooks_v1 FINAL WHERE id = {id:String} AND deleted = 0`, { id })
    return rows[0] ? fromRow(rows[0]) : undefined
  }

  async get(id: string): Promise<WebhookRecord> {
    const found = await this.find(id)
    if (!found) throw new ApiError({ code: 'NOT_FOUND', message: `no webhook ${id}` })
    return found
  }

  async create(input: z.output<typeof WebhookInput>): Promise<WebhookRecord> {
    const now = this.now()
    const at = new Date(now).toISOString()
    const w: WebhookRecord = {
      id: newWebhookId(),
      ...input,
      created_at: at,
      updated_at: at,
      secret: newWebhookSecret(),
      previous_secret: '',
      previous_secret_until: null,
      deleted: false,
      active_since: now,
    }
    await this.store.insert('webhooks_v1', [toRow(w)])
    return w
  }

  async update(id: string, patch: z.output<typeof WebhookPatch>): Promise<WebhookRecord> {
    const current = await this.get(id)
    const defined = Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined))
    const now = this.now()
    const next: WebhookRecord = { ...current, ...defined, updated_at: new Date(now).toISOString() }
    if (next.enabled && !current.enabled) next.active_since = now
    await this.store.insert('webhooks_v1', [toRow(next)])
    return next
  }

  async rotateSecret(id: string): Promise<WebhookRecord> {
    const current = await this.get(id)
    const now = this.now()
    const next: WebhookRecord = {
      ...current,
      secret: newWebhookSecret(),
      previous_secret: current.secret,
      previous_secret_until: now + SECRET_GRACE_MS,
      updated_at: new Date(now).toISOString(),
    }
    await this.store.insert('webhooks_v1', [toRow(next)])
    return next
  }

  async remove(id: string): Promise<WebhookRecord> {
    const current = await this.get(id)
    const next: WebhookRecord = { ...current, enabled: false, deleted: true, updated_at: new Date(this.now()).toISOString() }
    await this.store.insert('webhooks_v1', [toRow(next)])
    return next
  }
}

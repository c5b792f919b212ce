import {
  type AliasParams,
  Analytics,
  type GroupParams,
  type IdentifyParams,
  type PageParams,
  type TrackParams,
} from '@segment/analytics-node'
import { createParser } from 'eventsource-parser'
import { Webhook, WebhookVerificationError } from 'standardwebhooks'
// Types only (erased at run time): inferred from the server's own zod schemas, never copied.
import type { WebhookPayload } from '../../src/delivery/payload.js'
import type { Reason, Signal, SignalEvent, SignalEventType, SignalKind } from '../../src/signals.js'
import type { Rule } from '../../rules/schema.js'

export type { Reason, Rule, Signal, SignalEvent, SignalEventType, SignalKind }
/** The body of a signed `json` webhook: `{type, timestamp, data: Signal}`. */
export type WebhookEvent = WebhookPayload
export type { AliasParams, GroupParams, IdentifyParams, PageParams, TrackParams }
export { WebhookVerificationError }

export type SignalboxOptions = {
  /** Base URL of the signalbox service, e.g. `https://signals.example.com`. */
  host: string
  /** A write key: sends events (and can do nothing else). */
  writeKey?: string
  /** A read token (READ_TOKENS) or the admin token: reads the live signal stream. */
  readToken?: string
  /** Passed to `@segment/analytics-node` (batching, retries): `flushAt`, `flushInterval`, `maxRetries`, … */
  analytics?: { flushAt?: number; flushInterval?: number; maxRetries?: number; httpRequestTimeout?: number }
  /** The fetch used by `subscribe` (default: the global one). */
  fetch?: typeof fetch
}

export type SubscribeOptions = {
  /** Only signals of these kinds (default: all). */
  kinds?: readonly SignalKind[]
  /** Start after this event id (e.g. the last one a previous process handled); default: live only. */
  lastEventId?: string
  /** Called each time the stream is connected (first connection and every reconnection). */
  onOpen?: () => void
  /** Connection problems and handler errors; the subscription keeps reconnecting unless the server refused it (401/403/400). */
  onError?: (err: Error) => void
  /** Reconnection delay: starts here, doubles per failed attempt… */
  minRetryMs?: number
  /** …up to this. */
  maxRetryMs?: number
}

export type Unsubscribe = () => void

/** The server refused the subscription (bad token, bad filter): retrying would not help. */
export class SubscriptionRefusedError extends Error {
  override name = 'SubscriptionRefusedError'
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

/**
 * The signalbox client: `track/identify/group/page/alias` through `@segment/analytics-node`
 * (its batching, retries and flush; signalbox speaks the Segment API), `subscribe` to live
 * signals, and `verifyWebhook` (also exported on its own) for receivers of signed webhooks.
 */
export class Signalbox {
  readonly host: string
  readonly #analytics: Analytics | undefined
  readonly #readToken: string | undefined
  readonly #fetch: typeof fetch
  readonly #subscriptions = new Set<Unsubscribe>()

  constructor(opts: SignalboxOptions) {
    this.host = opts.host.replace(/\/+$/, '')
    this.#readToken = opts.readToken
    this.#fetch = opts.fetch ?? globalThis.fetch
    this.#analytics = opts.writeKey ? new Analytics({ writeKey: opts.writeKey, host: this.host, ...opts.analytics }) : undefined
  }

  /** The underlying Segment client (events: `error`, `http_request`, …). */
  get analytics(): Analytics {
    if (!this.#analytics) throw new Error('signalbox: sending events needs a writeKey')
    return this.#analytics
  }

  track(params: TrackParams): void {
    this.analytics.track(params)
  }

  identify(params: IdentifyParams): void {
    this.analytics.identify(params)
  }

  group(params: GroupParams): void {
    this.analytics.group(params)
  }

  page(params: PageParams): void {
    this.analytics.page(params)
  }

  alias(params: AliasParams): void {
    this.analytics.alias(params)
  }

  /** Send what is queued now. */
  async flush(): Promise<void> {
    await this.#analytics?.flush()
  }

  /** Flush queued events, end every subscription, and stop. */
  async close(opts: { timeout?: number } = {}): Promise<void> {
    for (const unsubscribe of [...this.#subscriptions]) unsubscribe()
    await this.#analytics?.closeAndFlush({ timeout: opts.timeout })
  }

  /**
   * Receive signals live (server-sent events from `GET /v1/signals/stream`). On a disconnect it
   * reconnects with backoff and resumes after the last event it handled (`Last-Event-ID`), so no
   * signal is missed or handled twice. Returns the function that ends the subscription.
   */
  subscribe(opts: SubscribeOptions, handler: (event: SignalEvent) => void | Promise<void>): Unsubscribe {
    if (!this.#readToken) throw new Error('signalbox: subscribe needs a readToken (or the admin token)')
    const token = this.#readToken
    const abort = new AbortController()
    const minRetry = opts.minRetryMs ?? 250
    const maxRetry = opts.maxRetryMs ?? 10_000
    const report = (err: unknown) => opts.onError?.(err instanceof Error ? err : new Error(String(err)))
    let lastId = opts.lastEventId
    const seen = new Set<string>()
    const query = opts.kinds?.length ? `?kinds=${encodeURIComponent(opts.kinds.join(','))}` : ''

    const connect = async () => {
      const res = await this.#fetch(`${this.host}/v1/signals/stream${query}`, {
        headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream', ...(lastId ? { 'last-event-id': lastId } : {}) },
        signal: abort.signal,
      })
      if (!res.ok || !res.body) {
        const text = await res.text().catch(() => '')
        const message = `signalbox: the stream answered ${res.status}: ${text.slice(0, 300)}`
        if (res.status === 400 || res.status === 401 || res.status === 403) throw new SubscriptionRefusedError(res.status, message)
        throw new Error(message)
      }
      opts.onOpen?.()
      // Events are handled one at a time, in order; the last id moves only once a handler is done.
      let chain = Promise.resolve()
      const parser = createParser({
        onEvent: (m) => {
          if (!m.id || (m.event !== 'signal.fired' && m.event !== 'signal.resolved')) return
          const id = m.id
          const event = JSON.parse(m.data) as SignalEvent
          chain = chain.then(async () => {
            if (seen.has(id) || abort.signal.aborted) return
            try {
              await handler(event)
            } catch (err) {
              report(err)
            }
            seen.add(id)
            if (seen.size > 10_000) seen.delete(seen.values().next().value as string)
            lastId = id
          })
        },
      })
      const reader = res.body.pipeThrough(new TextDecoderStream() as unknown as TransformStream<Uint8Array, string>).getReader()
      try {
        for (;;) {
          const { done, value } = await reader.read()
          if (done) break
          parser.feed(value)
        }
      } finally {
        await chain
      }
    }

    const run = async () => {
      let delay = minRetry
      while (!abort.signal.aborted) {
        const started = Date.now()
        try {
          await connect()
          if (abort.signal.aborted) return
          report(new Error('signalbox: the stream ended; reconnecting'))
        } catch (err) {
          if (abort.signal.aborted) return
          report(err)
          if (err instanceof SubscriptionRefusedError) return
        }
        // A connection that lasted a while starts the backoff over.
        if (Date.now() - started > maxRetry) delay = minRetry
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, delay)
          abort.signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true })
        })
        delay = Math.min(maxRetry, delay * 2)
      }
    }

    const unsubscribe = () => {
      abort.abort()
      this.#subscriptions.delete(unsubscribe)
    }
    this.#subscriptions.add(unsubscribe)
    void run()
    return unsubscribe
  }
}

type HeaderBag = Headers | Record<string, string | string[] | undefined>

function headerRecord(headers: HeaderBag): Record<string, string> {
  const out: Record<string, string> = {}
  if (typeof (headers as Headers).forEach === 'function' && typeof (headers as Headers).get === 'function') {
    ;(headers as Headers).forEach((v, k) => {
      out[k.toLowerCase()] = v
    })
    return out
  }
  for (const [k, v] of Object.entries(headers as Record<string, string | string[] | undefined>)) {
    if (v !== undefined) out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v
  }
  return out
}

/**
 * Verify a signed webhook (Standard Webhooks: `webhook-id`, `webhook-timestamp`,
 * `webhook-signature`) against the endpoint's secret, on the raw body exactly as received.
 * Returns the typed event `{type, timestamp, data: Signal}`; throws `WebhookVerificationError`
 * if the signature does not match or the timestamp is more than 5 minutes off.
 */
export function verifyWebhook(body: string | Buffer | Uint8Array, headers: HeaderBag, secret: string): WebhookEvent {
  const raw = typeof body === 'string' ? body : Buffer.from(body)
  const payload = new Webhook(secret).verify(raw, headerRecord(headers)) as Partial<WebhookEvent> | undefined
  if (
    !payload ||
    (payload.type !== 'signal.fired' && payload.type !== 'signal.resolved') ||
    typeof payload.timestamp !== 'string' ||
    typeof payload.data?.id !== 'string' ||
    !Array.isArray(payload.data.reasons)
  ) {
    // Signed by the secret, but not a signal event (e.g. an endpoint in the Slack format).
    throw new WebhookVerificationError('the payload is not a signal event')
  }
  return payload as WebhookEvent
}

/** `verifyWebhook` for a fetch-style `Request` (Hono, Next.js route handlers, Workers, …). */
export async function verifyWebhookRequest(request: Request, secret: string): Promise<WebhookEvent> {
  return verifyWebhook(await request.text(), request.headers, secret)
}

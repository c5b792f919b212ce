import { Webhook } from 'standardwebhooks'

/**
 * The Standard Webhooks headers for one attempt. The id stays the same across the attempts of a
 * delivery; the timestamp is the attempt's (receivers reject stale ones). Each secret adds a
 * signature, so during a rotation both the new and the old secret verify.
 */
export function signatureHeaders(opts: { id: string; at: number; body: string; secrets: readonly string[] }) {
  const when = new Date(opts.at)
  const signatures = opts.secrets.map((secret) => new Webhook(secret).sign(opts.id, when, opts.body))
  return {
    'webhook-id': opts.id,
    'webhook-timestamp': String(Math.floor(opts.at / 1000)),
    'webhook-signature': signatures.join(' '),
  }
}

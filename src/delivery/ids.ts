import { randomBytes } from 'node:crypto'
import { decodeTime, encodeTime, ulid } from 'ulid'
import { sha256 } from '../hash.js'

const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/
const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'

export const newWebhookId = () => `wh_${ulid()}`

/** `whsec_` + base64 of 32 random bytes: the form the `standardwebhooks` library reads. */
export const newWebhookSecret = () => `whsec_${randomBytes(32).toString('base64')}`

/**
 * The id of the delivery of one signal event to one endpoint, and its `webhook-id` header. It is
 * derived from the pair (a ULID whose time is the event's and whose randomness is a hash of both
 * ids), so a delivery row re-created after a crash, or by a re-scan of the log, has the same id
 * and the receiver can still deduplicate on it.
 */
export function deliveryIdFor(webhookId: string, eventId: string): string {
  const time = ulidPart(eventId).slice(0, 10)
  const hash = sha256(`${webhookId}\u0000${eventId}`)
  let random = ''
  for (let i = 0; i < 16; i++) random += CROCKFORD[(hash[i] as number) & 31]
  return `dlv_${time}${random}`
}

/** The ULID of a prefixed id (`evt_01J…` → `01J…`). */
export function ulidPart(id: string): string {
  const u = id.slice(id.indexOf('_') + 1)
  if (!ULID.test(u)) throw new Error(`not a prefixed ULID: ${id}`)
  return u
}

/** The time (ms) a prefixed ULID id was made. */
export const idTime = (id: string) => decodeTime(ulidPart(id))

/** The smallest event id of a millisecond: every event id made at or after `ms` sorts after it. */
export const eventIdFloor = (ms: number) => `evt_${encodeTime(Math.max(0, ms), 10)}${'0'.repeat(16)}`

let lastVersion = 0
/**
 * Row versions for ReplacingMergeTree tables: strictly increasing within the process and, being
 * wall-clock microseconds, larger than any version written before a restart.
 */
export function nextVersion(): number {
  lastVersion = Math.max(lastVersion + 1, Date.now() * 1000)
  return lastVersion
}

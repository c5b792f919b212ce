import { z } from 'zod'
import { SignalEvent } from '../signals.js'

/** The body of a `json` webhook (the Standard Webhooks shape): the signal event without its log id. */
export const WebhookPayload = SignalEvent.omit({ id: true })
export type WebhookPayload = z.infer<typeof WebhookPayload>

export const WebhookFormat = z.enum(['json', 'slack'])
export type WebhookFormat = z.infer<typeof WebhookFormat>

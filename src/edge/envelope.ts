import { z } from 'zod'
import type { EventRow } from '../../ingest/normalize.js'
import type { IngestErrorRow } from '../../ingest/writer.js'

/**
 * What travels on the ingestion queue: rows already validated and normalised by the same code as
 * on Node (ingest/routes.ts), so the consumer only stores them. `id` names the message for the
 * consumer's insert deduplication token; it is stable across redeliveries.
 */
export const ENVELOPE_VERSION = 1

const time = z.string().regex(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?$/, 'must be a ClickHouse DateTime64 text')

export const EventRowSchema = z.object({
  source: z.string(),
  message_id: z.string(),
  type: z.string(),
  event: z.string(),
  user_id: z.string(),
  anonymous_id: z.string(),
  account_id: z.string(),
  timestamp: time,
  original_timestamp: time.nullable(),
  sent_at: time.nullable(),
  received_at: time,
  properties: z.string(),
  traits: z.string(),
  context: z.string(),
  previous_id: z.string(),
}) satisfies z.ZodType<EventRow>

export const IngestErrorRowSchema = z.object({
  id: z.string(),
  received_at: time,
  source: z.string(),
  level: z.enum(['error', 'warning']),
  route: z.string(),
  batch_index: z.number().int(),
  message_id: z.string(),
  path: z.string(),
  message: z.string(),
  payload: z.string(),
}) satisfies z.ZodType<IngestErrorRow>

export const IngestEnvelope = z.object({
  v: z.literal(ENVELOPE_VERSION),
  id: z.string().regex(/^qm_[0-9A-HJKMNP-TV-Z]{26}$/),
  events: z.array(EventRowSchema),
  errors: z.array(IngestErrorRowSchema),
})
export type IngestEnvelope = z.infer<typeof IngestEnvelope>

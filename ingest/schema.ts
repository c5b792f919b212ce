import { z } from 'zod'

/** Segment's limits, as its own libraries expect them. */
export const LIMITS = {
  requestBytes: 500 * 1024,
  messageBytes: 32 * 1024,
  batchMessages: 2500,
} as const

export const MESSAGE_TYPES = ['track', 'identify', 'group', 'page', 'screen', 'alias'] as const
export type MessageType = (typeof MESSAGE_TYPES)[number]

/** Ids may be sent as numbers by some libraries; they are stored as text. */
const id = z.union([z.string().min(1, 'must not be empty').max(1024), z.number().transform(String)])
const time = z.iso.datetime({ offset: true, local: true, message: 'must be an ISO-8601 date-time' })
const dict = z.record(z.string(), z.unknown())

const common = {
  messageId: z.string().min(1, 'must not be empty').max(256).optional(),
  userId: id.nullish(),
  anonymousId: id.nullish(),
  timestamp: time.optional(),
  originalTimestamp: time.optional(),
  sentAt: time.optional(),
  context: dict.optional(),
  integrations: dict.optional(),
}

function who(msg: { userId?: string | null; anonymousId?: string | null }, ctx: z.RefinementCtx) {
  if (!msg.userId && !msg.anonymousId) {
    ctx.addIssue({ code: 'custom', path: ['userId'], message: 'userId or anonymousId is required' })
  }
}

export const TrackMessage = z
  .looseObject({ ...common, type: z.literal('track'), event: z.string().min(1, 'must not be empty').max(512), properties: dict.optional() })
  .superRefine(who)
export const IdentifyMessage = z.looseObject({ ...common, type: z.literal('identify'), traits: dict.optional() }).superRefine(who)
export const GroupMessage = z
  .looseObject({ ...common, type: z.literal('group'), groupId: id, traits: dict.optional() })
  .superRefine(who)
const view = { name: z.string().max(512).nullish(), category: z.string().max(512).nullish(), properties: dict.optional() }
export const PageMessage = z.looseObject({ ...common, type: z.literal('page'), ...view }).superRefine(who)
export const ScreenMessage = z.looseObject({ ...common, type: z.literal('screen'), ...view }).superRefine(who)
export const AliasMessage = z.looseObject({ ...common, type: z.literal('alias'), previousId: id, userId: id })

export const MessageSchemas = {
  track: TrackMessage,
  identify: IdentifyMessage,
  group: GroupMessage,
  page: PageMessage,
  screen: ScreenMessage,
  alias: AliasMessage,
} as const

export type Message =
  | z.output<typeof TrackMessage>
  | z.output<typeof IdentifyMessage>
  | z.output<typeof GroupMessage>
  | z.output<typeof PageMessage>
  | z.output<typeof ScreenMessage>
  | z.output<typeof AliasMessage>

/** The envelope of `/v1/batch`; the messages are validated one by one, so one bad one rejects only itself. */
export const BatchBody = z.looseObject({
  batch: z.array(z.unknown(), 'must be an array of messages'),
  writeKey: z.string().optional(),
  sentAt: time.optional(),
  context: dict.optional(),
})

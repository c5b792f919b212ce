import { describe, expect, it } from 'vitest'
import type { EventRow } from '../ingest/normalize.js'
import type { IngestErrorRow } from '../ingest/writer.js'
import { IngestEnvelope } from '../src/edge/envelope.js'
import { packCalls, packMessages, QUEUE_LIMITS, QueueSink } from '../src/edge/queue-sink.js'
import { StoreUnavailableError } from '../src/errors.js'

const at = '2026-11-23 10:00:00.000'
const event = (i: number, extra = ''): EventRow => ({
  source: 'web', message_id: `m${i}`, type: 'track', event: 'Clicked', user_id: `u${i}`, anonymous_id: '', account_id: 'acme',
  timestamp: at, original_timestamp: null, sent_at: null, received_at: at, properties: JSON.stringify({ extra }), traits: '{}', context: '{}', previous_id: '',
})
const errorRow = (payload: string): IngestErrorRow => ({
  id: 'ierr_1', received_at: at, source: 'web', level: 'error', route: '/v1/batch', batch_index: 3, message_id: 'm3', path: '(message)', message: 'is too large', payload,
})
const bytes = (x: unknown) => new TextEncoder().encode(JSON.stringify(x)).length

/** A queue that records what it is sent and applies Cloudflare's limits, like the platform. */
function recordingQueue(fail?: (call: number) => boolean) {
  const calls: { body: unknown; contentType?: string }[][] = []
  return {
    calls,
    async sendBatch(messages: Iterable<{ body: unknown; contentType?: string }>) {
      const list = [...messages]
      calls.push(list)
      if (fail?.(calls.length)) throw new Error('Queue sendBatch failed: overloaded')
      if (list.length > 100) throw new Error('too many messages')
      if (list.some((m) => bytes(m.body) > 128_000)) throw new Error('message too large')
      if (list.reduce((n, m) => n + bytes(m.body), 0) > 256_000) throw new Error('batch too large')
      return { metadata: { metrics: { backlogCount: 0, backlogBytes: 0 } } }
    },
  }
}

describe('QueueSink (accepted rows onto a Cloudflare Queue)', () => {
  it('packs rows into envelopes under the per-message limit, in order, events first', () => {
    const events = Array.from({ length: 300 }, (_, i) => event(i, 'x'.repeat(1000)))
    const messages = packMessages({ events, errors: [errorRow('{}')] })
    expect(messages.length).toBeGreaterThan(2)
    for (const m of messages) {
      expect(IngestEnvelope.parse(m.row)).toEqual(m.row)
      // The size counted is the size sent (a comma or two more at most: on the safe side).
      expect(m.bytes - bytes(m.row)).toBeGreaterThanOrEqual(0)
      expect(m.bytes - bytes(m.row)).toBeLessThanOrEqual(2)
      expect(m.bytes).toBeLessThanOrEqual(QUEUE_LIMITS.messageBytes)
    }
    expect(messages.flatMap((m) => m.row.events.map((e) => e.message_id))).toEqual(events.map((e) => e.message_id))
    expect(messages.at(-1)?.row.errors).toHaveLength(1)
    expect(new Set(messages.map((m) => m.row.id)).size).toBe(messages.length)
  })

  it('groups envelopes into sendBatch calls of at most 100 messages and the byte limit', () => {
    const sized = (n: number, size: number) => Array.from({ length: n }, (_, i) => ({ row: i, bytes: size }))
    expect(packCalls(sized(250, 10)).map((c) => c.length)).toEqual([100, 100, 50])
    expect(packCalls(sized(5, 100_000)).map((c) => c.length)).toEqual([2, 2, 1])
    expect(packCalls(sized(0, 1))).toEqual([])
  })

  it('cuts the copy of a huge rejected message to fit, keeping the reason', () => {
    const [m] = packMessages({ events: [], errors: [errorRow(JSON.stringify({ blob: '€'.repeat(60_000) }))] })
    const row = m?.row.errors[0] as IngestErrorRow
    expect(m?.bytes).toBeLessThanOrEqual(QUEUE_LIMITS.messageBytes)
    expect(row.payload).toMatch(/…\[cut to fit a queue message\]$/)
    expect(row).toMatchObject({ path: '(message)', message: 'is too large', batch_index: 3 })
  })

  it('resolves once the queue accepted every call of a large write, sent as JSON', async () => {
    const q = recordingQueue()
    const events = Array.from({ length: 2500 }, (_, i) => event(i, 'y'.repeat(150)))
    await new QueueSink(q).write({ events, errors: [] })
    expect(q.calls.length).toBeGreaterThan(1)
    const sent = q.calls.flat()
    expect(sent.every((m) => m.contentType === 'json')).toBe(true)
    expect(sent.flatMap((m) => (m.body as IngestEnvelope).events.map((e) => e.message_id))).toEqual(events.map((e) => e.message_id))
  })

  it('rejects (a 503 for the client) when any call is refused, so nothing is acknowledged unstored', async () => {
    const q = recordingQueue((call) => call === 2)
    const events = Array.from({ length: 2500 }, (_, i) => event(i, 'y'.repeat(150)))
    const write = new QueueSink(q).write({ events, errors: [] })
    await expect(write).rejects.toBeInstanceOf(StoreUnavailableError)
    await expect(write).rejects.toMatchObject({ status: 503, message: expect.stringMatching(/overloaded/) })
  })
})

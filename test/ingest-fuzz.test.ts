import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { faultyStore } from './faults.js'
import { startTestServer, type TestServer } from './harness.js'

// Property-based fuzzing of the tracking API, over real HTTP against the real service on the
// embedded engine: arbitrary Segment messages and batches (any JSON, any unicode including lone
// surrogates and NUL, deep nesting, huge numbers, oversized strings, wrong types).
// CI runs a fixed seed and a bounded number of bodies; `npm run fuzz` runs many more, from a random
// seed (FUZZ_SEED=random); a failure prints the seed and path that reproduce it
// (FUZZ_SEED=<seed> npx vitest run test/ingest-fuzz.test.ts).

const SEED = process.env.FUZZ_SEED === 'random' ? Date.now() % 2 ** 31 : Number(process.env.FUZZ_SEED ?? 15_2026)
const RUNS = Number(process.env.FUZZ_RUNS ?? 80)
const TIMEOUT = Math.max(60_000, RUNS * 500)

let sb: TestServer
let fault: ReturnType<typeof faultyStore>
const store = () => sb.server.store
beforeAll(async () => {
  sb = await startTestServer({ INGEST_FLUSH_MS: '2', RATE_LIMIT_PER_SECOND: '0', READY_INTERVAL_MS: '300' }, { wrapStore: (s) => (fault = faultyStore(s)).store })
})
afterAll(async () => {
  await sb?.stop()
})

// --- arbitraries ----------------------------------------------------------------------------

/** Any UTF-16 unit a JSON text can carry: printable, control characters and NUL, astral pairs, lone surrogates. */
const unit = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 0x1f }).map((c) => String.fromCharCode(c)) },
  { weight: 2, arbitrary: fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)) },
  { weight: 1, arbitrary: fc.constantFrom('"', '\\', '\u2028', '\ufeff', '\ufffd') },
)
const text = (maxLength = 24) => fc.string({ unit, maxLength })

/** A literal placed verbatim in the body: numbers a double cannot hold exactly, or at all. */
const HUGE = ['9007199254740993', '-9223372036854775813', '18446744073709551621', '1e309', '-1e400', '1e-400', '123456789012345678901234567890.5', '0.1000000000000000055511151231257827']
const hugeNumber = fc.constantFrom(...HUGE.map((_, i) => `__HUGE_${i}__`))

/** Any JSON value, with keys and strings from `text`, the huge literals, and nesting to `depth`. */
const jsonValue = (depth: number): fc.Arbitrary<unknown> =>
  fc.letrec((tie) => ({
    value: fc.oneof(
      { depthSize: 'small', maxDepth: depth },
      text(),
      fc.double(),
      fc.integer(),
      fc.boolean(),
      fc.constant(null),
      hugeNumber,
      fc.array(tie('value'), { maxLength: 4 }),
      fc.dictionary(text(8), tie('value'), { maxKeys: 4 }),
    ),
  })).value

/** `levels` arrays inside each other: deeper than any message may nest. */
const deep = fc.integer({ min: 63, max: 1500 }).map((levels) => `__DEEP_${levels}__`)

const TYPES = ['track', 'identify', 'group', 'page', 'screen', 'alias'] as const

/** A message every schema accepts, with a messageId unique to this body. */
const goodMessage = (id: string) =>
  fc.record({
    type: fc.constantFrom(...TYPES),
    userId: fc.oneof(text(12).map((s) => `u-${s}`), fc.integer({ min: 1 })),
    properties: fc.dictionary(text(8), jsonValue(3), { maxKeys: 5 }),
    traits: fc.dictionary(text(8), jsonValue(3), { maxKeys: 5 }),
    context: fc.option(fc.record({ groupId: text(8).map((s) => `acc-${s}`) }), { nil: undefined }),
    suffix: text(8),
  }).map(({ type, userId, properties, traits, context, suffix }) => ({
    type,
    messageId: `${id}${suffix}`,
    userId,
    ...(type === 'track' ? { event: `Fuzzed ${suffix}` } : {}),
    ...(type === 'group' ? { groupId: `g-${suffix}` } : {}),
    ...(type === 'alias' ? { previousId: `anon-${suffix}` } : {}),
    ...(type === 'identify' || type === 'group' ? { traits } : { properties }),
    ...(context ? { context } : {}),
  }))

/** Anything at all in a message's place: wrong types, missing fields, deep or oversized values. */
const anyMessage = (id: string) =>
  fc.oneof(
    jsonValue(3),
    fc.record(
      {
        type: fc.oneof(fc.constantFrom(...TYPES), text(6), fc.integer()),
        messageId: fc.oneof(text(10).map((s) => `${id}${s}`), fc.integer(), fc.constant(''), fc.constant(null)),
        userId: fc.oneof(text(10), fc.integer(), hugeNumber, fc.constant(null), fc.array(fc.integer(), { maxLength: 2 })),
        anonymousId: text(10),
        event: fc.oneof(text(10), fc.integer(), fc.constant('')),
        groupId: fc.oneof(text(6), hugeNumber),
        previousId: text(6),
        timestamp: fc.oneof(fc.date({ noInvalidDate: true }).map((d) => d.toISOString()), text(10), fc.integer()),
        sentAt: fc.oneof(fc.date({ noInvalidDate: true }).map((d) => d.toISOString()), text(10)),
        properties: fc.oneof(fc.dictionary(text(8), jsonValue(3), { maxKeys: 4 }), deep, jsonValue(2)),
        traits: fc.oneof(fc.dictionary(text(8), jsonValue(3), { maxKeys: 4 }), deep),
        context: fc.oneof(fc.dictionary(text(8), jsonValue(2), { maxKeys: 3 }), deep, text(4)),
        blob: fc.integer({ min: 1, max: 40_000 }).map((n) => `__BLOB_${n}__`),
      },
      { requiredKeys: [] },
    ),
  )

/** The body as text: JSON, with the huge literals, deep nestings and long strings spliced in where their placeholders are. */
function render(value: unknown): string {
  return JSON.stringify(value)
    .replace(/"__BLOB_(\d+)__"/g, (_, n) => `"${'x'.repeat(Number(n))}"`)
    .replace(/"__HUGE_(\d+)__"/g, (_, i) => HUGE[Number(i)] as string)
    .replace(/"__DEEP_(\d+)__"/g, (_, n) => `${'['.repeat(Number(n))}${']'.repeat(Number(n))}`)
}

let bodySeq = 0
/** One request: a batch (good messages and anything else, in any order, perhaps a batch context), or a single-message call. */
const request = fc.integer().chain(() => {
  const id = `fz${++bodySeq}-${Date.now()}-`
  const batch = fc
    .record({
      good: fc.array(goodMessage(id), { minLength: 1, maxLength: 6 }),
      other: fc.array(anyMessage(id), { maxLength: 6 }),
      order: fc.array(fc.nat(), { maxLength: 12 }),
      context: fc.option(fc.oneof(fc.dictionary(text(8), jsonValue(2), { maxKeys: 3 }), deep), { nil: undefined }),
    })
    .map(({ good, other, order, context }) => {
      // Interleave: `order` decides where each message goes (a stable shuffle).
      const all = [...good.map((m) => ({ m, good: true })), ...other.map((m) => ({ m, good: false }))]
      const keyed = all.map((x, i) => ({ ...x, k: order[i] ?? i }))
      keyed.sort((a, b) => a.k - b.k)
      return { path: '/v1/batch', body: { batch: keyed.map((x) => x.m), ...(context ? { context } : {}) }, good: keyed.map((x) => x.good), id }
    })
  const single = fc.record({ m: fc.oneof(goodMessage(id), anyMessage(id)), type: fc.constantFrom(...TYPES) }).map(({ m, type }) => ({ path: `/v1/${type}`, body: m, good: [] as boolean[], id }))
  return fc.oneof({ weight: 3, arbitrary: batch }, { weight: 1, arbitrary: single })
})

type Answer = { status: number; json: { success?: boolean; accepted?: number; rejected?: { index: number; path: string; message: string }[]; error?: { code: string; details?: { path: string }[] } } }

async function send(path: string, body: unknown): Promise<Answer> {
  const res = await sb.post(path, render(body))
  const raw = await res.text()
  return { status: res.status, json: raw ? JSON.parse(raw) : {} }
}

/** How many events each of these message ids (as stored: lone surrogates as U+FFFD) has. */
async function storedCounts(ids: string[]): Promise<Map<string, number>> {
  const rows = await store().query<{ message_id: string; n: number }>(
    'SELECT message_id, count() AS n FROM events_v1 WHERE message_id IN {ids:Array(String)} GROUP BY message_id',
    { ids: [...new Set(ids)] },
  )
  return new Map(rows.map((r) => [r.message_id, Number(r.n)]))
}

const wellFormed = (id: unknown) => (typeof id === 'string' ? id.toWellFormed() : undefined)
const idOf = (m: unknown) => (typeof m === 'object' && m !== null && !Array.isArray(m) ? (m as { messageId?: unknown }).messageId : undefined)

describe(`fuzzing the tracking API (seed ${SEED}, ${RUNS} bodies)`, () => {
  it(
    'no 5xx; every accepted message is stored exactly once, the others listed with a path; a good message beside bad ones is stored',
    async () => {
      await fc.assert(
        fc.asyncProperty(request, async ({ path, body, good }) => {
          const { status, json } = await send(path, body)
          expect(status, JSON.stringify(json)).toBeLessThan(500)
          const messages = path === '/v1/batch' ? ((body as { batch: unknown[] }).batch ?? []) : [body]
          if (status === 413) return
          if (path !== '/v1/batch') {
            expect([200, 400]).toContain(status)
            const id = wellFormed(idOf(body))
            if (status === 400) expect(json.error?.details?.every((d) => d.path.length > 0)).toBe(true)
            if (id !== undefined) expect((await storedCounts([id])).get(id) ?? 0).toBe(status === 200 ? 1 : 0)
            return
          }
          if (status === 400) {
            // Only the envelope can refuse a whole batch: its context (here, one nested too deep).
            expect(json.error?.details?.[0]?.path).toMatch(/^context/)
            return
          }
          expect(status).toBe(200)
          const rejected = new Set((json.rejected ?? []).map((r) => r.index))
          for (const r of json.rejected ?? []) expect(r.path.length).toBeGreaterThan(0)
          // Accepted: the messages not rejected, each messageId once.
          const acceptedIds = new Set<string>()
          let unnamed = 0
          messages.forEach((m, i) => {
            if (rejected.has(i)) return
            const id = wellFormed(idOf(m))
            if (id === undefined) unnamed++
            else acceptedIds.add(id)
          })
          expect(json.accepted).toBe(acceptedIds.size + unnamed)
          // Every good message is accepted, whatever stood beside it.
          good.forEach((g, i) => {
            if (g) expect(rejected.has(i), `good message ${i} was rejected: ${JSON.stringify(json.rejected)}`).toBe(false)
          })
          const counts = await storedCounts([...acceptedIds])
          for (const id of acceptedIds) expect(counts.get(id) ?? 0, `stored count of ${JSON.stringify(id)}`).toBe(1)
          const refusedOnly = messages
            .map((m, i) => ({ id: wellFormed(idOf(m)), i }))
            .filter(({ id, i }) => id !== undefined && rejected.has(i) && !acceptedIds.has(id))
            .map(({ id }) => id as string)
          const none = await storedCounts(refusedOnly)
          for (const id of refusedOnly) expect(none.get(id) ?? 0, `a rejected message was stored: ${JSON.stringify(id)}`).toBe(0)
        }),
        { seed: SEED, numRuns: RUNS, endOnFailure: true },
      )
      expect((await fetch(`${sb.url}/health`)).status).toBe(200)
      expect((await fetch(`${sb.url}/ready`)).status).toBe(200)
    },
    TIMEOUT,
  )

  it(
    'with the store down, every answer is a 503 or a 4xx about the request itself, and nothing is a 2xx',
    async () => {
      fault.faults.down = true
      try {
        await fc.assert(
          fc.asyncProperty(request, async ({ path, body }) => {
            const { status } = await send(path, body)
            expect([400, 413, 503]).toContain(status)
          }),
          { seed: SEED, numRuns: Math.max(10, Math.round(RUNS / 6)), endOnFailure: true },
        )
      } finally {
        fault.faults.down = false
      }
      expect((await fetch(`${sb.url}/health`)).status).toBe(200)
      await expect.poll(async () => (await fetch(`${sb.url}/ready`)).status, { timeout: 10_000, interval: 100 }).toBe(200)
    },
    TIMEOUT,
  )
})

import { afterAll, describe, expect, it } from 'vitest'
import { loadConfig } from '../src/config.js'
import { openStore } from '../src/store/node.js'
import { type Child, freePort, spawnServer, waitReady } from './child-server.js'
import { ADMIN_TOKEN, removeDir, tempDir, WRITE_KEY } from './harness.js'

// Durability of acknowledgements, with the server as a separate process: killed outright while
// batches are in flight, and stopped with SIGTERM while writes are waiting for their flush.

const dirs: string[] = []
const children: Child[] = []
afterAll(() => {
  for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL')
  for (const d of dirs) removeDir(d)
})

async function start(dataDir: string, extra: Record<string, string> = {}) {
  const child = spawnServer({
    DATA_DIR: dataDir,
    PORT: String(await freePort()),
    HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
    ADMIN_TOKEN,
    WRITE_KEYS: `${WRITE_KEY}:web`,
    RATE_LIMIT_PER_SECOND: '0',
    ...extra,
  })
  children.push(child)
  await waitReady(child)
  return child
}

const auth = { authorization: `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`, 'content-type': 'application/json' }
const post = (child: Child, body: unknown) => fetch(`${child.url}/v1/batch`, { method: 'POST', headers: auth, body: JSON.stringify(body) })
async function stats(child: Child) {
  const res = await fetch(`${child.url}/v1/stats`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  return (await res.json()) as { events: number }
}

type Batch = { id: string; messages: { type: string; messageId: string; userId: string; event: string; properties: object; timestamp: string }[] }
function makeBatch(id: string, size: number): Batch {
  const timestamp = new Date().toISOString()
  return {
    id,
    messages: Array.from({ length: size }, (_, i) => ({
      type: 'track',
      messageId: `${id}-${i}`,
      userId: `user-${i % 17}`,
      event: 'Durability Checked',
      properties: { i },
      timestamp,
    })),
  }
}

/** All stored message ids with their row counts, read straight from the data directory. */
async function storedCounts(dataDir: string): Promise<Map<string, number>> {
  const store = await openStore(loadConfig({ DATA_DIR: dataDir }))
  try {
    const rows = await store.query<{ message_id: string; n: number }>('SELECT message_id, count() AS n FROM events_v1 GROUP BY message_id')
    return new Map(rows.map((r) => [r.message_id, Number(r.n)]))
  } finally {
    await store.close()
  }
}

describe('SIGKILL while batches are in flight', () => {
  it('every acknowledged message is stored after a restart; resending all stores each exactly once', async () => {
    const dataDir = tempDir('signalbox-kill-')
    dirs.push(dataDir)
    const first = await start(dataDir)

    const SENDERS = 6
    const SIZE = 100
    const KILL_AFTER = 24
    const attempted: Batch[] = []
    const acked: Batch[] = []
    let inFlight = 0
    let inFlightAtKill = -1
    let killed = false
    const sender = async (s: number) => {
      for (let n = 0; !killed; n++) {
        const batch = makeBatch(`k${s}-${n}`, SIZE)
        attempted.push(batch)
        inFlight++
        try {
          const res = await post(first, { batch: batch.messages, sentAt: new Date().toISOString() })
          if (res.status === 200) acked.push(batch)
          await res.body?.cancel()
        } catch {
          // the connection died with the process: not acknowledged
        } finally {
          inFlight--
        }
        if (acked.length >= KILL_AFTER && !killed) {
          killed = true
          inFlightAtKill = inFlight
          first.proc.kill('SIGKILL')
        }
      }
    }
    await Promise.all(Array.from({ length: SENDERS }, (_, s) => sender(s)))
    expect(await first.exited).toBe('SIGKILL')
    expect(inFlightAtKill).toBeGreaterThan(0)

    const afterKill = await storedCounts(dataDir)
    const missing = acked.flatMap((b) => b.messages.map((m) => m.messageId)).filter((id) => afterKill.get(id) !== 1)
    expect(missing).toEqual([])
    expect(afterKill.size).toBeLessThanOrEqual(attempted.length * SIZE)

    const second = await start(dataDir)
    const resent = await Promise.all(attempted.map((b) => post(second, { batch: b.messages, sentAt: new Date().toISOString() })))
    expect(resent.map((r) => r.status)).toEqual(attempted.map(() => 200))
    expect((await stats(second)).events).toBe(attempted.length * SIZE)
    second.proc.kill('SIGTERM')
    expect(await second.exited).toBe(0)

    const final = await storedCounts(dataDir)
    expect(final.size).toBe(attempted.length * SIZE)
    expect([...final.values()].every((n) => n === 1)).toBe(true)
    for (const b of attempted) for (const m of b.messages) expect(final.has(m.messageId)).toBe(true)
  })
})

describe('SIGTERM', () => {
  it('flushes the writes waiting for their group commit, answers them 200, and exits 0', async () => {
    const dataDir = tempDir('signalbox-term-')
    dirs.push(dataDir)
    // A long flush window, so the writes are certainly waiting when the signal arrives.
    const child = await start(dataDir, { INGEST_FLUSH_MS: '1000', LOG_LEVEL: 'debug' })
    const batches = Array.from({ length: 5 }, (_, i) => makeBatch(`term-${i}`, 50))
    const requests = batches.map((b) => post(child, { batch: b.messages, sentAt: new Date().toISOString() }))
    // Each request logs once it is validated and handed to the writer.
    await child.waitForOutput((out) => out.split('batch validated; waiting for the store').length - 1 === batches.length)
    child.proc.kill('SIGTERM')
    const responses = await Promise.all(requests)
    expect(responses.map((r) => r.status)).toEqual(batches.map(() => 200))
    expect(await child.exited).toBe(0)

    const again = await start(dataDir)
    expect((await stats(again)).events).toBe(5 * 50)
    again.proc.kill('SIGTERM')
    expect(await again.exited).toBe(0)
  })

  it('exits 0 promptly when idle, with keep-alive connections open', async () => {
    const dataDir = tempDir('signalbox-idle-')
    dirs.push(dataDir)
    const child = await start(dataDir)
    const res = await post(child, { batch: makeBatch('idle', 3).messages })
    expect(res.status).toBe(200)
    await res.body?.cancel()
    const signalled = Date.now()
    child.proc.kill('SIGTERM')
    expect(await child.exited).toBe(0)
    // Well under Node's 5 s keep-alive timeout: idle sockets are closed, not waited for.
    expect(Date.now() - signalled).toBeLessThan(3000)
  })
})

import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Webhook } from 'standardwebhooks'
import { newSignalId, recordSignalEvents, type Signal, type SignalBus, type SignalEvent, type SignalEventType } from '../src/signals.js'
import type { Store } from '../src/store/store.js'

export type Received = { headers: IncomingHttpHeaders; body: string; at: number; n: number }
export type Reply = { status: number; headers?: Record<string, string>; body?: string; delayMs?: number; after?: Promise<unknown> }

/**
 * A real local webhook receiver (node:http on 127.0.0.1). `reply(n, req)` decides each answer
 * (n counts from 1); requests are recorded as they arrive.
 */
export async function startReceiver(reply: (n: number, req: Received) => Reply = () => ({ status: 200 }), port = 0) {
  const requests: Received[] = []
  const sockets = new Set<import('node:net').Socket>()
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const r: Received = { headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now(), n: requests.length + 1 }
      requests.push(r)
      const answer = reply(r.n, r)
      const send = () => {
        if (res.destroyed) return
        res.writeHead(answer.status, { 'content-type': 'text/plain', ...answer.headers })
        res.end(answer.body ?? 'ok')
      }
      const wait = answer.after ?? Promise.resolve()
      void wait.finally(() => (answer.delayMs ? setTimeout(send, answer.delayMs) : send()))
    })
  })
  server.on('connection', (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve())
  })
  const actualPort = (server.address() as AddressInfo).port
  return {
    port: actualPort,
    url: `http://127.0.0.1:${actualPort}/hook`,
    requests,
    async close() {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
export type Receiver = Awaited<ReturnType<typeof startReceiver>>

/** A port nothing listens on (bound, then released). */
export async function freePort(): Promise<number> {
  const r = await startReceiver()
  await r.close()
  return r.port
}

/** Verify a received delivery with the standardwebhooks library; returns the parsed body. */
export function verify(r: Received, secret: string): unknown {
  const headers = Object.fromEntries(Object.entries(r.headers).map(([k, v]) => [k, String(v)]))
  return new Webhook(secret).verify(r.body, headers)
}

export function makeSignal(over: Partial<Signal> = {}): Signal {
  return {
    id: newSignalId(),
    rule_id: 'pql-active-team',
    rule_version: 3,
    kind: 'pql',
    subject: { type: 'account', id: 'acme' },
    status: 'open',
    fired_at: new Date().toISOString(),
    resolved_at: null,
    score: null,
    reasons: [
      { condition: 'count(Message Sent, 30d) >= 2000', metric: 'count', measured: 2412, op: 'gte', threshold: 2000, passed: true },
      { condition: 'active_users(7d) >= 5', metric: 'active_users', measured: 7, op: 'gte', threshold: 5, passed: true },
    ],
    ...over,
  }
}

/** Record signals as the evaluator does (store, then log, then the bus). */
export async function fire(store: Store, bus: SignalBus, ...signals: (Signal | { type: SignalEventType; signal: Signal })[]): Promise<SignalEvent[]> {
  return recordSignalEvents(
    store,
    bus,
    signals.map((s) => ('signal' in s ? s : { type: 'signal.fired' as const, signal: s })),
  )
}

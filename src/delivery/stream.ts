import type { SSEStreamingApi } from 'hono/streaming'
import type { SignalBus, SignalEvent } from '../signals.js'
import type { Store } from '../store/store.js'
import { eventFromLog, readLog } from './log.js'

/** Open streams, so a shutdown can end them (an open response would keep the HTTP server from closing). */
export class StreamHub {
  readonly #open = new Set<() => void>()
  #closed = false

  /** Register a stream's `end`; returns the function that unregisters it. */
  add(end: () => void): () => void {
    if (this.#closed) {
      end()
      return () => {}
    }
    this.#open.add(end)
    return () => this.#open.delete(end)
  }

  closeAll(): void {
    this.#closed = true
    for (const end of [...this.#open]) end()
    this.#open.clear()
  }
}

export type StreamOptions = {
  store: Store
  bus: SignalBus
  hub: StreamHub
  /** Only signals of these kinds (undefined: all). */
  kinds?: ReadonlySet<string>
  /** Resume after this log position (the `id:` of the last event the client has). */
  lastEventId?: string
  heartbeatMs: number
  /** Events waiting for a slow client before its stream is ended (it reconnects and resumes). */
  maxBuffered?: number
}

const REPLAY_PAGE = 500

/**
 * Serve the signal log as server-sent events. Each message is one log entry: `id:` its event id
 * (a monotonic ULID: the log's order, so "after this id" is exactly what a reconnecting client
 * is missing), `event:` its type, `data:` the signal event JSON.
 *
 * No gap between the replay and live delivery: the bus is subscribed first (live events are held
 * back meanwhile), then the log after `lastEventId` is replayed from the store, then the held
 * events not already replayed are sent and the stream goes live. A signal stored before the
 * replay query is in the replay; one stored after it is on the bus.
 */
export async function streamSignals(stream: SSEStreamingApi, opts: StreamOptions): Promise<void> {
  const max = opts.maxBuffered ?? 10_000
  const wanted = (e: SignalEvent) => !opts.kinds || opts.kinds.has(e.data.kind)
  let ended = false
  let endStream!: () => void
  const finished = new Promise<void>((resolve) => {
    endStream = () => {
      ended = true
      resolve()
    }
  })

  // Writes are chained so live events, replayed ones and heartbeats never interleave.
  let chain: Promise<unknown> = Promise.resolve()
  let waiting = 0
  const write = (text: string) => {
    if (ended) return
    if (waiting >= max) return endStream() // too slow: the client resumes from its last id
    waiting++
    chain = chain.then(() => stream.write(text)).finally(() => waiting--)
  }
  const send = (e: SignalEvent) => write(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`)

  let live = false
  const held: SignalEvent[] = []
  const onEvents = (events: SignalEvent[]) => {
    for (const e of events) {
      if (!wanted(e)) continue
      if (live) send(e)
      else if (held.length < max) held.push(e)
      else endStream()
    }
  }
  opts.bus.on('events', onEvents)
  stream.onAbort(endStream)
  const unregister = opts.hub.add(endStream)
  const heartbeat = setInterval(() => write(': heartbeat\n\n'), opts.heartbeatMs)
  try {
    // Reconnect delay for EventSource clients, and a first byte so the client knows it is connected.
    write('retry: 1000\n: connected\n\n')
    const replayed = new Set<string>()
    if (opts.lastEventId) {
      let after = opts.lastEventId
      while (!ended) {
        const rows = await readLog(opts.store, { after, kinds: opts.kinds ? [...opts.kinds] : [], limit: REPLAY_PAGE })
        for (const row of rows) {
          const e = eventFromLog(row)
          replayed.add(e.id)
          send(e)
        }
        await chain // at the client's pace
        if (rows.length < REPLAY_PAGE) break
        after = (rows.at(-1) as (typeof rows)[number]).event_id
      }
    }
    for (const e of held) if (!replayed.has(e.id) && (!opts.lastEventId || e.id > opts.lastEventId)) send(e)
    held.length = 0
    live = true
    await finished
  } finally {
    live = false
    ended = true
    clearInterval(heartbeat)
    opts.bus.off('events', onEvents)
    unregister()
  }
}

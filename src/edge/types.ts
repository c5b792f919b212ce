/**
 * The parts of the Workers runtime signalbox uses, typed structurally (as in
 * `@cloudflare/workers-types`) so that the edge modules type-check beside the Node code and can be
 * driven by tests on either runtime.
 */
export type QueueContentType = 'json' | 'text' | 'bytes' | 'v8'

export interface QueueProducer<Body = unknown> {
  sendBatch(messages: Iterable<{ body: Body; contentType?: QueueContentType; delaySeconds?: number }>): Promise<unknown>
}

export interface QueueMessage<Body = unknown> {
  readonly id: string
  readonly timestamp: Date
  readonly body: Body
  readonly attempts: number
  retry(options?: { delaySeconds?: number }): void
  ack(): void
}

export interface QueueBatch<Body = unknown> {
  readonly queue: string
  readonly messages: readonly QueueMessage<Body>[]
  retryAll(options?: { delaySeconds?: number }): void
  ackAll(): void
}

export interface ScheduledEvent {
  readonly scheduledTime: number
  readonly cron: string
}

export interface ExecutionContext {
  waitUntil(promise: Promise<unknown>): void
}

import type { Logger } from 'pino'
import type { EventRow } from '../../ingest/normalize.js'
import { addTouches, emptyTouched, isEmpty, type Touched } from './touched.js'

export type ScheduleOptions = {
  /** Full evaluation period; 0 or absent turns the interval off. */
  intervalMs?: number
  /** How long touched ids are collected before their incremental evaluation; absent: touches are not evaluated. */
  debounceMs?: number
  logger?: Logger
  /** Run a full evaluation. */
  runFull: () => Promise<void>
  /** Run the incremental evaluation of these touched ids. */
  runTouched: (touched: Touched) => Promise<void>
}

/**
 * When the Node evaluator runs: a full evaluation every interval, and the ids touched by
 * ingestion EVAL_DEBOUNCE_MS after the first touch. While an evaluation runs, new touches gather
 * and are evaluated as soon as it ends, so under steady load evaluations run back to back (one
 * every debounce period at most) and an event waits for at most the one under way.
 */
export class EvaluationSchedule {
  readonly #opts: ScheduleOptions
  #interval: ReturnType<typeof setTimeout> | undefined
  #debounce: ReturnType<typeof setTimeout> | undefined
  #touched = emptyTouched()
  #stopped = false
  #background: Promise<unknown> = Promise.resolve()
  /** The loop that evaluates touched ids, while it runs. */
  #draining: Promise<void> | undefined

  constructor(opts: ScheduleOptions) {
    this.#opts = opts
  }

  start(): void {
    this.#stopped = false
    this.#scheduleInterval()
  }

  /** Stop the timers and wait for the runs under way (pending touches are dropped: the next full evaluation covers them). */
  async stop(): Promise<void> {
    this.#stopped = true
    clearTimeout(this.#interval)
    clearTimeout(this.#debounce)
    this.#interval = this.#debounce = undefined
    await this.#background
    await this.#draining
  }

  touch(events: readonly EventRow[]): void {
    if (this.#stopped) return
    addTouches(this.#touched, events)
    this.#scheduleTouched()
  }

  #scheduleTouched() {
    const delayMs = this.#opts.debounceMs
    if (delayMs === undefined || this.#debounce || this.#draining || this.#stopped || isEmpty(this.#touched)) return
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined
      this.#draining = this.#drainTouched()
        .catch((err) => this.#opts.logger?.error({ err }, 'incremental evaluation failed'))
        .finally(() => {
          this.#draining = undefined
          // Touches that arrived as the loop ended.
          this.#scheduleTouched()
        })
    }, delayMs)
    this.#debounce.unref?.()
  }

  async #drainTouched() {
    const spacing = this.#opts.debounceMs ?? 0
    while (!this.#stopped && !isEmpty(this.#touched)) {
      const started = performance.now()
      const touched = this.#touched
      this.#touched = emptyTouched()
      await this.#opts.runTouched(touched)
      // Runs start at least a debounce period apart, so a trickle of events is still batched.
      const rest = spacing - (performance.now() - started)
      if (rest > 0 && !isEmpty(this.#touched)) await new Promise((r) => setTimeout(r, rest).unref?.())
    }
  }

  #scheduleInterval() {
    const ms = this.#opts.intervalMs ?? 0
    if (!ms || this.#stopped) return
    this.#interval = setTimeout(() => {
      this.#background = this.#opts
        .runFull()
        .catch((err) => this.#opts.logger?.error({ err }, 'evaluation failed'))
        .finally(() => this.#scheduleInterval())
    }, ms)
    this.#interval.unref?.()
  }
}

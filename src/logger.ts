import type { Writable } from 'node:stream'
import { pino } from 'pino'
import pretty from 'pino-pretty'
import type { Config } from './config.js'

/**
 * JSON lines for log collectors; readable lines when a person watches the terminal (stdout is a
 * TTY). pino-pretty runs in-process here (not as a worker transport) so the last lines before an
 * exit are not lost.
 */
export function createLogger(
  config: Pick<Config, 'LOG_LEVEL'>,
  opts: { tty?: boolean; destination?: Writable } = {},
) {
  const tty = opts.tty ?? process.stdout.isTTY === true
  const options = { level: config.LOG_LEVEL, base: { service: 'signalbox' } }
  if (!tty) return opts.destination ? pino(options, opts.destination) : pino(options)
  return pino(
    options,
    pretty({ colorize: !opts.destination, sync: true, translateTime: 'SYS:HH:MM:ss', ignore: 'pid,hostname,service', destination: opts.destination }),
  )
}

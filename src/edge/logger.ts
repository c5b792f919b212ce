import { pino, type Logger } from 'pino'
import type { Config } from '../config.js'

/**
 * The app's logger on Workers. The bundler resolves `pino` to its browser build (no worker
 * threads, no file descriptors), which has the same `Logger` type; each record is written as one
 * JSON line to the console, which Workers Logs indexes by field.
 */
export function createEdgeLogger(config: Pick<Config, 'LOG_LEVEL'>): Logger {
  return pino({
    level: config.LOG_LEVEL,
    // Errors as {type, message, stack}; their own fields are not enumerable.
    serializers: { err: pino.stdSerializers.err },
    browser: {
      asObject: true,
      serialize: true,
      write: (record) => console.log(JSON.stringify(record)),
    },
  }).child({ service: 'signalbox', runtime: 'workerd' })
}

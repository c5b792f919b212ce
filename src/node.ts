import { ConfigError } from './config.js'
import { startServer } from './server.js'

// The Node runtime entry: start, and on SIGTERM/SIGINT stop taking requests, flush, then exit.
try {
  const server = await startServer(process.env)
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      server.close().then(
        () => process.exit(0),
        (err) => {
          console.error('signalbox: shutdown failed:', err)
          process.exit(1)
        },
      )
    })
  }
} catch (err) {
  console.error(err instanceof ConfigError ? `signalbox: ${err.message}` : `signalbox: could not start: ${err instanceof Error ? err.stack : err}`)
  process.exit(1)
}

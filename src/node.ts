import { ConfigError } from './config.js'
import { banner, startServer } from './server.js'
import { StoreOpenError } from './store/node.js'

// The Node runtime entry: start, and on SIGTERM/SIGINT stop taking requests, flush, then exit.
try {
  const server = await startServer(process.env)
  process.stdout.write(banner(server))
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
  // Known causes (the environment, the store) are explained by their message; anything else is a bug: its stack.
  if (err instanceof ConfigError) console.error(`signalbox: ${err.message}`)
  else if (err instanceof StoreOpenError) console.error(`signalbox: could not start: ${err.message}`)
  else console.error(`signalbox: could not start: ${err instanceof Error ? err.stack : err}`)
  process.exit(1)
}

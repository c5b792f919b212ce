/**
 * The server `npm run chaos` runs and kills: `npm start`'s server, its store wrapped in the
 * fault-injecting wrapper of the tests (test/faults.ts), and a control port the fault loop uses
 * to switch faults on and off and to read the store back.
 */
import { createServer } from 'node:http'
import { startServer } from '../src/server.js'
import { faultyStore } from '../test/faults.js'

let fault: ReturnType<typeof faultyStore> | undefined
let inner: import('../src/store/store.js').Store | undefined
const server = await startServer(process.env, {
  wrapStore: (s) => {
    inner = s
    fault = faultyStore(s)
    return fault.store
  },
})
const control = createServer((req, res) => {
  let body = ''
  req.on('data', (c) => (body += c))
  req.on('end', async () => {
    try {
      const input = body ? JSON.parse(body) : {}
      if (req.url === '/fault' && fault) {
        fault.faults.down = Boolean(input.down)
        fault.faults.failInsertsAfter = input.failInsertsAfter
        fault.faults.refuseRows = input.refuseRows ? new RegExp(input.refuseRows) : undefined
        return res.end('{}')
      }
      if (req.url === '/query' && inner) return res.end(JSON.stringify(await inner.query(input.sql, input.params)))
      res.writeHead(404).end()
    } catch (err) {
      res.writeHead(500).end(String(err))
    }
  })
})
control.listen(Number(process.env.CHAOS_CONTROL_PORT), '127.0.0.1', () => process.stdout.write('chaos server ready\n'))
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => server.close().then(() => process.exit(0)))

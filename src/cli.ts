#!/usr/bin/env -S npx tsx
import { Command } from 'commander'
import { loadConfig } from './config.js'
import { migrate } from './store/migrate.js'
import { openStore } from './store/node.js'

const program = new Command('signalbox').description('signalbox command-line interface')

program
  .command('migrate')
  .description('apply the migrations in migrations/ to the configured store')
  .action(async () => {
    const config = loadConfig(process.env)
    const store = await openStore(config)
    try {
      const applied = await migrate(store, undefined, { cluster: config.CLICKHOUSE_CLUSTER })
      console.log(applied.length ? `applied: ${applied.join(', ')}` : 'up to date')
    } finally {
      await store.close()
    }
  })

program.parseAsync().catch((err) => {
  console.error(`signalbox: ${err instanceof Error ? err.message : err}`)
  process.exit(1)
})

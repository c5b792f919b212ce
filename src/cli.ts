#!/usr/bin/env -S npx tsx
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { Presets, SingleBar } from 'cli-progress'
import { Command } from 'commander'
import { parseAllDocuments } from 'yaml'
import { loadConfig } from './config.js'
import { migrate } from './store/migrate.js'
import { openStore } from './store/node.js'
import { printQuality, qualityLine } from './quality/print.js'
import { rebuildState } from '../rules/state/rebuild.js'
import type { QualityReport } from './quality/quality.js'

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

// ---------------------------------------------------------------------------------------------
// `signalbox rules …`: manage rules through a running server's API (SIGNALBOX_URL, ADMIN_TOKEN).

type ApiOptions = { url?: string; token?: string }

function apiTarget(opts: ApiOptions) {
  const url = (opts.url ?? process.env.SIGNALBOX_URL ?? 'http://127.0.0.1:8787').replace(/\/+$/, '')
  let token = opts.token ?? process.env.ADMIN_TOKEN
  if (!token) {
    // A newcomer's server generated its token into DATA_DIR/credentials.json.
    const file = join(process.env.DATA_DIR ?? './data', 'credentials.json')
    if (existsSync(file)) token = (JSON.parse(readFileSync(file, 'utf8')) as { adminToken?: string }).adminToken
  }
  if (!token) throw new Error('no admin token: pass --token or set ADMIN_TOKEN')
  return { url, token }
}

async function api(opts: ApiOptions, method: string, path: string, body?: string, contentType = 'application/json') {
  const { url, token } = apiTarget(opts)
  let res: Response
  try {
    res = await fetch(`${url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': contentType } : {}) },
      body,
    })
  } catch (err) {
    throw new Error(`cannot reach ${url}: ${err instanceof Error ? (err.cause as Error | undefined)?.message ?? err.message : err}`)
  }
  const text = await res.text()
  const json = text ? (JSON.parse(text) as Record<string, unknown>) : {}
  if (!res.ok) {
    const e = (json.error ?? {}) as { message?: string; details?: { path: string; message: string }[] }
    const lines = [e.message ?? `HTTP ${res.status}`, ...(e.details ?? []).map((d) => `  ${d.path}: ${d.message}`)]
    throw new Error(lines.join('\n'))
  }
  return json
}

/** The rule documents of files and directories, each with the text to send for it. */
function ruleDocuments(paths: string[]): { file: string; id: string | undefined; body: string; contentType: string }[] {
  const files = paths.flatMap((p) =>
    statSync(p).isDirectory()
      ? readdirSync(p)
          .filter((f) => /\.(ya?ml|json)$/i.test(f))
          .sort()
          .map((f) => join(p, f))
      : [p],
  )
  return files.flatMap((file) => {
    const text = readFileSync(file, 'utf8')
    if (/\.json$/i.test(file)) {
      const value = JSON.parse(text) as unknown
      return (Array.isArray(value) ? value : [value]).map((doc) => ({
        file,
        id: (doc as { id?: string })?.id,
        body: JSON.stringify(doc),
        contentType: 'application/json',
      }))
    }
    return parseAllDocuments(text).flatMap((doc) => {
      if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0]?.message}`)
      const value = doc.toJS() as { id?: string } | null
      if (value === null || value === undefined) return []
      return [{ file, id: value.id, body: doc.toString(), contentType: 'application/yaml' }]
    })
  })
}

const rules = program.command('rules').description('manage rules on a running server (SIGNALBOX_URL, ADMIN_TOKEN)')
const withApi = (c: Command) =>
  c
    .option('--url <url>', 'the server (default: SIGNALBOX_URL, else http://127.0.0.1:8787)')
    .option('--token <token>', 'the admin token (default: ADMIN_TOKEN, else DATA_DIR/credentials.json)')

/** PUT each document of `paths` to `/v1/<collection>/<id>`, one line per document. */
async function applyDocuments(collection: 'rules' | 'outcomes', paths: string[], opts: ApiOptions) {
  const noun = collection === 'rules' ? 'rule' : 'outcome'
  let failed = 0
  const docs = ruleDocuments(paths)
  if (docs.length === 0) {
    // A directory without documents (say `rules/` instead of `rules/defaults/`) is a mistake, not a no-op.
    console.error(`no ${noun} files found in ${paths.join(', ')} (*.yaml, *.yml, *.json)`)
    process.exitCode = 1
    return
  }
  for (const doc of docs) {
    if (!doc.id) {
      console.error(`${doc.file}: a ${noun} document needs an id`)
      failed++
      continue
    }
    try {
      const r = await api(opts, 'PUT', `/v1/${collection}/${encodeURIComponent(doc.id)}`, doc.body, doc.contentType)
      console.log(`${doc.id}\tv${r.version}\t${r.status}`)
    } catch (err) {
      console.error(`${doc.file}: ${doc.id}: ${err instanceof Error ? err.message : err}`)
      failed++
    }
  }
  if (failed) process.exitCode = 1
}

withApi(rules.command('apply').argument('<paths...>', 'rule files (YAML or JSON) or directories of them'))
  .description('create or update rules from files; each changed rule gets a new version')
  .action((paths: string[], opts: ApiOptions) => applyDocuments('rules', paths, opts))

withApi(rules.command('list'))
  .description('list the current rules')
  .option('--json', 'print the API response')
  .action(async (opts: ApiOptions & { json?: boolean }) => {
    const r = (await api(opts, 'GET', '/v1/rules')) as { data: { id: string; version: number; enabled: boolean; rule: { kind: string; subject: string; description?: string } }[] }
    if (opts.json) return console.log(JSON.stringify(r, null, 2))
    for (const x of r.data) {
      console.log([x.id, `v${x.version}`, x.rule.kind, x.rule.subject, x.enabled ? 'enabled' : 'disabled', x.rule.description ?? ''].join('\t'))
    }
  })

type BacktestResponse = {
  moments: number
  fired: { subject: { id: string }; at: string; score: number | null }[]
  resolved: { subject: { id: string }; at: string }[]
  open_at_end: number
  quality: QualityReport | null
  quality_unavailable?: string
}

const readRuleFile = (file: string): unknown => parseAllDocuments(readFileSync(file, 'utf8'))[0]?.toJS()

withApi(rules.command('backtest').argument('<id>', 'the rule id'))
  .description('what a rule would have fired over stored history, and how often those fires reached its outcome; nothing is stored')
  .requiredOption('--from <time>', 'ISO-8601 start')
  .requiredOption('--to <time>', 'ISO-8601 end')
  .option('--step <duration>', 'time between evaluated moments', '1d')
  .option('--horizon <duration>', 'the horizon of the quality figures (default: the rule\'s)')
  .option('--file <file>', 'test this rule document instead of the saved rule')
  .option('--compare <file>', 'also backtest this rule document (another threshold, say) and show both side by side')
  .option('--json', 'print the API response')
  .action(async (id: string, opts: ApiOptions & { from: string; to: string; step: string; horizon?: string; file?: string; compare?: string; json?: boolean }) => {
    const run = (rule: unknown) => {
      const body: Record<string, unknown> = { from: opts.from, to: opts.to, step: opts.step, ...(opts.horizon ? { horizon: opts.horizon } : {}) }
      if (rule !== undefined) body.rule = rule
      return api(opts, 'POST', `/v1/rules/${encodeURIComponent(id)}/backtest`, JSON.stringify(body)) as Promise<BacktestResponse>
    }
    const base = await run(opts.file ? readRuleFile(opts.file) : undefined)
    if (opts.compare) {
      const other = await run(readRuleFile(opts.compare))
      if (opts.json) return console.log(JSON.stringify({ base, compare: other }, null, 2))
      const label = (r: BacktestResponse, name: string) => ({ name, quality: r.quality, fires: r.fired.length, note: r.quality_unavailable })
      return printQuality([label(base, opts.file ?? `${id} (saved)`), label(other, opts.compare)])
    }
    if (opts.json) return console.log(JSON.stringify(base, null, 2))
    const lines = [
      ...base.fired.map((f) => ({ at: f.at, line: `${f.at}\tfired\t${f.subject.id}${f.score === null ? '' : `\tscore ${f.score}`}` })),
      ...base.resolved.map((x) => ({ at: x.at, line: `${x.at}\tresolved\t${x.subject.id}` })),
    ].sort((a, b) => a.at.localeCompare(b.at))
    for (const l of lines) console.log(l.line)
    console.log(`${base.moments} moments: ${base.fired.length} fired, ${base.resolved.length} resolved, ${base.open_at_end} open at the end`)
    if (base.quality) console.log(qualityLine(base.quality))
  })

withApi(rules.command('quality').argument('<id>', 'the rule id'))
  .description("how often a rule's signals reached its outcome: precision, base rate, lift, recall, lead time")
  .option('--from <time>', 'ISO-8601 start of the period of fires (default: 90 days before --to)')
  .option('--to <time>', 'ISO-8601 end (default: now)')
  .option('--horizon <duration>', "how long after a fire the outcome may come (default: the rule's)")
  .option('--json', 'print the API response')
  .action(async (id: string, opts: ApiOptions & { from?: string; to?: string; horizon?: string; json?: boolean }) => {
    const q = new URLSearchParams(Object.entries({ from: opts.from, to: opts.to, horizon: opts.horizon }).filter((e): e is [string, string] => e[1] !== undefined))
    const r = (await api(opts, 'GET', `/v1/rules/${encodeURIComponent(id)}/quality${q.size ? `?${q}` : ''}`)) as QualityReport
    if (opts.json) return console.log(JSON.stringify(r, null, 2))
    printQuality([{ name: id, quality: r }])
  })

const outcomes = program.command('outcomes').description('manage outcomes (what counts as success for the quality report) on a running server')

withApi(outcomes.command('apply').argument('<paths...>', 'outcome files (YAML or JSON) or directories of them'))
  .description('create or update outcomes from files; each changed outcome gets a new version')
  .action((paths: string[], opts: ApiOptions) => applyDocuments('outcomes', paths, opts))

withApi(outcomes.command('list'))
  .description('list the current outcomes')
  .option('--json', 'print the API response')
  .action(async (opts: ApiOptions & { json?: boolean }) => {
    const r = (await api(opts, 'GET', '/v1/outcomes')) as { data: { id: string; version: number; outcome: { subject: string; description?: string } }[] }
    if (opts.json) return console.log(JSON.stringify(r, null, 2))
    for (const x of r.data) console.log([x.id, `v${x.version}`, x.outcome.subject, x.outcome.description ?? ''].join('\t'))
  })

// ---------------------------------------------------------------------------------------------
// `signalbox state …`: the per-day state the rules read (rules/state/), on the configured store.

const state = program.command('state').description('the per-day state the rules read, on the configured store (DATA_DIR or CLICKHOUSE_URL)')

state
  .command('rebuild')
  .description('rebuild the per-day state from the stored events: after a first upgrade of a store that has events, or to recover')
  .option('--from <day>', 'rebuild only this UTC day (YYYY-MM-DD) and later')
  .option('--slices <n>', 'restate the raw ids in this many slices (default: one per 2 million activity events)')
  .action(async (opts: { from?: string; slices?: string }) => {
    if (opts.from !== undefined && !/^\d{4}-\d{2}-\d{2}$/.test(opts.from)) throw new Error(`--from takes a UTC day as YYYY-MM-DD, not ${JSON.stringify(opts.from)}`)
    const slices = opts.slices === undefined ? undefined : Number(opts.slices)
    if (slices !== undefined && !(Number.isInteger(slices) && slices >= 1 && slices <= 100_000)) throw new Error(`--slices takes a whole number from 1 to 100000, not ${JSON.stringify(opts.slices)}`)
    const config = loadConfig(process.env)
    // The embedded engine is one process at a time: opening it fails while the service runs.
    const store = await openStore(config)
    try {
      await migrate(store, undefined, { cluster: config.CLICKHOUSE_CLUSTER })
      if (store.kind === 'server') console.error('note: no writer may store events meanwhile (stop ingestion, or the service, until this ends)')
      // Printed without a terminal too (a CI log, a container's output): a rebuild can take long.
      const bar = new SingleBar(
        { format: 'rebuilding the per-day state [{bar}] {percentage}% | slice {value}/{total} | {duration_formatted}', hideCursor: true, noTTYOutput: true },
        Presets.shades_classic,
      )
      const started = performance.now()
      let begun = false
      const done = await rebuildState(store, {
        now: Date.now(),
        fromDay: opts.from,
        slices,
        onStart: (total) => {
          bar.start(total, 0)
          begun = true
        },
        onProgress: ({ slice }) => bar.update(slice),
      })
      if (begun) bar.stop()
      console.log(`rebuilt the per-day state${opts.from ? ` from ${opts.from}` : ''}: ${done.slices} slice(s), ${done.measures} rule measure(s), ${((performance.now() - started) / 1000).toFixed(1)} s`)
    } finally {
      await store.close()
    }
  })

program.parseAsync().catch((err) => {
  console.error(`signalbox: ${err instanceof Error ? err.message : err}`)
  process.exit(1)
})

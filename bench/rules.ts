/**
 * `npm run bench:rules`: the rules layer on 10 million events (10,000 accounts, 100,000 users,
 * 90 days), generated inside the embedded engine straight into events_v1 (as in a store from
 * before the per-day state), the state then built by the rebuild a first upgrade runs, with the
 * default rule pack.
 *
 * Reported in one run, each against a baseline measured in the same run:
 * - full evaluation of the pack on the per-day state, as the bare rule queries (one per subject
 *   type) and through the evaluator (rule queries plus signal bookkeeping), against the floor:
 *   one plain scan of events_v1 grouped by account; the same rule queries on the raw events (the
 *   reference backend) for comparison;
 * - incremental evaluation of the subjects touched by 1,000 new events (stored through the writer,
 *   which keeps the state), against one query reading those subjects' state rows;
 * - growth: the same subjects with three times the events (BENCH_GROWTH=0 skips it), and state
 *   rows per event;
 * - a naive baseline: per-subject aggregates pulled into Node and evaluated with json-rules-engine;
 * - peak resident memory of the process (the engine runs in-process) during full evaluations.
 *
 * BENCH_EVENTS / BENCH_ACCOUNTS / BENCH_USERS scale it down for a quick look.
 */
import { rmSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { Engine } from 'json-rules-engine'
import { loadConfig } from '../src/config.js'
import { migrate } from '../src/store/migrate.js'
import { openStore } from '../src/store/node.js'
import type { Store } from '../src/store/store.js'
import { chTime } from '../src/time.js'
import { GroupCommitWriter } from '../ingest/writer.js'
import { Evaluator } from '../rules/evaluator.js'
import { runRules } from '../rules/run.js'
import { StateKeeper } from '../rules/state/keeper.js'
import { rebuildState } from '../rules/state/rebuild.js'
import { loadScopes } from '../rules/scope.js'
import type { Rule } from '../rules/schema.js'
import { applyDefaultPack, listRules } from '../rules/store.js'
import { generate, generateDirectory, shapeFromEnv } from './rules-data.js'
import { median, ms, timed, withPeakRss, writeSection } from './report.js'

const DAY = 86_400_000
const NOW = Date.UTC(2026, 2, 1, 12)
const shape = shapeFromEnv(NOW)
const NAIVE_SAMPLE = Number(process.env.BENCH_NAIVE_SAMPLE ?? 100)
const REPEAT = 3
/** Also measure the same subjects with three times the events (BENCH_GROWTH=0 skips it). */
const GROWTH = process.env.BENCH_GROWTH !== '0'

const log = (s: string) => process.stderr.write(`${s}\n`)

/** Median of a few runs (the first run also warms the page cache). */
async function bestOf(fn: () => Promise<unknown>, n = REPEAT): Promise<number> {
  const times: number[] = []
  for (let i = 0; i < n; i++) times.push((await timed(fn))[0])
  return median(times)
}

async function main() {
  const dir = fileURLToPath(new URL('./.scratch/rules/', import.meta.url))
  rmSync(dir, { recursive: true, force: true })
  const store = await openStore(loadConfig({ DATA_DIR: dir, LOG_LEVEL: 'silent' }))
  try {
    await migrate(store)
    log(`generating ${shape.events.toLocaleString('en')} events…`)
    const [genEvents] = await timed(() => generate(store, shape))
    const [genDir] = await timed(() => generateDirectory(store, shape))
    // What background merges do over time, done now so every run reads the same parts.
    const [optimize] = await timed(() => store.command('OPTIMIZE TABLE activity_daily_v1 FINAL'))
    await applyDefaultPack(store, NOW)
    const rules = (await listRules(store)).map((s) => s.rule)
    const accounts = rules.filter((r) => r.subject === 'account').length
    // The events were generated straight into events_v1, as in a store from before the state:
    // the per-day state is built by the rebuild a first upgrade runs (signalbox state rebuild).
    log('rebuilding the per-day state…')
    const [rebuild, rebuilt] = await timed(() => rebuildState(store, { now: NOW }))
    const [optimizeState] = await timed(() => store.command('OPTIMIZE TABLE state_daily_v1 FINAL'))
    const sizes = async () => {
      const [row] = await store.query<{ events: number; rollup: number; state: number; accounts: number; users: number }>(
        `SELECT (SELECT count() FROM events_v1) AS events, (SELECT count() FROM activity_daily_v1) AS rollup,
                (SELECT count() FROM state_daily_v1) AS state,
                (SELECT count() FROM state_daily_v1 WHERE subject_type = 'account') AS accounts,
                (SELECT count() FROM state_daily_v1 WHERE subject_type = 'user') AS users`,
      )
      return { events: Number(row?.events), rollup: Number(row?.rollup), state: Number(row?.state), accounts: Number(row?.accounts), users: Number(row?.users) }
    }
    const counts = await sizes()
    log('generated')

    // The floor: one plain scan of events_v1 grouped by account.
    const floorSql = 'SELECT account_id, count() AS events FROM events_v1 GROUP BY account_id'
    const floor = await bestOf(() => store.query(floorSql))
    const byType = (['account', 'user'] as const).map((t) => rules.filter((r) => r.subject === t)).filter((g) => g.length > 0)

    // On the state: the pack as the evaluator runs it (one query per subject type), and through the evaluator.
    const matchedOnState: Record<string, number> = {}
    const onState = await bestOf(async () => {
      for (const group of byType) {
        const res = await runRules(store, group, { asOf: NOW, backend: 'state' })
        group.forEach((r, k) => (matchedOnState[r.id] = res[k]?.length ?? 0))
      }
    })
    // The evaluator as the service runs it: with the state keeper (its status in memory).
    const keeper = await new StateKeeper(store).start(NOW)
    const evaluator = new Evaluator(store, undefined, { now: () => NOW, state: keeper })
    const rssBefore = process.memoryUsage().rss
    const [peakRss, [firstFull, first]] = await withPeakRss(() => timed(() => evaluator.evaluate()))
    const steady = await bestOf(() => evaluator.evaluate())

    // The reference (raw events and the rollup, attributed at query time), for comparison.
    const matchedOnEvents: Record<string, number> = {}
    const onEvents = await bestOf(async () => {
      for (const group of byType) {
        const res = await runRules(store, group, { asOf: NOW })
        group.forEach((r, k) => (matchedOnEvents[r.id] = res[k]?.length ?? 0))
      }
    }, 1)

    // Incremental: 1,000 new events through the ingestion writer, which keeps the state, a burst
    // from 100 active users (10 events each, as sessions send them): ~100 accounts and 100 users.
    const writer = new GroupCommitWriter(store, { flushMs: 0, maxRows: 10_000, state: keeper })
    const fresh = Array.from({ length: 1000 }, (_, i) => {
      const user = ((i % 100) * 7919) % shape.users
      const at = chTime(NOW - 60_000 + i)
      return {
        source: 'app',
        message_id: `incr-${i}`,
        type: 'track',
        event: i % 3 === 0 ? 'Message Sent' : 'Feature Used',
        user_id: `u${user}`,
        anonymous_id: '',
        account_id: i % 2 === 0 ? `acc${user % shape.accounts}` : '',
        timestamp: at,
        original_timestamp: null,
        sent_at: null,
        received_at: at,
        properties: '{}',
        traits: '{}',
        context: '{}',
        previous_id: '',
      }
    })
    const [writeBlock] = await timed(() => writer.write({ events: fresh, errors: [] }))
    await writer.close()
    const touchedUsers = [...new Set(fresh.map((e) => e.user_id))]
    const memberOf = await store.query<{ account_id: string }>('SELECT DISTINCT account_id FROM memberships_v1 WHERE user_id IN {ids:Array(String)}', {
      ids: touchedUsers,
    })
    const touchedAccounts = [...new Set([...fresh.map((e) => e.account_id).filter(Boolean), ...memberOf.map((r) => r.account_id)])]
    const subjects = { account: touchedAccounts, user: touchedUsers }
    // The lower bound of any incremental run: one query reading those subjects' state rows.
    const bound = await bestOf(() =>
      store.query(
        `SELECT subject_type, subject_id, sum(n) AS messages, max(last_seen) AS last FROM state_daily_v1 FINAL
         WHERE ((subject_type = 'account' AND subject_id IN {accounts:Array(String)}) OR (subject_type = 'user' AND subject_id IN {users:Array(String)}))
           AND day > {from:Date} AND day <= {to:Date} AND n > 0
         GROUP BY subject_type, subject_id`,
        { accounts: touchedAccounts, users: touchedUsers, from: new Date(NOW - 90 * DAY).toISOString().slice(0, 10), to: new Date(NOW).toISOString().slice(0, 10) },
      ),
    )
    const incremental = await bestOf(() => evaluator.evaluate({ subjects }))
    const incrementalQueries = await bestOf(async () => {
      for (const group of byType) await runRules(store, group, { asOf: NOW, backend: 'state', subjectIds: subjects[(group[0] as Rule).subject] })
    })
    const incrementalEvents = await bestOf(async () => {
      const parts = { account: await loadScopes(store, 'account', subjects.account, NOW), user: await loadScopes(store, 'user', subjects.user, NOW) }
      for (const group of byType) {
        for (const part of parts[(group[0] as Rule).subject]) await runRules(store, group, { asOf: NOW, subjectIds: part.ids, scope: part.scope })
      }
    }, 1)

    // The naive baseline, on a sample of subjects, extrapolated to all of them.
    const [naiveAccounts, naiveUsers] = await naive(store, rules, NAIVE_SAMPLE)
    const naiveTotal = naiveAccounts * shape.accounts + naiveUsers * shape.users

    // Growth: the same subjects with three times the events (BENCH_GROWTH=0 skips it).
    let growth: { events: number; state: number; rebuild: number; onState: number; steady: number; peakRss: number } | undefined
    if (GROWTH) {
      log(`growing to ${(3 * shape.events).toLocaleString('en')} events…`)
      await generate(store, shape, { offset: shape.events })
      await generate(store, shape, { offset: 2 * shape.events })
      await store.command('OPTIMIZE TABLE activity_daily_v1 FINAL')
      const [grownRebuild] = await timed(() => rebuildState(store, { now: NOW }))
      await store.command('OPTIMIZE TABLE state_daily_v1 FINAL')
      const grown = await sizes()
      const grownOnState = await bestOf(async () => {
        for (const group of byType) await runRules(store, group, { asOf: NOW, backend: 'state' })
      })
      const [grownRss, grownSteady] = await withPeakRss(() => bestOf(() => evaluator.evaluate()))
      growth = { events: grown.events, state: grown.state, rebuild: grownRebuild, onState: grownOnState, steady: grownSteady, peakRss: grownRss }
    }

    const load = loadavg().map((x) => x.toFixed(1)).join(', ')
    const x = (a: number, b: number) => `${(a / b).toFixed(1)}×`
    const pct = (a: number, b: number) => `${((a / b) * 100).toFixed(1)}%`
    const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`
    const rows = [
      ['Plain scan of events_v1 grouped by account (**the floor**)', ms(floor), '1.0×'],
      [`**The pack on the per-day state**, one query per subject type (${byType.length} queries; as the evaluator runs them)`, `**${ms(onState)}**`, `**${x(onState, floor)}** the floor`],
      [`Full evaluation through the evaluator on the state, first run (fires ${first.fired.length} signals)`, ms(firstFull), `${x(firstFull, floor)} the floor`],
      ['**Full evaluation through the evaluator on the state, steady state**', `**${ms(steady)}**`, `**${x(steady, floor)}** the floor`],
      ['The pack on the raw events (the reference backend), one query per subject type', ms(onEvents), `${x(onEvents, floor)} the floor`],
      [`One query reading the state rows of the incremental run's subjects (${touchedAccounts.length} accounts, ${touchedUsers.length} users; **the incremental bound**)`, ms(bound), '1.0×'],
      ['**Incremental evaluation after 1,000 events, through the evaluator** (on the state)', `**${ms(incremental)}**`, `**${x(incremental, bound)}** the bound; ${pct(incremental, steady)} of full`],
      ['… its rule queries alone (one per subject type, on the state)', ms(incrementalQueries), `${x(incrementalQueries, bound)} the bound`],
      ['… the same subjects on the raw events (scopes, then one query per subject type)', ms(incrementalEvents), `${x(incrementalEvents, bound)} the bound`],
      ['Storing the 1,000 events through the writer, state included (one block)', ms(writeBlock), ''],
      [`Naive: one query per subject + json-rules-engine (${NAIVE_SAMPLE} accounts + ${NAIVE_SAMPLE} users measured, extrapolated)`, ms(naiveTotal), `${(naiveTotal / onState).toFixed(0)}× slower than the pack on the state`],
    ]
    const growthRows = growth
      ? [
          ['events_v1 rows', counts.events.toLocaleString('en'), growth.events.toLocaleString('en'), x(growth.events, counts.events)],
          ['state rows', counts.state.toLocaleString('en'), growth.state.toLocaleString('en'), x(growth.state, counts.state)],
          ['state rows per event', (counts.state / counts.events).toFixed(3), (growth.state / growth.events).toFixed(3), ''],
          ['the pack on the state (one query per subject type)', ms(onState), ms(growth.onState), `**${x(growth.onState, onState)}**`],
          ['**full evaluation through the evaluator, steady state**', ms(steady), ms(growth.steady), `**${x(growth.steady, steady)}**`],
          ['rebuild of the state', ms(rebuild), ms(growth.rebuild), x(growth.rebuild, rebuild)],
          ['peak RSS during a full evaluation', mib(peakRss), mib(growth.peakRss), ''],
        ]
      : []
    const matched = rules.map((r) => `${r.id} ${matchedOnState[r.id]} (${matchedOnEvents[r.id]})`).join(', ')
    const body = `${shape.events.toLocaleString('en')} events (events_v1: ${counts.events.toLocaleString('en')} rows; memberships, identity links and traits written to their tables), ${shape.accounts.toLocaleString('en')} accounts, ${shape.users.toLocaleString('en')} users, ${shape.days} days, generated in the embedded engine in ${ms(genEvents + genDir)} (daily rollup ${counts.rollup.toLocaleString('en')} rows, OPTIMIZE FINAL ${ms(optimize)}). The per-day state was built by \`rebuildState\` (what \`signalbox state rebuild\` runs) in ${ms(rebuild)} (${rebuilt.slices} slices, ${rebuilt.measures} rule measures), OPTIMIZE FINAL ${ms(optimizeState)}: ${counts.state.toLocaleString('en')} rows (${counts.accounts.toLocaleString('en')} account, ${counts.users.toLocaleString('en')} user), **${(counts.state / counts.events).toFixed(3)} state rows per event**. Default pack: ${rules.length} rules (${accounts} on accounts, ${rules.length - accounts} on users). Times are medians of ${REPEAT} runs unless noted.

| measure | time | ratio |
| --- | ---: | ---: |
${rows.map((r) => `| ${r.join(' | ')} |`).join('\n')}

Targets: full evaluation ≤ 3× the floor → **${x(steady, floor)}** (evaluator, steady state), ${x(onState, floor)} (rule queries); incremental ≤ 3× the bound → **${x(incremental, bound)}** (evaluator); growth ≤ 1.3× → ${growth ? `**${x(growth.steady, steady)}**` : 'not measured (BENCH_GROWTH=0)'}.

Matched per rule on the state (on the raw events in brackets): ${matched}.

Peak RSS during the first full evaluation: **${mib(peakRss)}** (${mib(rssBefore)} before it; the engine runs in the same process).
${
  growth
    ? `
### Growth: the same subjects with three times the events

| measure | ${shape.events.toLocaleString('en')} events | ${(3 * shape.events).toLocaleString('en')} events | ratio |
| --- | ---: | ---: | ---: |
${growthRows.map((r) => `| ${r.join(' | ')} |`).join('\n')}
`
    : ''
}
Machine: ${cpus().length} cores (load average at the end of the run: ${load}, which counts this benchmark's own engine threads); repeated runs on this machine vary by about ±15-40%.`
    writeSection('rules', 'Rules: default pack on 10M events', body)
  } finally {
    await store.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * What a team would otherwise write: for each subject, one query for its aggregates, pulled into
 * Node, then json-rules-engine decides. Returns the mean time per account and per user.
 */
async function naive(store: Store, rules: Rule[], sample: number): Promise<[number, number]> {
  const engine = new Engine()
  // The account rules of the pack, restated for json-rules-engine on the facts below.
  engine.addRule({ name: 'pql', conditions: { all: [{ fact: 'plan', operator: 'equal', value: 'free' }, { fact: 'messages30', operator: 'greaterThanInclusive', value: 500 }, { fact: 'users7', operator: 'greaterThanInclusive', value: 3 }] }, event: { type: 'pql-product-usage' } })
  engine.addRule({ name: 'churn', conditions: { all: [{ fact: 'plan', operator: 'notEqual', value: 'free' }, { fact: 'dauBase', operator: 'greaterThanInclusive', value: 2 }, { fact: 'dauDropPct', operator: 'greaterThanInclusive', value: 50 }] }, event: { type: 'churn-usage-drop' } })
  engine.addRule({ name: 'champion', conditions: { all: [{ fact: 'plan', operator: 'notEqual', value: 'free' }, { fact: 'championQuiet', operator: 'greaterThanInclusive', value: 14 }, { fact: 'daysSince', operator: 'lessThanInclusive', value: 7 }] }, event: { type: 'champion-gone-quiet' } })
  engine.addRule({ name: 'seats', conditions: { all: [{ fact: 'plan', operator: 'notEqual', value: 'free' }, { fact: 'seatUse', operator: 'greaterThanInclusive', value: 0.9 }] }, event: { type: 'seat-expansion' } })
  const userEngine = new Engine()
  userEngine.addRule({ name: 'mql', conditions: { all: [{ fact: 'score', operator: 'greaterThanInclusive', value: 50 }] }, event: { type: 'mql-engaged-lead' } })
  const t = (d: number) => chTime(NOW - d * DAY)
  const accounts = await store.query<{ id: string }>(`SELECT account_id AS id FROM accounts_v1 ORDER BY cityHash64(account_id) LIMIT ${sample}`)
  const users = await store.query<{ id: string }>(`SELECT user_id AS id FROM users_v1 ORDER BY cityHash64(user_id) LIMIT ${sample}`)
  const perAccount = await bestOf(async () => {
    for (const { id } of accounts) {
      const [agg] = await store.query<Record<string, number | string | null>>(
        `SELECT countIf(event = 'Message Sent' AND timestamp > {t30:DateTime64(3)}) AS messages30,
                uniqExactIf(uk, timestamp > {t7:DateTime64(3)}) AS users7,
                uniqExactIf(uk, timestamp > {t30:DateTime64(3)}) AS users30,
                uniqExactIf((uk, toDate(timestamp)), timestamp > {t7:DateTime64(3)}) / 7 AS dau7,
                uniqExactIf((uk, toDate(timestamp)), timestamp > {t35:DateTime64(3)} AND timestamp <= {t7:DateTime64(3)}) / 28 AS dauBase,
                (toUnixTimestamp64Milli({now:DateTime64(3)}) - toUnixTimestamp64Milli(max(timestamp))) / 86400000 AS daysSince,
                (toUnixTimestamp64Milli({now:DateTime64(3)}) - toUnixTimestamp64Milli(argMax(last, n))) / 86400000 AS championQuiet
         FROM (
           SELECT uk, event, timestamp, count() OVER (PARTITION BY uk) AS n, max(timestamp) OVER (PARTITION BY uk) AS last
           FROM (SELECT if(user_id != '', user_id, anonymous_id) AS uk, event, timestamp FROM events_v1
                 WHERE (account_id = {id:String} OR (account_id = '' AND user_id IN (SELECT user_id FROM memberships_v1 WHERE account_id = {id:String})))
                   AND type IN ('track', 'page', 'screen') AND timestamp > {t90:DateTime64(3)} AND timestamp <= {now:DateTime64(3)}))`,
        { id, t7: t(7), t30: t(30), t35: t(35), t90: t(90), now: t(0) },
      )
      const traits = await store.query<{ key: string; value: string }>(
        'SELECT key, argMax(value, timestamp) AS value FROM account_traits_v1 WHERE account_id = {id:String} GROUP BY key',
        { id },
      )
      const trait = (k: string) => JSON.parse(traits.find((r) => r.key === k)?.value ?? 'null')
      const f = agg ?? {}
      const dauBase = Number(f.dauBase ?? 0)
      await engine.run({
        plan: trait('plan'),
        messages30: Number(f.messages30 ?? 0),
        users7: Number(f.users7 ?? 0),
        dauBase,
        dauDropPct: dauBase > 0 ? ((dauBase - Number(f.dau7 ?? 0)) / dauBase) * 100 : 0,
        championQuiet: Number(f.championQuiet ?? 0),
        daysSince: Number(f.daysSince ?? 999),
        seatUse: Number(trait('seats') ?? 0) > 0 ? Number(f.users30 ?? 0) / Number(trait('seats')) : 0,
      })
    }
  }, 1)
  const mql = rules.find((r) => r.subject === 'user' && r.score)
  const perUser = await bestOf(async () => {
    for (const { id } of users) {
      const events = await store.query<{ event: string; path: string; at: number }>(
        `SELECT event, JSONExtractString(properties, 'path') AS path, toUnixTimestamp64Milli(timestamp) AS at FROM events_v1
         WHERE (user_id = {id:String} OR anonymous_id IN (SELECT previous_id FROM identities_v1 WHERE user_id = {id:String}))
           AND type IN ('track', 'page', 'screen') AND timestamp > {t90:DateTime64(3)} AND timestamp <= {now:DateTime64(3)}`,
        { id, t90: t(90), now: t(0) },
      )
      const [title] = await store.query<{ value: string }>("SELECT argMax(value, timestamp) AS value FROM user_traits_v1 WHERE user_id = {id:String} AND key = 'title'", { id })
      const decay = (at: number) => 2 ** (-(NOW - Number(at)) / (14 * DAY))
      const sum = (pred: (e: { event: string; path: string }) => boolean) => events.filter(pred).reduce((s, e) => s + decay(e.at), 0)
      const days = new Set(events.filter((e) => e.event === 'Page Viewed' && Number(e.at) > NOW - 30 * DAY).map((e) => Math.floor(Number(e.at) / DAY))).size
      const jobTitle = String(JSON.parse(title?.value || 'null') ?? '')
      const score =
        Math.min(30, 10 * sum((e) => e.event === 'Page Viewed' && e.path === '/pricing')) +
        30 * sum((e) => e.event === 'Demo Requested') +
        Math.min(30, 15 * sum((e) => e.event === 'Webinar Registered')) +
        Math.min(20, 10 * sum((e) => e.event === 'Content Downloaded')) +
        (days >= 3 ? 10 : 0) +
        (/VP|Head|Director|Chief|CTO|CEO|Founder/i.test(jobTitle) ? 15 : 0)
      await userEngine.run({ score: mql ? score : 0 })
    }
  }, 1)
  return [perAccount / accounts.length, perUser / users.length]
}

await main()

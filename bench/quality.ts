/**
 * `npm run bench:quality`: the quality report (src/quality/) of each default rule over the
 * bench:rules data (bench/rules-data.ts: 10 million events, 10,000 accounts, 100,000 users, 90
 * days), with a generated history of fires and outcomes, against the plain scan of events_v1
 * measured in the same run (the floor of bench:rules). Target: each report ≤ 3× the floor.
 *
 * The generated history, written inside the engine (INSERT … SELECT), so the outcome rows are
 * shaped like the ones the product writes:
 * - fires (signals_v1) in the 90 days, per rule, for a share of the subjects its `where` admits,
 *   larger where the data makes the rule likely (busy free teams, quiet accounts, full seats);
 * - outcomes after a share of those fires (within 1–25 days) and at random for a few others:
 *   stage moves (customer, churned) in stage_transitions_v1, plan and seat changes in
 *   account_traits_v1, `Subscription Cancelled` events in events_v1;
 * - feedback on one fire in ten.
 *
 * BENCH_EVENTS / BENCH_ACCOUNTS / BENCH_USERS scale it down for a quick look; BENCH_KEEP=1 keeps the
 * generated store (bench/.scratch/quality/) for the next run.
 */
import { existsSync, rmSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { applyDefaultPack, listRules } from '../rules/store.js'
import { loadConfig } from '../src/config.js'
import { applyDefaultOutcomes } from '../src/quality/outcome-store.js'
import { type QualityReport, qualityReport } from '../src/quality/quality.js'
import { migrate } from '../src/store/migrate.js'
import { openStore } from '../src/store/node.js'
import type { Store } from '../src/store/store.js'
import { chTime } from '../src/time.js'
import { generate, generateDirectory, shapeFromEnv } from './rules-data.js'
import { median, ms, timed, withPeakRss, writeSection } from './report.js'

const DAY = 86_400_000
const NOW = Date.UTC(2026, 2, 1, 12)
const shape = shapeFromEnv(NOW)
const REPEAT = 3

const log = (s: string) => process.stderr.write(`${s}\n`)

/** Median of a few runs (the first also warms the page cache), and the last result. */
async function bestOf<T>(fn: () => Promise<T>, n = REPEAT): Promise<[number, T]> {
  const times: number[] = []
  let last: T | undefined
  for (let i = 0; i < n; i++) {
    const [t, r] = await timed(fn)
    times.push(t)
    last = r
  }
  return [median(times), last as T]
}

const t = (ms: number) => `toDateTime64('${chTime(ms)}', 3, 'UTC')`
/** A uniform share in [0, 1) of a subject, independent per `salt`. */
const share = (col: string, salt: number) => `(cityHash64(${col}, ${salt}) % 10000) / 10000`

/**
 * Fires of one rule: a subject of `from` (`SELECT id, likely` rows) fires once, at a random time
 * in the first 85 days, with probability `likely` (0…1).
 */
async function fires(store: Store, rule: { id: string; kind: string; subject: string }, subjects: string, salt: number) {
  await store.command(
    `INSERT INTO signals_v1 (id, rule_id, rule_version, kind, subject_type, subject_id, status, fired_at, resolved_at, score, reasons, version)
     SELECT concat('sig_bench_', toString(${salt}), '_', id), '${rule.id}', 1, '${rule.kind}', '${rule.subject}', id, 'open',
            ${t(NOW - 90 * DAY)} + toIntervalMillisecond(cityHash64(id, ${salt}, 1) % ${85 * DAY}), NULL, NULL, '[]', 1
     FROM (${subjects}) WHERE ${share('id', salt)} < likely`,
  )
}

/** The latest plan of each account, as SQL over account_traits_v1. */
const PLANS = `SELECT account_id AS id, JSONExtractString(argMax(value, timestamp)) AS plan FROM account_traits_v1 WHERE key = 'plan' GROUP BY account_id`

async function history(store: Store) {
  const accounts = (likely: string) => `SELECT id, toFloat64(${likely}) AS likely FROM (${PLANS})`
  // Busy free teams (id ending in 3) are the PQL candidates; quiet paying accounts (7) the churn
  // ones; accounts with 4 seats (5) the expansion ones.
  const tail = (d: number) => `endsWith(id, '${d}')`
  await fires(store, { id: 'pql-product-usage', kind: 'pql', subject: 'account' }, accounts(`if(plan = 'free', if(${tail(3)}, 0.6, 0.02), 0)`), 11)
  await fires(store, { id: 'churn-usage-drop', kind: 'churn_risk', subject: 'account' }, accounts(`if(plan != 'free', if(${tail(7)}, 0.7, 0.03), 0)`), 12)
  await fires(store, { id: 'champion-gone-quiet', kind: 'churn_risk', subject: 'account' }, accounts(`if(plan != 'free', if(${tail(7)}, 0.4, 0.05), 0)`), 13)
  await fires(store, { id: 'seat-expansion', kind: 'expansion', subject: 'account' }, accounts(`if(plan != 'free', if(${tail(5)}, 0.7, 0.02), 0)`), 14)
  await fires(store, { id: 'mql-engaged-lead', kind: 'mql', subject: 'user' }, `SELECT user_id AS id, 0.03 AS likely FROM users_v1`, 15)

  // Outcomes after a share of the fires, 1–25 days later.
  const after = (salt: number) => `fired_at + toIntervalMillisecond(${DAY} + cityHash64(id, ${salt}) % ${24 * DAY})`
  const stage = (to: string, select: string) =>
    store.command(
      `INSERT INTO stage_transitions_v1 (subject_type, subject_id, id, at, from_stage, to_stage, cause_type, cause, reason, recorded_at)
       SELECT 'account', subject_id, concat('bench:', toString(cityHash64(subject_id, at))), at, 'lead', '${to}', 'api', '', 'bench', at FROM (${select})`,
    )
  const firedOf = (rule: string, p: number, salt: number) =>
    `SELECT subject_id, ${after(salt)} AS at FROM signals_v1 WHERE rule_id = '${rule}' AND ${share('id', salt)} < ${p}`
  const atRandom = (where: string, p: number, salt: number) =>
    `SELECT id AS subject_id, ${t(NOW - 90 * DAY)} + toIntervalMillisecond(cityHash64(id, ${salt}) % ${88 * DAY}) AS at FROM (${PLANS}) WHERE ${where} AND ${share('id', salt)} < ${p}`
  await stage('customer', firedOf('pql-product-usage', 0.4, 21))
  await stage('customer', atRandom("plan = 'free'", 0.03, 22))
  await stage('churned', firedOf('churn-usage-drop', 0.3, 23))
  await stage('churned', firedOf('champion-gone-quiet', 0.2, 24))
  await stage('churned', atRandom("plan != 'free'", 0.02, 25))
  // An MQL's account converts: the user's first account.
  await stage('customer', `SELECT any(m.account_id) AS subject_id, any(s.at) AS at FROM (${firedOf('mql-engaged-lead', 0.1, 26)}) AS s INNER JOIN memberships_v1 AS m ON m.user_id = s.subject_id GROUP BY s.subject_id`)

  const trait = (key: string, value: string, select: string) =>
    store.command(
      `INSERT INTO account_traits_v1 (account_id, key, value, timestamp, source, message_id)
       SELECT subject_id, '${key}', ${value}, at, 'app', concat('bench-', toString(cityHash64(subject_id, at, '${key}'))) FROM (${select})`,
    )
  await trait('plan', `'"pro"'`, firedOf('pql-product-usage', 0.2, 31))
  await trait('seats', `'20'`, firedOf('seat-expansion', 0.5, 32))
  await trait('plan', `'"enterprise"'`, `SELECT subject_id, at FROM (${firedOf('seat-expansion', 0.2, 33)}) WHERE subject_id IN (SELECT id FROM (${PLANS}) WHERE plan = 'pro')`)
  await trait('seats', `'40'`, atRandom("plan != 'free'", 0.02, 34))

  await store.command(
    `INSERT INTO events_v1 (source, message_id, type, event, user_id, anonymous_id, account_id, timestamp, received_at, properties, traits, context, previous_id)
     SELECT 'app', concat('bench-cancel-', subject_id), 'track', 'Subscription Cancelled', concat('u', substring(subject_id, 4)), '', subject_id, at, at, '{}', '{}', '{}', ''
     FROM (${firedOf('churn-usage-drop', 0.2, 41)})`,
  )
  await store.command(
    `INSERT INTO signal_feedback_v1 (id, signal_id, verdict, reason, by, created_at)
     SELECT concat('fb_bench_', id), id, if(cityHash64(id, 52) % 3 = 0, 'not_useful', 'useful'), '', 'bench', fired_at + INTERVAL 1 HOUR
     FROM signals_v1 WHERE ${share('id', 51)} < 0.1`,
  )
}

async function main() {
  const dir = fileURLToPath(new URL('./.scratch/quality/', import.meta.url))
  // BENCH_KEEP=1 keeps the generated store for the next run, which then skips generating.
  const keep = process.env.BENCH_KEEP === '1'
  const reuse = keep && existsSync(dir)
  if (!reuse) rmSync(dir, { recursive: true, force: true })
  const store = await openStore(loadConfig({ DATA_DIR: dir, LOG_LEVEL: 'silent' }))
  try {
    await migrate(store)
    let gen = 0
    let genHistory = 0
    if (!reuse) {
      log(`generating ${shape.events.toLocaleString('en')} events…`)
      ;[gen] = await timed(async () => {
        await generate(store, shape)
        await generateDirectory(store, shape)
        await store.command('OPTIMIZE TABLE activity_daily_v1 FINAL')
      })
      await applyDefaultPack(store, NOW)
      await applyDefaultOutcomes(store, NOW)
      ;[genHistory] = await timed(() => history(store))
    }
    const [counts] = await store.query<Record<string, number>>(
      `SELECT (SELECT count() FROM events_v1) AS events, (SELECT count() FROM signals_v1) AS signals,
              (SELECT count() FROM stage_transitions_v1) AS stages, (SELECT count() FROM account_traits_v1) AS traits,
              (SELECT count() FROM signal_feedback_v1) AS feedback`,
    )
    log('generated')
    const rules = (await listRules(store)).map((s) => s.rule)

    // The floor of bench:rules: one plain scan of events_v1 grouped by account.
    const [floor] = await bestOf(() => store.query('SELECT account_id, count() AS events FROM events_v1 GROUP BY account_id'))
    const from = NOW - 90 * DAY
    const rssBefore = process.memoryUsage().rss
    const results: { id: string; time: number; report: QualityReport }[] = []
    const [peakRss] = await withPeakRss(async () => {
      for (const rule of rules) {
        const [time, report] = await bestOf(() => qualityReport(store, rule, { from, to: NOW, now: NOW }))
        results.push({ id: rule.id, time, report })
      }
    })
    const worst = Math.max(...results.map((r) => r.time))
    const pct = (x: number | null) => (x === null ? '–' : x.toFixed(3))
    const rows = [
      ['Plain scan of events_v1 grouped by account (**the floor**)', ms(floor), '1.0×', '', ''],
      ...results.map(({ id, time, report: q }) => [
        `quality of \`${id}\` (outcome \`${q.outcome}\`, ${q.horizon})`,
        ms(time),
        `${(time / floor).toFixed(1)}×`,
        `${q.eligible.toLocaleString('en')} / ${q.fired.toLocaleString('en')} / ${q.pending.toLocaleString('en')}`,
        `${pct(q.precision)} / ${pct(q.base_rate)} / ${q.lift === null ? '–' : q.lift.toFixed(1)}`,
      ]),
    ]
    const load = loadavg().map((x) => x.toFixed(1)).join(', ')
    const body = `${shape.events.toLocaleString('en')} events (bench/rules-data.ts; events_v1: ${Number(counts?.events).toLocaleString('en')} rows with the generated cancellations), ${shape.accounts.toLocaleString('en')} accounts, ${shape.users.toLocaleString('en')} users, 90 days, generated in ${ms(gen)}; the history (bench/quality.ts): ${Number(counts?.signals).toLocaleString('en')} fires, ${Number(counts?.stages).toLocaleString('en')} stage moves, ${Number(counts?.traits).toLocaleString('en')} trait rows, ${Number(counts?.feedback).toLocaleString('en')} verdicts, generated in ${ms(genHistory)}. Each report: the last 90 days, the rule's default outcome and horizon, one ClickHouse query plus the feedback count; times are medians of ${REPEAT} runs.

| measure | time | ratio | eligible / fired / pending | precision / base rate / lift |
| --- | ---: | ---: | ---: | ---: |
${rows.map((r) => `| ${r.join(' | ')} |`).join('\n')}

Target: each report ≤ 3× the floor → the slowest **${(worst / floor).toFixed(1)}×** (${results.find((r) => r.time === worst)?.id}).

Peak RSS during the reports: **${(peakRss / 2 ** 20).toFixed(0)} MiB** (${(rssBefore / 2 ** 20).toFixed(0)} MiB before them; the engine runs in the same process). Machine: ${cpus().length} cores; load average at the end of the run: ${load} (it counts this benchmark's own engine threads).`
    writeSection('quality', 'Quality: the report of each default rule on 10M events', body)
  } finally {
    await store.close()
    if (!keep) rmSync(dir, { recursive: true, force: true })
  }
}

await main()

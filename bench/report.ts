import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'
import { fileURLToPath } from 'node:url'

const FILE = fileURLToPath(new URL('../BENCHMARKS.md', import.meta.url))

export function machine(): string {
  const cpu = cpus()[0]?.model ?? 'unknown cpu'
  return `${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, ${process.platform}-${process.arch}`
}

/**
 * Replace (or add) one benchmark's section of BENCHMARKS.md, stamped with the machine and date,
 * leaving the other benchmarks' sections as they are. Also prints the section.
 */
export function writeSection(name: string, title: string, body: string) {
  const begin = `<!-- bench:${name}:begin -->`
  const end = `<!-- bench:${name}:end -->`
  const section = `${begin}\n## ${title}\n\n_Run ${new Date().toISOString()} on ${machine()}._\n\n${body.trim()}\n${end}`
  let doc = existsSync(FILE)
    ? readFileSync(FILE, 'utf8')
    : '# Benchmarks\n\nWritten by `npm run bench` (and the per-area `bench:*` scripts). Each figure is a ratio against a baseline measured in the same run on the same machine.\n'
  const re = new RegExp(`${begin}[\\s\\S]*?${end}`)
  doc = re.test(doc) ? doc.replace(re, section) : `${doc.trimEnd()}\n\n${section}\n`
  writeFileSync(FILE, doc)
  process.stdout.write(`\n${section}\n`)
}

/** Percentile of a list of numbers (nearest-rank). */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] as number
}

/** A duration as the reports print it: `83.2 ms`, `3319 ms`. */
export const ms = (x: number) => `${x >= 100 ? x.toFixed(0) : x.toFixed(1)} ms`

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number

/** How long `fn` takes, and what it returned. */
export async function timed<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t = performance.now()
  const r = await fn()
  return [performance.now() - t, r]
}

/** Peak RSS while `fn` runs, sampled every 10 ms (the embedded engine runs in this process). */
export async function withPeakRss<T>(fn: () => Promise<T>): Promise<[number, T]> {
  let peak = process.memoryUsage().rss
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10)
  try {
    const r = await fn()
    return [Math.max(peak, process.memoryUsage().rss), r]
  } finally {
    clearInterval(timer)
  }
}

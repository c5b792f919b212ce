/**
 * Time as ClickHouse holds it: `DateTime64(3, 'UTC')` text (`2026-11-23 10:00:00.123`), and back.
 * Every module that writes a time into a query or a row, or reads one out, goes through these.
 */

const recentTimes = new Map<number, string>()

/** Epoch milliseconds → ClickHouse DateTime64(3) text in UTC: `2026-11-23 10:00:00.123`. */
export function chTime(ms: number): string {
  // The messages of a batch share their sentAt and receivedAt, and often their timestamps.
  let text = recentTimes.get(ms)
  if (text === undefined) {
    const iso = new Date(ms).toISOString()
    text = `${iso.slice(0, 10)} ${iso.slice(11, 23)}`
    if (recentTimes.size >= 256) recentTimes.clear()
    recentTimes.set(ms, text)
  }
  return text
}

/** ClickHouse DateTime/DateTime64 text in UTC (as a query returns it) → epoch milliseconds. */
export const msFromCh = (s: string): number => Date.parse(`${s.replace(' ', 'T')}Z`)

/** ClickHouse DateTime/DateTime64 text in UTC → ISO 8601 (`2026-11-23T10:00:00.123Z`), the API's form. */
export const isoFromCh = (s: string): string => new Date(msFromCh(s)).toISOString()

/** The UTC calendar day of a moment, `2026-11-23`: ClickHouse `Date` text. */
export const utcDate = (ms: number): string => new Date(ms).toISOString().slice(0, 10)

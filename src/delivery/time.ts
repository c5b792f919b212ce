import { chTime } from '../../ingest/normalize.js'

export { chTime }

/** A DateTime64 as ClickHouse returns it (`2026-07-01 12:00:00.000`, UTC) → ISO 8601. */
export const isoFromCh = (s: string) => new Date(`${s.replace(' ', 'T')}Z`).toISOString()
export const msFromCh = (s: string) => Date.parse(`${s.replace(' ', 'T')}Z`)

import { z } from 'zod'
import type { Store } from '../../src/store/store.js'
import type { PropertyFilter, Rule } from '../schema.js'

/**
 * The measures the per-day state keeps beyond messages per event name (state_daily_v1 `sums`,
 * `maxes`, `mins`; migration 023): what the enabled rules read that a plain event selector does
 * not give. Each is keyed by a hash of its definition, so the writer, the reader and every
 * process agree on its key without asking each other.
 *
 * - `count` / `last`: messages and the last time (ms) of a selector with property filters;
 * - `sum` / `nonnull` / `max` / `min`: of a numeric property over a selector's events;
 * - `decay`: Σ 2^((t − end of the event's UTC day) / halfLife) over a selector's events. Read as
 *   of `now`, a day's value is multiplied by 2^((end of that day − now) / halfLife): the same
 *   Σ 2^((t − now) / halfLife) the reference computes per event, and no term ever exceeds 1.
 */
export type MeasureKind = 'count' | 'last' | 'sum' | 'nonnull' | 'max' | 'min' | 'decay'

export type MeasureDef = {
  subject: Rule['subject']
  kind: MeasureKind
  event?: string | string[]
  where?: PropertyFilter[]
  property?: string
  halfLife?: number
}

export type Measure = MeasureDef & { key: number }

/** Which map a measure's values live in, and how they merge. */
export const MAP_OF: Record<MeasureKind, 'sums' | 'maxes' | 'mins'> = {
  count: 'sums',
  last: 'maxes',
  sum: 'sums',
  nonnull: 'sums',
  max: 'maxes',
  min: 'mins',
  decay: 'sums',
}

/** The definition in one canonical text: event lists sorted, filters in a fixed order. */
export function canonical(d: MeasureDef): string {
  const event = d.event === undefined ? null : Array.isArray(d.event) ? [...new Set(d.event)].sort() : d.event
  const where = (d.where ?? []).map((f) => JSON.stringify([f.property, f.op, f.value ?? null])).sort()
  return JSON.stringify([d.subject, d.kind, event, where, d.property ?? null, d.halfLife ?? null])
}

/** 32-bit FNV-1a of the canonical text: a few hundred measures collide with odds of about 1 in 10^5. */
export function measureKey(d: MeasureDef): number {
  let h = 0x811c9dc5
  for (const byte of new TextEncoder().encode(canonical(d))) {
    h ^= byte
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h >>> 0
}

export const measure = (d: MeasureDef): Measure => ({ ...d, key: measureKey(d) })

/** Measures by key, keeping the first of equal definitions. */
export function uniqueMeasures(ms: Iterable<Measure>): Measure[] {
  const out = new Map<number, Measure>()
  for (const m of ms) if (!out.has(m.key)) out.set(m.key, m)
  return [...out.values()].sort((a, b) => a.key - b.key)
}

const Row = z.object({ key: z.coerce.number(), definition: z.string(), status: z.string() })

export type MeasureStatus = 'ready' | 'building'

/** The measures recorded in state_measures_v1, with their status. */
export async function loadMeasures(store: Store): Promise<{ measure: Measure; status: MeasureStatus }[]> {
  const rows = await store.query('SELECT key, argMax(definition, version) AS definition, argMax(status, version) AS status FROM state_measures_v1 GROUP BY key')
  return rows.map((raw) => {
    const r = Row.parse(raw)
    return { measure: { ...(JSON.parse(r.definition) as MeasureDef), key: r.key }, status: r.status === 'ready' ? 'ready' : 'building' }
  })
}

let lastVersion = 0

/**
 * Record measures with a status (a new version of each row). Versions come from the wall clock,
 * strictly increasing in this process: they order the rows, they are not the rules' time.
 */
export async function saveMeasures(store: Store, measures: Measure[], status: MeasureStatus): Promise<void> {
  if (!measures.length) return
  lastVersion = Math.max(lastVersion + 1, Date.now() * 1000)
  const version = lastVersion
  await store.insert(
    'state_measures_v1',
    measures.map((m) => {
      const { key, ...def } = m
      return { key, subject: m.subject, definition: JSON.stringify(def), status, version }
    }),
  )
}

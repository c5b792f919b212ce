import { getUnsafeNumberReason, isLosslessNumber, LosslessNumber, UnsafeNumberReason, parse as losslessParse, stringify as losslessStringify } from 'lossless-json'

/**
 * How deep a message may nest: the message object is level 1, `properties` level 2, and so on.
 * Deeper messages are rejected with the path where the limit is crossed, so that nothing
 * downstream (serialisation, ClickHouse's JSON functions) ever recurses over an attacker's depth.
 */
export const MAX_DEPTH = 64

/** How a body was parsed: natively, or keeping the numbers a double would change as `LosslessNumber`s. */
export type Parsed = { value: unknown; lossless: boolean }

/** What one walk over a parsed value found; the walk is iterative, so any depth is safe. */
export type Inspection = {
  /** The deepest level of objects and arrays (a scalar is 0, `{}` is 1). */
  depth: number
  /** A number that a double holds only approximately: an integer beyond 2^53, or beyond ±1.8e308. */
  unsafeNumber: boolean
  /** A string or key with a lone UTF-16 surrogate (only a `\uD800`-style escape in the JSON gives one). */
  loneSurrogate: boolean
}

/** Whether a number parsed natively may differ from what was sent. */
const unsafe = (n: number) => !Number.isFinite(n) || (Number.isInteger(n) && !Number.isSafeInteger(n))

/** Walk a parsed JSON value without recursion. */
export function inspect(root: unknown): Inspection {
  let depth = 0
  let unsafeNumber = false
  let loneSurrogate = false
  const values: unknown[] = [root]
  const levels: number[] = [0]
  while (values.length > 0) {
    const v = values.pop()
    const level = levels.pop() as number
    if (typeof v === 'string') {
      if (!loneSurrogate && !v.isWellFormed()) loneSurrogate = true
      continue
    }
    if (typeof v === 'number') {
      if (!unsafeNumber && unsafe(v)) unsafeNumber = true
      continue
    }
    if (typeof v !== 'object' || v === null || isLosslessNumber(v)) continue
    const inner = level + 1
    if (inner > depth) depth = inner
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        values.push(v[i])
        levels.push(inner)
      }
      continue
    }
    for (const k in v) {
      if (!loneSurrogate && !k.isWellFormed()) loneSurrogate = true
      values.push((v as Record<string, unknown>)[k])
      levels.push(inner)
    }
  }
  return { depth, unsafeNumber, loneSurrogate }
}

/**
 * The path (`properties.a.0`) of the first object or array deeper than `limit`, counting `root`
 * as level 1, or undefined if there is none. Iterative, like `inspect`.
 */
export function pathDeeperThan(root: unknown, limit: number): string | undefined {
  const stack: { v: unknown; path: string[] }[] = [{ v: root, path: [] }]
  while (stack.length > 0) {
    const { v, path } = stack.pop() as { v: unknown; path: string[] }
    if (typeof v !== 'object' || v === null || isLosslessNumber(v)) continue
    if (path.length >= limit) return path.join('.')
    const entries = Array.isArray(v) ? v.map((x, i) => [String(i), x] as const) : Object.entries(v)
    for (let i = entries.length - 1; i >= 0; i--) {
      const [k, x] = entries[i] as readonly [string, unknown]
      if (typeof x === 'object' && x !== null) stack.push({ v: x, path: [...path, k] })
    }
  }
  return undefined
}

/**
 * Replace every lone surrogate in the strings and keys of `root` with U+FFFD, as the WHATWG
 * `TextEncoder` does when it writes UTF-8. In place where possible (objects with a changed key are
 * rebuilt, keeping the key order); returns the new root.
 */
export function toWellFormed(root: unknown): unknown {
  const fix = (v: unknown): unknown => (typeof v === 'string' && !v.isWellFormed() ? v.toWellFormed() : v)
  const top = { root }
  const stack: object[] = [top]
  while (stack.length > 0) {
    const o = stack.pop() as Record<string, unknown> | unknown[]
    if (Array.isArray(o)) {
      for (let i = 0; i < o.length; i++) {
        o[i] = fix(o[i])
        if (typeof o[i] === 'object' && o[i] !== null) stack.push(o[i] as object)
      }
      continue
    }
    if (isLosslessNumber(o)) continue
    const keys = Object.keys(o)
    const badKey = keys.some((k) => !k.isWellFormed())
    const entries = keys.map((k) => [badKey ? k.toWellFormed() : k, fix(o[k])] as const)
    if (badKey) for (const k of keys) delete o[k]
    for (const [k, v] of entries) {
      o[k] = v
      if (typeof v === 'object' && v !== null) stack.push(v)
    }
  }
  return top.root
}

/**
 * Integers a double cannot hold exactly, and numbers beyond its range, stay as their text; every
 * other number becomes the nearest double, as the native parse gives it (so a decimal with more
 * digits than a double holds, or one that underflows to 0, is stored alike whichever parse ran).
 */
function parseNumber(text: string): number | LosslessNumber {
  const reason = getUnsafeNumberReason(text)
  return reason === UnsafeNumberReason.truncate_integer || reason === UnsafeNumberReason.overflow ? new LosslessNumber(text) : Number(text)
}

/**
 * Parse JSON text, keeping numbers as sent: natively (fast), and again with lossless-json only
 * when the native result holds a number a double may have changed (an integer beyond 2^53, an
 * infinity from `1e309`). Beyond lossless-json's recursion limit (thousands of levels, refused
 * later by `MAX_DEPTH` anyway) the native result is kept. Throws SyntaxError if not JSON.
 */
export function parseJson(text: string): Parsed & { inspection: Inspection } {
  const value: unknown = JSON.parse(text)
  const inspection = inspect(value)
  if (!inspection.unsafeNumber) return { value, lossless: false, inspection }
  try {
    return { value: losslessParse(text, null, parseNumber), lossless: true, inspection }
  } catch (err) {
    if (err instanceof RangeError) return { value, lossless: false, inspection }
    throw err
  }
}

/** JSON.stringify that writes a `LosslessNumber` as the digits it holds (when `lossless`). */
export function stringifyJson(value: unknown, lossless: boolean): string {
  return lossless ? (losslessStringify(value) as string) : JSON.stringify(value)
}

export { isLosslessNumber, LosslessNumber }

import { timingSafeEqual } from 'node:crypto'
import type { WriteKey } from './config.js'
import { sha256 } from './hash.js'

/** Constant-time equality of two secrets of any length (compared as SHA-256 digests). */
export function secretEquals(given: string, expected: string): boolean {
  return timingSafeEqual(sha256(given), sha256(expected))
}

/**
 * Resolve a write key to its source. Every configured key is compared, in constant time, so the
 * answer's timing does not tell how close a guess was nor which key matched.
 */
export function sourceOf(keys: readonly WriteKey[], given: string | undefined): WriteKey | undefined {
  if (!given) return undefined
  let found: WriteKey | undefined
  for (const k of keys) if (secretEquals(given, k.key)) found = k
  return found
}

/** The write key from `Authorization: Basic base64(key:)`, as Segment's libraries send it. */
export function basicUsername(header: string | undefined): string | undefined {
  const m = header?.match(/^Basic\s+(.+)$/i)
  if (!m) return undefined
  const decoded = Buffer.from(m[1] as string, 'base64').toString('utf8')
  const i = decoded.indexOf(':')
  return i === -1 ? decoded : decoded.slice(0, i)
}

export function bearerToken(header: string | undefined): string | undefined {
  return header?.match(/^Bearer\s+(.+)$/i)?.[1]
}

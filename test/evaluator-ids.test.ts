import { describe, expect, it } from 'vitest'
import { MAX_ID_BYTES_PER_QUERY, MAX_IDS_PER_QUERY, idChunks } from '../src/store/ids.js'

describe('id lists cut for query parameters (URLs are capped at 1 MiB)', () => {
  it('keeps every id once, in order, within the count and the encoded-size limits', () => {
    const short = Array.from({ length: 12_345 }, (_, i) => `u${i}`)
    const parts = [...idChunks(short)]
    expect(parts.flat()).toEqual(short)
    expect(parts.map((p) => p.length)).toEqual([MAX_IDS_PER_QUERY, MAX_IDS_PER_QUERY, 2_345])

    // 50,000 long ids (~100 bytes, up to 3x when percent-encoded): cut by size, not by count.
    const long = Array.from({ length: 50_000 }, (_, i) => `acct-${String(i).padStart(8, '0')}-${'x'.repeat(86)}`)
    const cut = [...idChunks(long)]
    expect(cut.flat()).toEqual(long)
    for (const p of cut) expect(p.reduce((n, id) => n + id.length * 3 + 3, 0)).toBeLessThanOrEqual(MAX_ID_BYTES_PER_QUERY)
    expect(cut.length).toBe(Math.ceil(50_000 / Math.floor(MAX_ID_BYTES_PER_QUERY / 303)))
    expect(MAX_ID_BYTES_PER_QUERY).toBeLessThan(2 ** 20 / 4)
  })

  it('gives an over-long single id its own list, and nothing for no ids', () => {
    const huge = 'h'.repeat(MAX_ID_BYTES_PER_QUERY)
    expect([...idChunks(['a', huge, 'b'])]).toEqual([['a'], [huge], ['b']])
    expect([...idChunks([])]).toEqual([])
  })
})

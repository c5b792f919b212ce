/** Ids per query parameter list. */
export const MAX_IDS_PER_QUERY = 5_000
/**
 * Encoded bytes per query parameter list: HTTP stores (@clickhouse/client) carry query
 * parameters in the URL, which ClickHouse servers cap at 1 MiB, and percent-encoding can triple
 * a byte. Lists are cut by count and by this size.
 */
export const MAX_ID_BYTES_PER_QUERY = 200_000

/** `items` in consecutive slices that each fit one query's parameter list. */
export function* idChunks(items: readonly string[], size = MAX_IDS_PER_QUERY): Generator<string[]> {
  let start = 0
  let bytes = 0
  for (let i = 0; i < items.length; i++) {
    const b = (items[i] as string).length * 3 + 3
    if (i > start && (i - start >= size || bytes + b > MAX_ID_BYTES_PER_QUERY)) {
      yield items.slice(start, i)
      start = i
      bytes = 0
    }
    bytes += b
  }
  if (start < items.length) yield items.slice(start)
}

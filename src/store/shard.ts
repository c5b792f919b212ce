/** One of `count` evaluators' part of the subjects (EVAL_SHARDS / EVAL_SHARD). */
export type Shard = { count: number; index: number }

/**
 * The one definition of which shard a subject belongs to: `cityHash64(id) % count = index`, with
 * both numbers bound as UInt64 parameters by `bind`. The rules compiler (its own binder) and the
 * signal queries (`shardFilter`) both call it, so a subject's rule rows and its entry states are
 * always read by the same shard.
 */
export function shardPredicate(column: string, shard: Shard, bind: (value: number, type: 'UInt64') => string): string {
  return `cityHash64(${column}) % ${bind(shard.count, 'UInt64')} = ${bind(shard.index, 'UInt64')}`
}

/** `shardPredicate` with named parameters, for a query outside the compiler; none for one shard or none. */
export function shardFilter(column: string, shard: Shard | undefined): { sql: string; params: Record<string, number> } | undefined {
  if (!shard || shard.count <= 1) return undefined
  const params: Record<string, number> = {}
  const sql = shardPredicate(column, shard, (value, type) => {
    const name = `shard_${Object.keys(params).length}`
    params[name] = value
    return `{${name}:${type}}`
  })
  return { sql, params }
}

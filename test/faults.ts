import type { Store } from '../src/store/store.js'

/**
 * The real store with faults switched on and off by the test (or `npm run chaos`): every call
 * goes to the real engine unless a fault says otherwise.
 * - `refuseRows`: an insert whose rows (as JSON or raw text) match is refused as ClickHouse refuses
 *   data it cannot parse (code 117), standing for a poison no boundary check knows yet;
 * - `down`: every call fails as a connection that is refused does (also the ping);
 * - `failInsertsAfter`: the next N inserts pass, the ones after fail as `down` does (a store
 *   that dies in the middle of a block's inserts).
 */
export function faultyStore(inner: Store) {
  const faults: { refuseRows?: RegExp; down: boolean; failInsertsAfter?: number } = { down: false }
  const refused = () => Object.assign(new Error('Code: 117. DB::Exception: Cannot parse the row (a fault injected by the test). (INCORRECT_DATA)'), { code: '117' })
  const unreachable = () => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:8123 (a fault injected by the test)'), { code: 'ECONNREFUSED' })
  const gate = async () => {
    if (faults.down) throw unreachable()
  }
  const insertGate = (text: () => string) => {
    if (faults.down) throw unreachable()
    if (faults.failInsertsAfter !== undefined) {
      if (faults.failInsertsAfter <= 0) throw unreachable()
      faults.failInsertsAfter--
    }
    if (faults.refuseRows?.test(text())) throw refused()
  }
  const store: Store = {
    kind: inner.kind,
    async query(sql, params) {
      await gate()
      return inner.query(sql, params)
    },
    async command(sql, params) {
      await gate()
      return inner.command(sql, params)
    },
    async ping() {
      await gate()
      return inner.ping()
    },
    close: () => inner.close(),
    async insert(table, rows, settings) {
      if (rows.length > 0) insertGate(() => JSON.stringify(rows))
      return inner.insert(table, rows, settings)
    },
    async insertRaw(table, text, opts) {
      if (text.length > 0) insertGate(() => (typeof text === 'string' ? text : new TextDecoder().decode(text)))
      return inner.insertRaw(table, text, opts)
    },
  }
  return { store, faults }
}

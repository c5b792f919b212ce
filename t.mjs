import { createClient } from '@clickhouse/client'
import { createChdbConnection } from 'chdb/connection'
const conn = createChdbConnection({ path: '/tmp/chtest2' })
let client = createClient({ connection: conn })
await client.command({query:'CREATE DATABASE IF NOT EXISTS sb'})
client = createClient({ connection: conn, database: 'sb' })
console.log(await (await client.query({query:'select currentDatabase() d', format:'JSONEachRow'})).json())
await client.command({query:`CREATE TABLE IF NOT EXISTS ev (source LowCardinality(String), message_id String, account_id String, user_id String, ts DateTime64(3,'UTC'), props String,
 PROJECTION by_message (SELECT source, message_id ORDER BY source, message_id))
 ENGINE=MergeTree PARTITION BY toYYYYMM(ts) ORDER BY (account_id, user_id, ts)`})
const N=200000
for (let b=0;b<20;b++){
 const rows = Array.from({length:10000},(_,i)=>({source:'web',message_id:crypto.randomUUID(),account_id:'a'+(i%100),user_id:'u'+i,ts:'2026-11-01 10:00:00.123',props:'{"a":1}'}))
 let t=performance.now(); await client.insert({table:'ev', values: rows, format:'JSONEachRow'}); if(b%5==0) console.log('insert 10k', performance.now()-t)
}
const ids = Array.from({length:5000},()=>crypto.randomUUID())
let t=performance.now()
const r = await client.query({query:'SELECT message_id FROM ev WHERE source = {s:String} AND message_id IN {ids:Array(String)}', query_params:{s:'web', ids}, format:'JSONEachRow'})
console.log((await r.json()).length, 'lookup', performance.now()-t)
t=performance.now()
const r2 = await client.query({query:'EXPLAIN indexes=1, projections=1 SELECT message_id FROM ev WHERE source = {s:String} AND message_id IN {ids:Array(String)}', query_params:{s:'web', ids:ids.slice(0,3)}, format:'TabSeparatedRaw'})
console.log(await r2.text())
await client.close()

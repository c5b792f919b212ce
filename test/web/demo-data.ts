/**
 * A small, realistic company for the workspace's browser tests and screenshots: accounts that
 * make each rule of the default pack fire (a busy free team → PQL, an engaged VP → MQL, a paying
 * account whose usage halved → churn risk, a champion gone quiet, seats full → expansion) and a few
 * quiet ones. Sent through the tracking API as a client would, with timestamps in the past.
 */

const DAY = 86_400_000

type Msg = Record<string, unknown>

export type DemoOptions = { url: string; writeKey: string; now?: number }

function* range(n: number) {
  for (let i = 0; i < n; i++) yield i
}

export function demoMessages(now = Date.now()): Msg[] {
  const out: Msg[] = []
  let n = 0
  const at = (daysAgo: number, minute = 0) => new Date(now - daysAgo * DAY - minute * 60_000).toISOString()
  const track = (userId: string, event: string, daysAgo: number, accountId?: string, properties: Record<string, unknown> = {}) =>
    out.push({
      type: 'track',
      userId,
      event,
      properties,
      timestamp: at(daysAgo, (n % 600) + 1),
      messageId: `demo-${n++}`,
      ...(accountId ? { context: { groupId: accountId } } : {}),
    })
  const person = (userId: string, accountId: string, traits: Record<string, unknown>, daysAgo = 60) => {
    out.push({ type: 'identify', userId, traits, timestamp: at(daysAgo), messageId: `demo-${n++}` })
    out.push({ type: 'group', userId, groupId: accountId, traits: {}, timestamp: at(daysAgo), messageId: `demo-${n++}` })
  }
  const account = (accountId: string, ownerId: string, traits: Record<string, unknown>, daysAgo = 60) =>
    out.push({ type: 'group', userId: ownerId, groupId: accountId, traits, timestamp: at(daysAgo), messageId: `demo-${n++}` })

  // Acme: a free workspace whose team sends a lot of messages → PQL.
  account('acme', 'acme-1', { name: 'Acme Corp', domain: 'acme.com', plan: 'free', seats: 20 })
  const acme = ['ada', 'bo', 'cy', 'di', 'ed', 'flo'].map((name, i) => {
    const id = `acme-${i + 1}`
    person(id, 'acme', { email: `${name}@acme.com`, name: name[0]?.toUpperCase() + name.slice(1), title: i === 0 ? 'Head of Support' : 'Agent' })
    return id
  })
  for (const d of range(28)) for (const [i, u] of acme.entries()) for (const _ of range(d < 7 || i < 3 ? 4 : 2)) track(u, 'Message Sent', d + 0.2, 'acme', { channel: 'support' })

  // Hooli: a VP reading pricing, registering for a webinar and asking for a demo → MQL.
  account('hooli', 'hooli-1', { name: 'Hooli', domain: 'hooli.xyz', plan: 'free', seats: 5 })
  person('hooli-1', 'hooli', { email: 'gavin@hooli.xyz', name: 'Gavin Belson', title: 'VP Engineering' })
  for (const d of [1, 3, 5]) out.push({ type: 'page', userId: 'hooli-1', name: 'Pricing', properties: { path: '/pricing' }, timestamp: at(d), messageId: `demo-${n++}` })
  track('hooli-1', 'Webinar Registered', 4, 'hooli')
  track('hooli-1', 'Demo Requested', 1, 'hooli')

  // Globex: paying; five people used it daily, now one does → churn risk (usage drop).
  account('globex', 'globex-1', { name: 'Globex', domain: 'globex.com', plan: 'pro', seats: 25 })
  const globex = ['hank', 'ivy', 'jo', 'kim', 'lu'].map((name, i) => {
    const id = `globex-${i + 1}`
    person(id, 'globex', { email: `${name}@globex.com`, name })
    return id
  })
  for (const d of range(35)) for (const [i, u] of globex.entries()) if (d >= 7 || i === 0) track(u, 'Report Viewed', d + 0.3, 'globex')

  // Initech: paying, 5 seats, 5 people active → seat expansion.
  account('initech', 'initech-1', { name: 'Initech', domain: 'initech.com', plan: 'team', seats: 5 })
  for (const i of range(5)) {
    const id = `initech-${i + 1}`
    person(id, 'initech', { email: `${['peter', 'milton', 'samir', 'michael', 'joanna'][i]}@initech.com` })
    for (const d of range(20)) track(id, 'Message Sent', d + 0.4, 'initech')
  }

  // Umbrella: paying; its most active user went quiet three weeks ago, the rest carry on → champion gone quiet.
  account('umbrella', 'umbrella-1', { name: 'Umbrella', domain: 'umbrella.co', plan: 'pro', seats: 30 })
  person('umbrella-1', 'umbrella', { email: 'alice@umbrella.co', name: 'Alice', title: 'Director of Ops' })
  person('umbrella-2', 'umbrella', { email: 'carlos@umbrella.co', name: 'Carlos' })
  for (const d of range(60)) if (d >= 21) for (const _ of range(6)) track('umbrella-1', 'Report Viewed', d + 0.5, 'umbrella')
  for (const d of range(10)) track('umbrella-2', 'Report Viewed', d + 0.5, 'umbrella')

  // Quiet accounts, so the list has something to sort.
  for (const [id, name, plan] of [
    ['stark', 'Stark Industries', 'enterprise'],
    ['wayne', 'Wayne Enterprises', 'pro'],
    ['wonka', 'Wonka', 'free'],
  ] as const) {
    account(id, `${id}-1`, { name, domain: `${id}.com`, plan, seats: 10 })
    person(`${id}-1`, id, { email: `owner@${id}.com` })
    for (const d of range(12)) track(`${id}-1`, 'Report Viewed', d * 2 + 1, id)
  }
  return out
}

/** Send the demo company through `/v1/batch` (the write key as Basic auth). */
export async function sendDemo(opts: DemoOptions): Promise<number> {
  const messages = demoMessages(opts.now)
  for (let i = 0; i < messages.length; i += 1000) {
    const res = await fetch(`${opts.url}/v1/batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(`${opts.writeKey}:`).toString('base64')}` },
      body: JSON.stringify({ batch: messages.slice(i, i + 1000) }),
    })
    const body = (await res.json()) as { rejected?: unknown[] }
    if (res.status !== 200 || body.rejected?.length) throw new Error(`demo batch refused: ${res.status} ${JSON.stringify(body).slice(0, 500)}`)
  }
  return messages.length
}

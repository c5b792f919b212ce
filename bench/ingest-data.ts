/**
 * Benchmark events shaped like what `@segment/analytics-node` sends for a product's usage: track
 * calls with properties and a context (library, ip, user agent, page, groupId), spread over 10,000
 * users in 1,000 accounts. Every message is unique (its messageId, its timestamp, a counter in the
 * properties). Built by string concatenation from pre-serialised parts, so the load generator
 * spends its CPU sending, not building.
 */

const EVENTS = [
  'Message Sent',
  'Report Exported',
  'Dashboard Viewed',
  'Seat Added',
  'Integration Connected',
  'File Uploaded',
  'Comment Posted',
  'Search Performed',
  'Invite Sent',
  'Workflow Run',
  'Alert Created',
  'Billing Viewed',
] as const
const CHANNELS = ['general', 'random', 'sales', 'support', 'eng', 'design']
const AGENTS = [
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15',
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36',
  'Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0',
]
const PATHS = ['/app', '/app/reports', '/app/settings/billing', '/app/inbox', '/app/search']

export const USERS = 10_000
export const ACCOUNTS = 1_000

/**
 * The parts of a message that do not depend on its user, id or time (JSON text). `i` picks the
 * event, properties and context; the user and account are set per message.
 */
function template(i: number): [string, string, string] {
  const event = EVENTS[i % EVENTS.length] as string
  const properties = {
    channel: CHANNELS[i % CHANNELS.length],
    length: (i * 7919) % 2000,
    has_attachment: i % 5 === 0,
    plan: i % 10 === 0 ? 'enterprise' : i % 3 === 0 ? 'pro' : 'free',
    duration_ms: (i * 104729) % 30_000,
    tags: ['bench', event.split(' ')[0]?.toLowerCase()],
  }
  const path = PATHS[i % PATHS.length] as string
  const context = {
    library: { name: '@segment/analytics-node', version: '3.1.0' },
    ip: `10.${i % 200}.${(i * 31) % 250}.${(i * 17) % 250}`,
    userAgent: AGENTS[i % AGENTS.length],
    locale: 'en-US',
    timezone: 'Europe/Berlin',
    page: { path, url: `https://app.example.com${path}`, title: 'Example App', referrer: '' },
  }
  return [
    `"type":"track","event":${JSON.stringify(event)},"properties":${JSON.stringify(properties).slice(0, -1)},"seq":`,
    `},"context":${JSON.stringify(context).slice(0, -1)},"groupId":"acct_`,
    `"},"integrations":{},"_metadata":{"nodeVersion":"v20.20.2","jsRuntime":"node"}`,
  ]
}

const TEMPLATES = 997 // a prime: templates and users cycle independently
const parts = Array.from({ length: TEMPLATES }, (_, i) => template(i))

/** Message `n` of run `run` as JSON text: a unique messageId and counter, one of 10,000 users. */
export function messageJson(run: string, n: number, timestamp: string): string {
  const [head, mid, tail] = parts[n % TEMPLATES] as [string, string, string]
  const user = (n * 7) % USERS
  return `{"messageId":"${run}-${n}","timestamp":"${timestamp}","userId":"user_${user}",${head}${n}${mid}${user % ACCOUNTS}${tail}}`
}

/** A `/v1/batch` body of messages `first … first + size − 1`. */
export function batchJson(run: string, first: number, size: number, now: number): string {
  const timestamp = new Date(now - 2000).toISOString()
  const messages: string[] = new Array(size)
  for (let k = 0; k < size; k++) messages[k] = messageJson(run, first + k, timestamp)
  return `{"batch":[${messages.join(',')}],"sentAt":"${new Date(now).toISOString()}"}`
}

import { lookup } from 'node:dns'
import { lookup as lookupAsync } from 'node:dns/promises'
import { Agent, fetch as undiciFetch } from 'undici'
import { addressRefusal, TargetRefusedError, urlRefusal } from './targets.js'

// Node only: the Worker cannot see what a name resolves to (see targets.ts).

/**
 * `fetch` for webhook attempts on Node: the target is checked where the connection is made, on
 * the addresses DNS gives at that moment (a name that resolved to a public address when the
 * endpoint was created and to 169.254.169.254 now is refused now), and IP literals before any
 * connection. A refusal rejects with a TargetRefusedError as the cause. `resolve` is DNS (tests
 * give names of their own).
 */
export function guardedFetch(allowPrivate: boolean, resolve: typeof lookup = lookup): typeof fetch {
  const agent = new Agent({
    connect: {
      lookup(hostname, options, callback) {
        resolve(hostname, { ...options, all: true }, (err, addresses) => {
          if (err) return callback(err, '', 0)
          for (const a of addresses) {
            const why = addressRefusal(a.address, allowPrivate)
            if (why) return callback(new TargetRefusedError(`${hostname} resolves to ${why}`), '', 0)
          }
          const all = (options as { all?: boolean }).all
          if (all) return (callback as unknown as (e: null, a: typeof addresses) => void)(null, addresses)
          const [first] = addresses
          callback(null, first?.address ?? '', first?.family ?? 4)
        })
      },
    },
  })
  return (async (input: string | URL | Request, init?: RequestInit) => {
    const url = input instanceof Request ? input.url : String(input)
    const why = urlRefusal(url, allowPrivate)
    if (why) throw new TargetRefusedError(why)
    return undiciFetch(url, { ...(init as object), dispatcher: agent } as Parameters<typeof undiciFetch>[1])
  }) as typeof fetch
}

/**
 * Why a webhook URL is refused, checked when the endpoint is created or changed (a friendly 400
 * instead of a delivery that is dead at once): its literal host, then what its name resolves to
 * now. A name that does not resolve is accepted (it may later); the attempt checks again.
 */
export async function resolvedUrlRefusal(raw: string, allowPrivate: boolean): Promise<string | undefined> {
  const literal = urlRefusal(raw, allowPrivate)
  if (literal) return literal
  const host = new URL(raw).hostname.replace(/^\[|\]$/g, '')
  let addresses: { address: string }[]
  try {
    addresses = await lookupAsync(host, { all: true })
  } catch {
    return undefined
  }
  for (const a of addresses) {
    const why = addressRefusal(a.address, allowPrivate)
    if (why) return `${host} resolves to ${why}`
  }
  return undefined
}

import ipaddr from 'ipaddr.js'

/**
 * Which webhook targets signalbox will POST to. Link-local and cloud-metadata addresses are never
 * allowed (a webhook URL is user input, and an instance's metadata service hands out its cloud
 * credentials); private and loopback ranges only with `allowPrivate` (WEBHOOK_ALLOW_PRIVATE).
 * Pure (no Node APIs): the Worker checks URLs with it too.
 */

/** Names of metadata services, refused whatever they resolve to. */
const METADATA_HOSTS = new Set(['metadata.google.internal', 'metadata.goog', 'metadata'])
/** Metadata addresses outside the link-local ranges (AWS over IPv6, Alibaba Cloud). */
const METADATA_ADDRESSES = new Set(['fd00:ec2::254', '100.100.100.200'])
/** ipaddr.js ranges never sent to: 169.254.0.0/16 and fe80::/10, and what no server listens on. */
const NEVER = new Set(['linkLocal', 'multicast', 'broadcast', 'reserved'])
/** Ranges sent to only with WEBHOOK_ALLOW_PRIVATE: loopback, RFC 1918, carrier-grade NAT, unique local, unspecified (0.0.0.0 reaches this host). */
const PRIVATE = new Set(['loopback', 'private', 'carrierGradeNat', 'uniqueLocal', 'unspecified'])

/** Why this IP address is refused as a webhook target, or undefined if it is allowed. */
export function addressRefusal(address: string, allowPrivate: boolean): string | undefined {
  if (!ipaddr.isValid(address)) return `${address} is not an IP address`
  // An IPv4-mapped IPv6 address (::ffff:169.254.169.254) is the IPv4 address it maps.
  const ip = ipaddr.process(address)
  const text = ip.toString()
  if (METADATA_ADDRESSES.has(text)) return `${text} is a cloud metadata address`
  const range = ip.range()
  if (NEVER.has(range)) return `${text} is a ${range === 'linkLocal' ? 'link-local (cloud metadata)' : range} address`
  if (PRIVATE.has(range) && !allowPrivate) return `${text} is a ${range} address (WEBHOOK_ALLOW_PRIVATE is off)`
  return undefined
}

/** The URL's host as written, without IPv6 brackets or a trailing dot, lower case. */
const hostOf = (url: URL) => url.hostname.replace(/^\[|\]$/g, '').replace(/\.$/, '').toLowerCase()

/**
 * Why this URL is refused without resolving it: a metadata name, or an IP literal in a refused
 * range. Names are checked after resolution where the runtime can (`hostRefusal` on Node).
 */
export function urlRefusal(raw: string, allowPrivate: boolean): string | undefined {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    return 'is not a URL'
  }
  const host = hostOf(url)
  if (METADATA_HOSTS.has(host)) return `${host} is a cloud metadata service`
  if (ipaddr.isValid(host)) return addressRefusal(host, allowPrivate)
  if (host === 'localhost' || host.endsWith('.localhost')) return addressRefusal('127.0.0.1', allowPrivate)
  return undefined
}

/** A webhook attempt refused because of where its URL leads (never retried: it will not change by itself). */
export class TargetRefusedError extends Error {
  override name = 'TargetRefusedError'
}

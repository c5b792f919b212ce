import type { Condition, Rule } from './schema.js'

/**
 * Which stored messages can change a rule's answer for a subject, so an incremental evaluation
 * runs a rule only for the subjects that received such a message.
 *
 * A rule measures activity events (every metric and score item names its events, or reads all
 * activity when it names none), the subject's traits and its identity links. Its answer for a
 * subject therefore changes only when (a) an activity event it reads arrives for the subject,
 * (b) an identify / group / alias call changes the subject's traits or identity, or (c) time
 * passes and windows slide. (c) is the periodic full evaluation's job; this covers (a) and (b).
 */

/** Stands for identify / group / alias in a subject's touched set: relevant to every rule. */
export const IDENTITY_CHANGE = '\u0000identity'

/** The activity events a rule reads: their names, or `all` when some measurement reads every activity event. */
export type RuleEvents = ReadonlySet<string> | 'all'

export function ruleEvents(rule: Rule): RuleEvents {
  const names = new Set<string>()
  let all = false
  const add = (event: string | string[] | undefined) => {
    if (event === undefined) all = true
    else for (const e of Array.isArray(event) ? event : [event]) names.add(e)
  }
  const walk = (c: Condition) => {
    if ('all' in c) c.all.forEach(walk)
    else if ('any' in c) c.any.forEach(walk)
    else if ('metric' in c) add(c.event)
    // A trait condition reads traits only.
  }
  if (rule.when) walk(rule.when)
  for (const item of rule.score?.items ?? []) {
    if ('event' in item) add(item.event)
    else if ('when' in item) walk(item.when)
  }
  return all ? 'all' : names
}

/** Does a subject touched by these messages (event names, or IDENTITY_CHANGE) need this rule re-evaluated? */
export function touches(events: ReadonlySet<string>, wanted: RuleEvents): boolean {
  if (wanted === 'all' || events.has(IDENTITY_CHANGE)) return true
  for (const e of events) if (wanted.has(e)) return true
  return false
}

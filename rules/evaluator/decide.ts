import { parseDuration, type Rule } from '../schema.js'

/**
 * The entry/resolve/cooldown state machine, shared by the evaluator and the backtest so that a
 * backtest answers exactly what a loop of evaluations at the same moments would have done.
 */

/** What the store knows of a rule+subject: its latest signal. */
export type EntryState = { id: string; status: 'open' | 'resolved'; firedAt: number }

export type Decision = 'fire' | 'resolve' | null

/**
 * A signal fires when the subject matches and has no open signal, unless the previous fire of the
 * same rule+subject is less than `cooldownMs` ago; it resolves when the subject no longer matches.
 * A subject that re-enters during the cooldown fires once the cooldown has passed, if it still
 * matches then ("at most once per cooldown").
 */
export function decide(prev: EntryState | undefined, matched: boolean, now: number, cooldownMs: number): Decision {
  if (matched) {
    if (prev?.status === 'open') return null
    if (prev && now - prev.firedAt < cooldownMs) return null
    return 'fire'
  }
  return prev?.status === 'open' ? 'resolve' : null
}

export const cooldownOf = (rule: Rule): number => (rule.cooldown ? parseDuration(rule.cooldown) : 0)

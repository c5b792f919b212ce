/**
 * The rules layer's own errors, free of HTTP: the API maps them to its error vocabulary in one
 * place (`toApiError` in src/errors.ts), and the CLI prints them as they are.
 */

/** `INVALID`: a rule document, id or duration that is wrong (each detail names where); `CONFLICT`: a write lost a race it may retry. */
export type RuleErrorCode = 'INVALID' | 'CONFLICT'

export type RuleErrorDetail = { path: string; message: string }

export class RuleError extends Error {
  override name = 'RuleError'
  readonly code: RuleErrorCode
  readonly details?: RuleErrorDetail[]
  constructor(code: RuleErrorCode, message: string, details?: RuleErrorDetail[]) {
    super(message)
    this.code = code
    this.details = details
  }
}

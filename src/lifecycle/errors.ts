/** A stage move the ladder does not allow (an unknown stage); the API answers it as a 400 (src/errors.ts). */
export class StageError extends Error {
  override name = 'StageError'
  readonly code = 'UNKNOWN_STAGE'
  readonly details: { path: string; message: string }[]
  constructor(message: string, details: { path: string; message: string }[]) {
    super(message)
    this.details = details
  }
}

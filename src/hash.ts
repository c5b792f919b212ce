import { createHash } from 'node:crypto'

/** SHA-256 of a text (UTF-8): the one hash signalbox derives tokens, ids and comparisons from (node:crypto, also on Workers with nodejs_compat). */
export const sha256 = (text: string): Buffer => createHash('sha256').update(text).digest()

/** The same, as lowercase hex. */
export const sha256Hex = (text: string): string => sha256(text).toString('hex')

import { REQUEST_MAX_SKEW_MS, verifyAction, XenosError, type RequestAuth, type SignedAction } from '../core/index.ts'

/**
 * Verifies owner signatures and refuses a signed request seen before. Nonces are remembered for
 * twice the allowed clock skew, after which the timestamp check alone refuses a replay.
 */
export class RequestVerifier {
  readonly #seen = new Map<string, number>()

  verify (auth: RequestAuth, action: SignedAction, now = Date.now()): void {
    verifyAction(auth, action, now)
    this.#sweep(now)
    const key = `${auth.owner}/${auth.nonce}/${action.action}/${action.target}`
    if (this.#seen.has(key)) throw new XenosError('UNAUTHENTICATED', 'this signed request was already used: sign a new one')
    this.#seen.set(key, now + 2 * REQUEST_MAX_SKEW_MS)
  }

  #sweep (now: number): void {
    if (this.#seen.size < 1000) return
    for (const [k, expires] of this.#seen) if (expires < now) this.#seen.delete(k)
  }
}

import { REQUEST_MAX_SKEW_MS, verifyAction, XenosError, type RequestAuth, type SignedAction } from '../core/index.ts'
import type { Store } from '../store/index.ts'

export interface RequestVerifierInit {
  hostId: string
  /** The keys that may act as this host's operator. */
  operators: ReadonlySet<string>
  /** Where used nonces are kept, across restarts. */
  nonces: Pick<Store['nonces'], 'claim'>
}

export interface VerifyOptions {
  /** The host the signature must be for. @default this host: the one carrying the request out */
  host?: string
  /**
   * Refuse a signature seen before. A read of data presented by the host that reads it on the
   * signer's behalf may come again (each chunk of a transfer, each host of a deploy). @default true
   */
  once?: boolean
}

/** What a request asks, without the host it is for (that is the verifier's to know). */
export type Asked = Omit<SignedAction, 'host'>

/**
 * Who asks: checks the signature on a request (for this host, fresh, not seen before: nonces are
 * kept in the store, so a replay fails after a restart too) and whether the signer may ask it.
 */
export class RequestVerifier {
  readonly #init: RequestVerifierInit

  constructor (init: RequestVerifierInit) {
    this.#init = init
  }

  get hostId (): string {
    return this.#init.hostId
  }

  get operators (): readonly string[] {
    return [...this.#init.operators]
  }

  isOperator (key: string): boolean {
    return this.#init.operators.has(key)
  }

  /** Checks `auth` for `a`; returns the signer. */
  verify (auth: RequestAuth, a: Asked, o: VerifyOptions = {}, now = Date.now()): string {
    verifyAction(auth, { ...a, host: o.host ?? this.#init.hostId }, now)
    if (o.once !== false && !this.#init.nonces.claim(`${auth.owner}/${auth.nonce}`, auth.ts + 2 * REQUEST_MAX_SKEW_MS, now)) {
      throw new XenosError('UNAUTHENTICATED', 'this signed request was already used: sign a new one')
    }
    return auth.owner
  }

  /** Uses up signed object `sig` of `owner`'s (made at `ts`): a second use is refused as a replay. */
  claimOnce (owner: string, sig: string, ts: number): void {
    if (!this.#init.nonces.claim(`${owner}/${sig}`, ts + 2 * REQUEST_MAX_SKEW_MS)) throw new XenosError('UNAUTHENTICATED', 'this signed request was already used: sign a new one')
  }

  /** Checks `auth` for `a` and that the signer is this host's operator; returns the signer. */
  operator (auth: RequestAuth, a: Asked): string {
    const who = this.verify(auth, a)
    if (!this.isOperator(who)) throw this.#notOperator(who, a.action)
    return who
  }

  /** Throws FORBIDDEN unless `who` is `owner` or this host's operator, who may `action` `what`. */
  ownerOrOperator (who: string, owner: string, what: string, action: string): void {
    if (who !== owner && !this.isOperator(who)) throw new XenosError('FORBIDDEN', `${what} belongs to another owner; only its owner or the operator of host ${this.#init.hostId} may ${action} it`)
  }

  #notOperator (who: string, action: string): XenosError {
    return new XenosError('FORBIDDEN', `only the operator of host ${this.#init.hostId} may ${action}; key ${who} is not its operator: sign with the operator's key (xenosd --operator KEY, or DATA/operator.pem)`)
  }
}

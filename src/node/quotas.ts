import { XenosError } from '../core/index.ts'
import type { Store } from '../store/index.ts'

export interface QuotasInit {
  store: Pick<Store, 'data' | 'blobClaims'>
  /** The most bytes one owner's files, uploads under way and uploaded image files may take here. */
  perOwnerBytes: number
  /** The most bytes everyone's together may take here (keys are free: one owner's quota alone bounds nothing). */
  perHostBytes: number
  hostId: string
}

/**
 * What owners may store on this host: their data files, uploads under way and the image files
 * they uploaded count against a quota of their own and against the host's, and stop counting
 * once deleted.
 */
export class Quotas {
  readonly #init: QuotasInit

  constructor (init: QuotasInit) {
    this.#init = init
  }

  /** Bytes `owner` keeps here. */
  usedBy (owner: string): number {
    return this.#init.store.data.bytesOf(owner) + this.#init.store.blobClaims.bytesOf(owner)
  }

  /** Bytes all owners keep here. */
  used (): number {
    return this.#init.store.data.totalBytes() + this.#init.store.blobClaims.totalBytes()
  }

  /** Throws QUOTA_EXCEEDED unless `owner` may keep `bytes` more here, for `what`. */
  check (owner: string, bytes: number, what: string): void {
    const mine = this.usedBy(owner)
    if (mine + bytes > this.#init.perOwnerBytes) {
      throw new XenosError('QUOTA_EXCEEDED', `${what} needs ${bytes} bytes, and the owner's data on host ${this.#init.hostId} already takes ${mine} bytes of its ${this.#init.perOwnerBytes}-byte quota: delete files ("xenos data rm") or use another host`)
    }
    const all = this.used()
    if (all + bytes > this.#init.perHostBytes) {
      throw new XenosError('QUOTA_EXCEEDED', `${what} needs ${bytes} bytes, and host ${this.#init.hostId} keeps ${all} bytes for its owners of the ${this.#init.perHostBytes} it offers them: use another host`)
    }
  }
}

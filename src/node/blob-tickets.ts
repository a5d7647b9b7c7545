import { randomBytes } from 'node:crypto'

/** How long a ticket to a blob's chunks lasts since last used. */
const TICKET_MS = 60 * 60_000
/** Tickets held at most; the oldest go first. */
const MAX_TICKETS = 10_000

/**
 * Tickets to blobs that are not for everyone (a data file, a checkpoint's memory): this host
 * gives one to the host that may read the blob, which shows it with every chunk it asks for.
 */
export class BlobTickets {
  /** Ticket → the host, the blob, until when. */
  readonly #tickets = new Map<string, { peer: string, blob: string, until: number }>()

  /** A ticket for host `peer` to read blob `blob`. */
  issue (peer: string, blob: string): string {
    const ticket = randomBytes(16).toString('hex')
    this.#tickets.set(ticket, { peer, blob, until: Date.now() + TICKET_MS })
    for (const [old, t] of this.#tickets) {
      if (this.#tickets.size <= MAX_TICKETS && t.until >= Date.now()) break
      this.#tickets.delete(old)
    }
    return ticket
  }

  /** Whether `peer` may read the chunks of blob `blob` with `ticket`. */
  admits (blob: string, peer: string, ticket: string | undefined, now = Date.now()): boolean {
    const t = ticket === undefined ? undefined : this.#tickets.get(ticket)
    if (t === undefined || t.peer !== peer || t.blob !== blob || t.until < now) return false
    t.until = now + TICKET_MS
    return true
  }
}

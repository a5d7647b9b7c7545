/**
 * Hosts whose answers contradicted their adverts (no room though they advertised some,
 * unreachable, malformed answers) are left out of placement for a while, longer each time they
 * do it again, so that a host advertising room it does not have cannot draw deploys to itself.
 */
export const DISTRUST_MS = 60_000
const MAX_DISTRUST_MS = 60 * 60_000
/** Hosts remembered at most. */
const MAX_HOSTS = 10_000

interface Record {
  strikes: number
  until: number
  why: string
}

export class HostTrust {
  readonly #hosts = new Map<string, Record>()

  /** Host `host` contradicted its advert (`why`): leave it out of placement for a while. */
  distrust (host: string, why: string, now = Date.now()): void {
    const strikes = (this.#hosts.get(host)?.strikes ?? 0) + 1
    this.#hosts.delete(host)
    this.#hosts.set(host, { strikes, until: now + Math.min(MAX_DISTRUST_MS, DISTRUST_MS * 2 ** (strikes - 1)), why })
    for (const old of this.#hosts.keys()) {
      if (this.#hosts.size <= MAX_HOSTS) break
      this.#hosts.delete(old)
    }
  }

  /** Host `host` did what its advert promised. */
  vouch (host: string): void {
    this.#hosts.delete(host)
  }

  /** Why `host` is left out of placement now, or undefined when it is not. */
  distrusted (host: string, now = Date.now()): string | undefined {
    const r = this.#hosts.get(host)
    return r !== undefined && r.until > now ? r.why : undefined
  }
}

import { advertKey, isMoreRecent, isNewer, MAX_ADVERT_TTL_MS, type Advert, type AdvertKind } from '../core/index.ts'

/** What a search asks for; every given field must match. */
export interface AdvertQuery {
  kind?: AdvertKind
  /** Case-insensitive substring of the id, name, description or any tag value. */
  text?: string
  tags?: Record<string, string>
  host?: string
}

/** How much of the cache one host's adverts may take, and all of them together. */
export interface CacheLimits {
  /** @default 1024 */
  perHost: number
  /** @default 2 MiB */
  perHostBytes: number
  /** @default 65_536 */
  total: number
  /** @default 64 MiB */
  totalBytes: number
}

export const DEFAULT_CACHE_LIMITS: CacheLimits = { perHost: 1024, perHostBytes: 2 * 2 ** 20, total: 65_536, totalBytes: 64 * 2 ** 20 }

/** Whether an advert offered to the cache was kept. */
export type OfferResult = 'new' | 'stale' | 'over-cap'

interface Entry {
  advert: Advert
  bytes: number
}

/**
 * The adverts this host knows, newest per subject and host. Withdrawals are kept until they
 * expire so an older copy arriving late (from gossip or a peer's sync) cannot bring a withdrawn
 * thing back. Each host's adverts, and all of them, are bounded in number and bytes: a peer with
 * many keys cannot fill a host's memory. Of the hosts advertising one instance, the one its owner
 * placed it on last is the one that counts.
 */
export class AdvertCache {
  readonly #entries = new Map<string, Entry>()
  readonly #perHost = new Map<string, { count: number, bytes: number }>()
  readonly #watchers = new Set<(a: Advert) => void>()
  readonly #limits: CacheLimits
  /** Hosts taken for dead: their adverts issued until then are refused, until those would have expired. */
  /** Hosts taken for dead: since when, up to which issue time their adverts are refused, and their host and instance adverts as they were last. */
  readonly #forgotten = new Map<string, { upTo: number, until: number, since: number, last: Advert[] }>()
  #bytes = 0

  constructor (limits: Partial<CacheLimits> = {}) {
    this.#limits = { ...DEFAULT_CACHE_LIMITS, ...limits }
  }

  /** Stores `a` if it is newer than what is known and fits within the limits. */
  offer (a: Advert, now = Date.now()): OfferResult {
    const forgotten = this.#forgotten.get(a.host)
    if (forgotten !== undefined && forgotten.until > now && a.issuedAt <= forgotten.upTo) return 'stale'
    const key = advertKey(a)
    const known = this.#entries.get(key)
    if (known !== undefined && !isNewer(a, known.advert)) return 'stale'
    const bytes = JSON.stringify(a).length
    const host = this.#perHost.get(a.host) ?? { count: 0, bytes: 0 }
    const grow = bytes - (known?.bytes ?? 0)
    const added = known === undefined ? 1 : 0
    if (host.count + added > this.#limits.perHost || host.bytes + grow > this.#limits.perHostBytes ||
      this.#entries.size + added > this.#limits.total || this.#bytes + grow > this.#limits.totalBytes) return 'over-cap'
    this.#entries.set(key, { advert: a, bytes })
    this.#perHost.set(a.host, { count: host.count + added, bytes: host.bytes + grow })
    this.#bytes += grow
    for (const w of this.#watchers) w(a)
    return 'new'
  }

  #delete (key: string, e: Entry): void {
    this.#entries.delete(key)
    this.#bytes -= e.bytes
    const host = this.#perHost.get(e.advert.host)
    if (host === undefined) return
    if (host.count <= 1) this.#perHost.delete(e.advert.host)
    else this.#perHost.set(e.advert.host, { count: host.count - 1, bytes: host.bytes - e.bytes })
  }

  /** Calls `fn` with every advert that changes the cache until the returned function is called. */
  watch (fn: (a: Advert) => void): () => void {
    this.#watchers.add(fn)
    return () => { this.#watchers.delete(fn) }
  }

  /** Resolves with the first non-empty result of `search(q)`, or [] after `timeoutMs`. */
  async waitFor (q: AdvertQuery, timeoutMs: number, limit?: number): Promise<Advert[]> {
    const now = this.search(q, limit)
    if (now.length > 0 || timeoutMs <= 0) return now
    return await new Promise(resolve => {
      const done = (result: Advert[]): void => {
        clearTimeout(timer)
        unwatch()
        resolve(result)
      }
      const timer = setTimeout(() => { done([]) }, timeoutMs)
      const unwatch = this.watch(() => {
        const found = this.search(q, limit)
        if (found.length > 0) done(found)
      })
    })
  }

  /**
   * The standing advert about `kind`/`id`: for an instance, that of the host it was placed on last
   * (undefined when that host withdrew it); for others, the newest live one from whichever host.
   */
  get (kind: AdvertKind, id: string, now = Date.now()): Advert | undefined {
    const best = this.standing(kind, id, now)
    return best?.withdrawn === true ? undefined : best
  }

  /**
   * The most recent advert about `kind`/`id`, withdrawn or not (of an instance: that of the host
   * it was placed on last, which knows where it went if it moved on).
   */
  standing (kind: AdvertKind, id: string, now = Date.now()): Advert | undefined {
    let best: Advert | undefined
    for (const { advert: a } of this.#entries.values()) {
      if (a.kind !== kind || a.id !== id || a.expiresAt <= now) continue
      if (kind !== 'instance' && a.withdrawn === true) continue
      if (best === undefined || isMoreRecent(a, best)) best = a
    }
    return best
  }

  /** Live adverts matching `q`, newest first, at most `limit`; one per instance (see `get`). */
  search (q: AdvertQuery, limit = Infinity, now = Date.now()): Advert[] {
    const text = q.text?.toLowerCase()
    const standing = q.kind === undefined || q.kind === 'instance' ? this.#standingInstances(now) : new Map<string, Advert>()
    const out: Advert[] = []
    for (const { advert: a } of this.#entries.values()) {
      if (a.withdrawn === true || a.expiresAt <= now) continue
      if (q.kind !== undefined && a.kind !== q.kind) continue
      if (q.host !== undefined && a.host !== q.host) continue
      if (text !== undefined && text !== '' && !searchableText(a).includes(text)) continue
      if (q.tags !== undefined && !matchesTags(a, q.tags)) continue
      if (a.kind === 'instance' && standing.get(a.id) !== a) continue
      out.push(a)
    }
    return out.sort((x, y) => y.issuedAt - x.issuedAt).slice(0, limit)
  }

  /** For each instance, the advert of the host it was placed on last (withdrawn or not). */
  #standingInstances (now: number): Map<string, Advert> {
    const standing = new Map<string, Advert>()
    for (const { advert: a } of this.#entries.values()) {
      if (a.kind !== 'instance' || a.expiresAt <= now) continue
      const best = standing.get(a.id)
      if (best === undefined || isMoreRecent(a, best)) standing.set(a.id, a)
    }
    return standing
  }

  /** Issue time of every unexpired advert by key, in key order, from after `after`, at most `limit`. */
  digest (after: string | null, limit: number, now = Date.now()): Array<[string, number]> {
    const keys = [...this.#entries.keys()].filter(k => after === null || k > after).sort()
    const out: Array<[string, number]> = []
    for (const k of keys) {
      if (out.length >= limit) break
      const e = this.#entries.get(k)
      if (e !== undefined && e.advert.expiresAt > now) out.push([k, e.advert.issuedAt])
    }
    return out
  }

  /** The unexpired adverts (withdrawals included) with these keys, in order, up to `maxBytes` in all. */
  pick (keys: string[], maxBytes: number, now = Date.now()): { records: Advert[], taken: number } {
    const records: Advert[] = []
    let bytes = 0
    let taken = 0
    for (const k of keys) {
      const e = this.#entries.get(k)
      if (e !== undefined && e.advert.expiresAt > now) {
        if (bytes + e.bytes > maxBytes) break
        bytes += e.bytes
        records.push(e.advert)
      }
      taken++
    }
    return { records, taken }
  }

  /** Whether an advert with this key (`kind/host/id`, see `advertKey`), not cached yet, would fit. */
  hasRoomFor (key: string): boolean {
    const host = this.#perHost.get(key.split('/')[1] ?? '')
    return this.#entries.size < this.#limits.total && this.#bytes < this.#limits.totalBytes &&
      (host === undefined || (host.count < this.#limits.perHost && host.bytes < this.#limits.perHostBytes))
  }

  /** Issue time of the cached advert with this key. */
  version (key: string): number | undefined {
    return this.#entries.get(key)?.advert.issuedAt
  }

  /**
   * Drops every advert of `host` issued until `upTo` (it was taken for dead), and refuses copies
   * of them that arrive later (a peer's sync, a late gossip). What the host issues after comes in.
   */
  forgetHost (host: string, upTo: number, now = Date.now()): void {
    // Taken for dead again (its own probe, then another host's notice): what was kept of it stays.
    const before = this.#forgotten.get(host)
    const last = new Map((before?.last ?? []).map(a => [advertKey(a), a]))
    for (const [key, e] of this.#entries) {
      if (e.advert.host !== host || e.advert.issuedAt > upTo) continue
      if (e.advert.kind === 'host' || e.advert.kind === 'instance') last.set(key, e.advert)
      this.#delete(key, e)
    }
    this.#forgotten.set(host, { upTo: Math.max(upTo, before?.upTo ?? 0), until: now + MAX_ADVERT_TTL_MS, since: before?.since ?? now, last: [...last.values()] })
  }

  /**
   * Hosts taken for dead that have said nothing since, with their host and instance adverts as
   * they were last: what a user still wants to see of them, as unreachable.
   */
  unreachableHosts (): Array<{ host: string, since: number, last: Advert[] }> {
    return [...this.#forgotten].filter(([host]) => this.newestOf(host) === undefined).map(([host, f]) => ({ host, since: f.since, last: f.last }))
  }

  /** Hosts taken for dead whose old adverts are refused still. */
  forgottenHosts (): string[] {
    return [...this.#forgotten.keys()]
  }

  /** `host` answered after all: its adverts, old ones too, come in again. */
  unforget (host: string): void {
    this.#forgotten.delete(host)
  }

  /** The latest issue time of `host`'s cached adverts. */
  newestOf (host: string): number | undefined {
    let newest: number | undefined
    for (const { advert: a } of this.#entries.values()) if (a.host === host && (newest === undefined || a.issuedAt > newest)) newest = a.issuedAt
    return newest
  }

  /** Drops expired entries; returns the live adverts that expired (so hosts that died disappear). */
  sweep (now = Date.now()): Advert[] {
    const gone: Advert[] = []
    for (const [host, f] of this.#forgotten) if (f.until <= now) this.#forgotten.delete(host)
    for (const [key, e] of this.#entries) {
      if (e.advert.expiresAt <= now) {
        this.#delete(key, e)
        if (e.advert.withdrawn !== true) gone.push(e.advert)
      }
    }
    return gone
  }

  get size (): number {
    return this.#entries.size
  }

  /** Bytes the cached adverts take (as JSON). */
  get bytes (): number {
    return this.#bytes
  }
}

function searchableText (a: Advert): string {
  const parts: string[] = [a.id]
  if (a.kind === 'template') parts.push(a.body.name, a.body.version, a.body.description ?? '', ...Object.values(a.body.tags))
  if (a.kind === 'instance') parts.push(a.body.name, a.body.templateName, a.body.template)
  if (a.kind === 'host') parts.push(a.body.name)
  return parts.join('\n').toLowerCase()
}

function matchesTags (a: Advert, tags: Record<string, string>): boolean {
  if (a.kind === 'host') return Object.keys(tags).length === 0
  return Object.entries(tags).every(([k, v]) => a.body.tags[k] === v)
}

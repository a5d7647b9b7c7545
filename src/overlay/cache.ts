import { advertKey, isNewer, type Advert, type AdvertKind } from '../core/index.ts'

/** What a search asks for; every given field must match. */
export interface AdvertQuery {
  kind?: AdvertKind
  /** Case-insensitive substring of the id, name, description or any tag value. */
  text?: string
  tags?: Record<string, string>
  host?: string
}

/**
 * The adverts this host knows, newest per subject. Withdrawals are kept until they expire so an
 * older copy arriving late (from gossip or a peer's sync) cannot bring a withdrawn thing back.
 */
export class AdvertCache {
  readonly #entries = new Map<string, Advert>()
  readonly #watchers = new Set<(a: Advert) => void>()

  /** Stores `a` if it is newer than what is known; returns whether it changed anything. */
  offer (a: Advert): boolean {
    const key = advertKey(a)
    const known = this.#entries.get(key)
    if (known !== undefined && !isNewer(a, known)) return false
    this.#entries.set(key, a)
    for (const w of this.#watchers) w(a)
    return true
  }

  /** Calls `fn` with every advert that changes the cache until the returned function is called. */
  watch (fn: (a: Advert) => void): () => void {
    this.#watchers.add(fn)
    return () => { this.#watchers.delete(fn) }
  }

  /** Resolves with the first non-empty result of `search(q)`, or [] after `timeoutMs`. */
  async waitFor (q: AdvertQuery, timeoutMs: number): Promise<Advert[]> {
    const now = this.search(q)
    if (now.length > 0 || timeoutMs <= 0) return now
    return await new Promise(resolve => {
      const done = (result: Advert[]): void => {
        clearTimeout(timer)
        unwatch()
        resolve(result)
      }
      const timer = setTimeout(() => { done([]) }, timeoutMs)
      const unwatch = this.watch(() => {
        const found = this.search(q)
        if (found.length > 0) done(found)
      })
    })
  }

  /** The newest live advert about `kind`/`id`, from whichever host. */
  get (kind: AdvertKind, id: string, now = Date.now()): Advert | undefined {
    let best: Advert | undefined
    for (const a of this.#entries.values()) {
      if (a.kind !== kind || a.id !== id || a.withdrawn === true || a.expiresAt <= now) continue
      if (best === undefined || a.issuedAt > best.issuedAt) best = a
    }
    return best
  }

  /** Live adverts matching `q`, newest first. */
  search (q: AdvertQuery, now = Date.now()): Advert[] {
    const text = q.text?.toLowerCase()
    const out: Advert[] = []
    for (const a of this.#entries.values()) {
      if (a.withdrawn === true || a.expiresAt <= now) continue
      if (q.kind !== undefined && a.kind !== q.kind) continue
      if (q.host !== undefined && a.host !== q.host) continue
      if (text !== undefined && text !== '' && !searchableText(a).includes(text)) continue
      if (q.tags !== undefined && !matchesTags(a, q.tags)) continue
      out.push(a)
    }
    return out.sort((x, y) => y.issuedAt - x.issuedAt)
  }

  /** Issue time of every unexpired advert by key: what a peer sends to ask for what it lacks. */
  digest (now = Date.now()): Record<string, number> {
    const out: Record<string, number> = {}
    for (const [key, a] of this.#entries) if (a.expiresAt > now) out[key] = a.issuedAt
    return out
  }

  /** Unexpired adverts (withdrawals included) newer than what `have` lists. */
  newerThan (have: Record<string, number>, now = Date.now()): Advert[] {
    return [...this.#entries].filter(([key, a]) => a.expiresAt > now && !(a.issuedAt <= (have[key] ?? -1))).map(([, a]) => a)
  }

  /** Drops expired entries; returns the live adverts that expired (so hosts that died disappear). */
  sweep (now = Date.now()): Advert[] {
    const gone: Advert[] = []
    for (const [key, a] of this.#entries) {
      if (a.expiresAt <= now) {
        this.#entries.delete(key)
        if (a.withdrawn !== true) gone.push(a)
      }
    }
    return gone
  }

  get size (): number {
    return this.#entries.size
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

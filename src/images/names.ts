import {
  XenosError, formatTemplateUri, nameRecordSchema, supersedes, verifyNameRecord,
  type NameRecord, type TemplateName,
} from '../core/index.ts'
import type { NameRow, Store } from '../store/index.ts'

/** How many names one owner may have, and all owners together, on a host. */
export interface NameLimits {
  /** @default 1000 */
  perOwner: number
  /** @default 100_000 */
  total: number
  /** How long a name outlives the last sight of its template (here, or advertised by a host). @default 7 days */
  unseenMs: number
}

export const DEFAULT_NAME_LIMITS: NameLimits = { perOwner: 1000, total: 100_000, unseenMs: 7 * 24 * 60 * 60_000 }

export interface NameRegistryInit {
  /** Whether template `id` is held here or advertised by a live host. */
  known: (id: string) => boolean
  limits?: Partial<NameLimits>
}

function keyOf (n: TemplateName): string {
  return `${n.owner}/${n.name}/${n.tag}`
}

/**
 * The template names this host knows, each the standing record its owner signed. Records come
 * from owners through any host and from peers; every one is checked before it is kept, so no one
 * but the owner can point an owner's name anywhere. A name must point at a template some host
 * holds, and goes when no host has held it for a while; an owner, and all owners together, may
 * have so many names: keys are free, a host's disk is not.
 */
export class NameRegistry {
  readonly #store: Pick<Store, 'names'>
  readonly #known: (id: string) => boolean
  readonly #limits: NameLimits

  constructor (store: Pick<Store, 'names'>, init: NameRegistryInit) {
    this.#store = store
    this.#known = init.known
    this.#limits = { ...DEFAULT_NAME_LIMITS, ...init.limits }
  }

  /**
   * Keeps `raw` if it is a valid record that supersedes the one known for its name, and says
   * whether anything changed. Throws on a forged record, one that would move a published
   * version, one for a template no host holds, or one over the limits.
   */
  accept (raw: unknown, now = Date.now()): { record: NameRecord, changed: boolean } {
    const record = verifyNameRecord(raw)
    const current = this.resolve(record)
    const verdict = supersedes(record, current)
    if (verdict === 'conflict') {
      throw new XenosError('NAME_CONFLICT', current?.kind === 'version'
        ? `${formatTemplateUri(record)} is version ${record.tag}, published as ${current.template}; versions never move: publish a new version, or use an alias`
        : `${formatTemplateUri(record)} is an ${current?.kind ?? 'alias'}; it cannot become a ${record.kind}`)
    }
    if (verdict === 'keep') return { record, changed: false }
    if (!this.#known(record.template)) throw new XenosError('TEMPLATE_NOT_FOUND', `${formatTemplateUri(record)} names template ${record.template}, which no host holds: import it first`)
    if (current === undefined) this.#checkRoom(record.owner)
    this.#store.names.put({ ...record, record: JSON.stringify(record) }, now)
    return { record, changed: true }
  }

  /** Whether a name with this key (`owner/name/tag`), not held yet, would fit within the limits. */
  hasRoomFor (key: string): boolean {
    return this.#store.names.count(key.split('/')[0]) < this.#limits.perOwner && this.#store.names.count() < this.#limits.total
  }

  #checkRoom (owner: string): void {
    if (this.#store.names.count(owner) >= this.#limits.perOwner) throw new XenosError('QUOTA_EXCEEDED', `owner ${owner} has ${this.#limits.perOwner} template names already, as many as a host keeps for one owner`)
    if (this.#store.names.count() >= this.#limits.total) throw new XenosError('QUOTA_EXCEEDED', `this host keeps ${this.#limits.total} template names already, as many as it keeps`)
  }

  resolve (n: TemplateName): NameRecord | undefined {
    const row = this.#store.names.get(n.owner, n.name, n.tag)
    return row === undefined ? undefined : recordOf(row)
  }

  list (owner?: string): NameRecord[] {
    return this.#store.names.list(owner).map(recordOf)
  }

  /** Name → sequence number of the records held, in name order, from after `after`, for a peer to ask for what it lacks. */
  digest (after: string | null, limit: number): Array<[string, number]> {
    return this.#store.names.page(after, limit).map(r => [keyOf(r), r.seq])
  }

  /** The records with these names, in order, up to `maxBytes`. */
  pick (keys: string[], maxBytes: number): { records: NameRecord[], taken: number } {
    const records: NameRecord[] = []
    let bytes = 0
    let taken = 0
    for (const key of keys) {
      const [owner = '', name = '', tag = ''] = key.split('/')
      const row = this.#store.names.get(owner, name, tag)
      if (row !== undefined) {
        if (bytes + row.record.length > maxBytes) break
        bytes += row.record.length
        records.push(recordOf(row))
      }
      taken++
    }
    return { records, taken }
  }

  version (key: string): number | undefined {
    const [owner = '', name = '', tag = ''] = key.split('/')
    return this.#store.names.get(owner, name, tag)?.seq
  }

  /** Notes which names' templates are still held by some host, and drops the names whose templates have not been for a while. */
  sweep (now = Date.now()): number {
    for (const template of this.#store.names.templates()) if (this.#known(template)) this.#store.names.seen(template, now)
    return this.#store.names.dropUnseenSince(now - this.#limits.unseenMs)
  }
}

function recordOf (row: NameRow): NameRecord {
  return nameRecordSchema.parse(JSON.parse(row.record))
}

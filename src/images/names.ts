import {
  XenosError, formatTemplateUri, nameRecordSchema, supersedes, verifyNameRecord,
  type NameRecord, type TemplateName,
} from '../core/index.ts'
import type { Store } from '../store/index.ts'

/** The most records one sync answer carries. */
const MAX_SYNC_RECORDS = 10_000

function keyOf (n: TemplateName): string {
  return `${n.owner}/${n.name}/${n.tag}`
}

/**
 * The template names this host knows, each the standing record its owner signed. Records come
 * from owners through any host and from peers; every one is checked before it is kept, so no one
 * but the owner can point an owner's name anywhere.
 */
export class NameRegistry {
  readonly #store: Pick<Store, 'names'>

  constructor (store: Pick<Store, 'names'>) {
    this.#store = store
  }

  /**
   * Keeps `raw` if it is a valid record that supersedes the one known for its name, and says
   * whether anything changed. Throws on a forged record, or one that would move a published version.
   */
  accept (raw: unknown): { record: NameRecord, changed: boolean } {
    const record = verifyNameRecord(raw)
    const current = this.resolve(record)
    const verdict = supersedes(record, current)
    if (verdict === 'conflict') {
      throw new XenosError('NAME_CONFLICT', current?.kind === 'version'
        ? `${formatTemplateUri(record)} is version ${record.tag}, published as ${current.template}; versions never move: publish a new version, or use an alias`
        : `${formatTemplateUri(record)} is an ${current?.kind ?? 'alias'}; it cannot become a ${record.kind}`)
    }
    if (verdict === 'keep') return { record, changed: false }
    this.#store.names.put({ ...record, record: JSON.stringify(record) })
    return { record, changed: true }
  }

  resolve (n: TemplateName): NameRecord | undefined {
    const row = this.#store.names.get(n.owner, n.name, n.tag)
    return row === undefined ? undefined : nameRecordSchema.parse(JSON.parse(row.record))
  }

  list (owner?: string): NameRecord[] {
    return this.#store.names.list(owner).map(r => nameRecordSchema.parse(JSON.parse(r.record)))
  }

  /** Name → sequence number of every record held, for a peer to send what is newer. */
  digest (): Record<string, number> {
    return Object.fromEntries(this.#store.names.list().map(r => [keyOf(r), r.seq]))
  }

  /** Records newer than `have` says, or missing from it. */
  newerThan (have: Readonly<Record<string, number>>): NameRecord[] {
    return this.list().filter(r => (have[keyOf(r)] ?? -1) < r.seq).slice(0, MAX_SYNC_RECORDS)
  }
}

import type { PeerId } from '@libp2p/interface'
import { createHash } from 'node:crypto'
import { z } from 'zod'
import { XenosError } from '../core/index.ts'
import type { CallOptions, Rpc } from './rpc.ts'

/**
 * Anti-entropy between two hosts, first by one hash of everything each holds (equal when they
 * agree, as they nearly always do once gossip has passed, so a sync then costs one small
 * message each way however large the cloud); when the hashes differ, in pages that stay far below the RPC's message cap however
 * much either side holds: the puller reads its peer's digest (key → version) a page at a time,
 * and asks for the records it lacks, or holds older, a few megabytes at a time.
 */
export interface Syncable {
  /** Key and version of the records held, in key order, from after `after`, at most `limit`. */
  digest: (after: string | null, limit: number) => Array<[string, number]>
  /** The records with these keys, in order, up to `maxBytes` in all; `taken` says how many keys were gone through. */
  pick: (keys: string[], maxBytes: number) => { records: unknown[], taken: number }
  /** The version held of the record with this key. */
  version: (key: string) => number | undefined
  /** Whether a record with this key not held yet could be kept at all (a peer's share of a cache may be full). @default always */
  hasRoomFor?: (key: string) => boolean
  /** Checks and keeps a record from a peer. */
  receive: (record: unknown) => Promise<void>
}

/**
 * Records a peer offered that this host checked and did not keep (forged, over a limit, about
 * something unknown yet), by key and version: offered again within a minute, they are not
 * fetched and checked again. Bounded; the oldest are forgotten first.
 */
export class Refused {
  readonly #seen = new Map<string, { version: number, until: number }>()
  readonly #max: number
  readonly #forMs: number

  constructor (max = 100_000, forMs = 60_000) {
    this.#max = max
    this.#forMs = forMs
  }

  has (key: string, version: number, now = Date.now()): boolean {
    const r = this.#seen.get(key)
    return r !== undefined && r.version === version && r.until > now
  }

  add (key: string, version: number, now = Date.now()): void {
    this.#seen.delete(key)
    this.#seen.set(key, { version, until: now + this.#forMs })
    for (const old of this.#seen.keys()) {
      if (this.#seen.size <= this.#max) break
      this.#seen.delete(old)
    }
  }
}

/** Keys in one digest page (a key is at most 300 characters). */
export const DIGEST_PAGE = 4096
/** Bytes of records in one answer. */
const PICK_BYTES = 2 * 2 ** 20
/** Pages read from one peer in one sync; what lies beyond waits for the next. */
const MAX_PAGES = 64
const SYNC_TIMEOUT_MS = 10_000
/**
 * The longest one sync with one peer may take, however it answers: a peer that drips its answers
 * (each just inside SYNC_TIMEOUT_MS) would otherwise hold one of the few syncs a host runs at
 * once for hours. What is left waits for the next sync, which skips what this one got.
 */
export const SYNC_DEADLINE_MS = 60_000

const topicSchema = z.string().min(1).max(100)
const keySchema = z.string().min(1).max(300)
const digestRequestSchema = z.strictObject({ topic: topicSchema, after: keySchema.nullable() })
const digestReplySchema = z.strictObject({ entries: z.array(z.tuple([keySchema, z.number().int()])).max(DIGEST_PAGE), next: keySchema.nullable() })
const pickRequestSchema = z.strictObject({ topic: topicSchema, keys: z.array(keySchema).max(DIGEST_PAGE) })
const pickReplySchema = z.strictObject({ records: z.array(z.unknown()).max(DIGEST_PAGE), taken: z.number().int().min(0).max(DIGEST_PAGE) })
const rootRequestSchema = z.strictObject({ topic: topicSchema })
const rootReplySchema = z.strictObject({ root: z.string().max(64) })

/** One hash of every key and version `records` holds (at most MAX_PAGES pages, as a sync reads). */
export function rootOf (records: Pick<Syncable, 'digest'>): string {
  const hash = createHash('sha256')
  let after: string | null = null
  for (let page = 0; page < MAX_PAGES; page++) {
    const entries = records.digest(after, DIGEST_PAGE)
    for (const [key, version] of entries) hash.update(`${key}\t${version}\n`)
    if (entries.length < DIGEST_PAGE) break
    after = entries.at(-1)?.[0] ?? null
  }
  return hash.digest('base64url')
}

/** Answers peers' syncs of the topics `topics` knows. */
export function serveSync (rpc: Rpc, topics: (topic: string) => Syncable | undefined): void {
  rpc.handle('sync.root', rootRequestSchema, async ({ topic }) => {
    const records = topics(topic)
    return { root: records === undefined ? '' : rootOf(records) }
  })
  rpc.handle('sync.digest', digestRequestSchema, async ({ topic, after }) => {
    const entries = topics(topic)?.digest(after, DIGEST_PAGE) ?? []
    return { entries, next: entries.length === DIGEST_PAGE ? entries.at(-1)?.[0] ?? null : null }
  })
  rpc.handle('sync.pick', pickRequestSchema, async ({ topic, keys }) => topics(topic)?.pick(keys, PICK_BYTES) ?? { records: [], taken: keys.length })
}

/**
 * Pulls from `peer` every record of `topic` it holds newer than ours, or that we lack (but those
 * refused before), within `deadlineMs`.
 */
export async function pullFrom (rpc: Rpc, peer: PeerId, topic: string, local: Syncable, refused: Refused, deadlineMs = SYNC_DEADLINE_MS): Promise<void> {
  const signal = AbortSignal.timeout(deadlineMs)
  try {
    await pullPages(rpc, peer, topic, local, refused, { timeoutMs: SYNC_TIMEOUT_MS, signal })
  } catch (err) {
    if (signal.aborted) throw new XenosError('TIMEOUT', `host ${peer.toString()} took more than ${deadlineMs} ms to sync ${topic}: the rest waits for the next sync`)
    throw err
  }
}

async function pullPages (rpc: Rpc, peer: PeerId, topic: string, local: Syncable, refused: Refused, call: CallOptions): Promise<void> {
  if (await sameRoot(rpc, peer, topic, local, call)) return
  let after: string | null = null
  for (let page = 0; page < MAX_PAGES; page++) {
    const digest = digestReplySchema.parse(await rpc.call(peer, 'sync.digest', { topic, after }, call))
    const versions = new Map(digest.entries)
    const newer = (key: string): boolean => (local.version(key) ?? -1) < (versions.get(key) ?? -1)
    let wanted = digest.entries.filter(([key, version]) => {
      if (refused.has(`${topic}\n${key}`, version)) return false
      return local.version(key) === undefined ? local.hasRoomFor?.(key) ?? true : newer(key)
    }).map(([key]) => key)
    while (wanted.length > 0) {
      const { records, taken } = pickReplySchema.parse(await rpc.call(peer, 'sync.pick', { topic, keys: wanted }, call))
      for (const r of records) await local.receive(r)
      if (taken === 0) break
      // What is still not held as offered was refused (or was not sent).
      for (const key of wanted.slice(0, taken)) if (newer(key)) refused.add(`${topic}\n${key}`, versions.get(key) ?? -1)
      wanted = wanted.slice(taken)
    }
    if (digest.next === null || digest.next === after) return
    after = digest.next
  }
}

/** Whether `peer` holds just what this host does (false when it cannot say: a host of an older version). */
async function sameRoot (rpc: Rpc, peer: PeerId, topic: string, local: Syncable, call: CallOptions): Promise<boolean> {
  try {
    const { root } = rootReplySchema.parse(await rpc.call(peer, 'sync.root', { topic }, call))
    return root === rootOf(local)
  } catch (err) {
    if (err instanceof XenosError && err.code === 'INVALID_ARGUMENT') return false
    throw err
  }
}

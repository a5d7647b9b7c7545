import type { Logger } from 'pino'
import { z } from 'zod'
import { BLOB_ID_PATTERN, dataFileViewSchema, formatDataUri, parseDataUri, placedReadSchema, requestAuthSchema, XenosError, type DataRef, type PlacedRead, type RequestAuth } from '../core/index.ts'
import type { DataContent, DataRepository } from '../data/index.ts'
import { HeldBlobs, type BlobStore, type TemplateFetcher } from '../images/index.ts'
import type { Overlay } from '../overlay/index.ts'
import type { BlobTickets } from './blob-tickets.ts'
import { placedReaderOf } from './deployments/places.ts'
import type { RequestVerifier } from './replay.ts'
import { callHost } from './remote.ts'

export interface DataAccessInit {
  overlay: Pick<Overlay, 'peerId' | 'rpc' | 'provide' | 'findProviders' | 'learnHost'>
  repository: DataRepository
  fetcher: Pick<TemplateFetcher, 'fetchBlob'>
  blobs: Pick<BlobStore, 'has' | 'path'>
  verifier: RequestVerifier
  /** The tickets this host gives to the hosts that may fetch a file's chunks. */
  tickets: Pick<BlobTickets, 'issue'>
  /** Removes content nothing needs any more (a copy fetched from another host, once read). */
  collect: () => Promise<void>
  log: Logger
}

/** A file and where its bytes are on this host, until `release`d (a copy fetched from its holder then goes). */
export interface HeldContent extends DataContent {
  release: () => Promise<void>
}

/** What lets a host read a file in its owner's stead: the owner's `data.get` signed for it, or the place of an instance of the owner's deployment whose description names the file. */
export type ReadAuthority = { auth: RequestAuth } | { placed: PlacedRead }

const statRequestSchema = z.strictObject({
  uri: z.string().min(1).max(2048),
  /** The name the signature (or the description) is on, when it is a directory holding `uri`. */
  signed: z.string().min(1).max(2048).optional(),
  auth: requestAuthSchema.optional(),
  placed: placedReadSchema.optional(),
}).refine(r => (r.auth === undefined) !== (r.placed === undefined), 'a read carries the owner\'s signature or a place, one of them')
const statReplySchema = z.strictObject({
  file: dataFileViewSchema,
  blob: z.string().regex(BLOB_ID_PATTERN),
  /** What the asking host shows the holder to fetch the blob's chunks. */
  ticket: z.string().regex(/^[0-9a-f]{32}$/),
})
/** How long a search for the host holding a file waits on the DHT. */
const FIND_HOLDERS_MS = 5000

/** The DHT key under which hosts announce that they hold a file (hashed into a CID: the name is not in it). */
function holdingKey (ref: DataRef): string {
  return `xenos-data:${formatDataUri(ref)}`
}

/**
 * Files of the repository wherever they are: a host announces the files it holds on the DHT;
 * asked for a file it lacks, a host finds a holder, which checks the owner's signed request
 * itself (access is decided where the data is: the request must be signed for the host asking)
 * and names the blob with a ticket to it; the asking host then fetches the blob's chunks from
 * the holder alone, showing the ticket, each chunk verified against the blob's index. Nobody
 * without a ticket gets a chunk of a data file, and the copy the asking host made goes once read.
 */
export class DataAccess {
  readonly #init: DataAccessInit
  /** Copies of other hosts' files held here while they are read, by blob. */
  readonly #relayed = new HeldBlobs()

  constructor (init: DataAccessInit) {
    this.#init = init
  }

  serve (): void {
    this.#init.overlay.rpc.handle('data.stat', statRequestSchema, async (req, from) => {
      const peer = from.toString()
      const authority: ReadAuthority = req.auth === undefined ? { placed: req.placed as PlacedRead } : { auth: req.auth }
      const { ref, who } = await this.#verified(req.uri, req.signed ?? req.uri, authority, peer)
      const c = this.#init.repository.content(who, ref.owner, ref.path)
      return { file: c.file, blob: c.blob, ticket: this.#init.tickets.issue(peer, c.blob) }
    })
  }

  /** Blobs of other hosts' files being read here now: garbage collection keeps them. */
  relayed (): string[] {
    return this.#relayed.list()
  }

  /** Announces every file held here (after a start). */
  async announceAll (): Promise<void> {
    for (const ref of this.#init.repository.all()) await this.announce(ref)
  }

  async announce (ref: DataRef): Promise<void> {
    await this.#init.overlay.provide(holdingKey(ref))
  }

  /**
   * The file `ref` for `requester` (whose request `authority.auth` signed `data.get` on it, or on
   * the directory `signed` holding it, for this host; or in whose stead this host reads it for an
   * instance placed here, `authority.placed`; checked here already): from this host's
   * repository, or fetched from the host that holds it, which checks the authority itself.
   */
  async content (requester: string, authority: ReadAuthority, ref: DataRef, signed: DataRef = ref): Promise<HeldContent> {
    checkWithin(ref, signed)
    try {
      return { ...this.#init.repository.content(requester, ref.owner, ref.path), release: async () => {} }
    } catch (err) {
      if (!(err instanceof XenosError) || err.code !== 'DATA_NOT_FOUND') throw err
    }
    const uri = formatDataUri(ref)
    const holders = (await this.#init.overlay.findProviders(holdingKey(ref), FIND_HOLDERS_MS)).filter(h => h !== this.#init.overlay.peerId)
    let refusal: unknown
    for (const host of holders) {
      let stat: z.infer<typeof statReplySchema>
      try {
        stat = statReplySchema.parse(await callHost(this.#init.overlay, host, 'data.stat', { uri, ...(signed === ref ? {} : { signed: formatDataUri(signed) }), ...authority }))
      } catch (err) {
        // FORBIDDEN from the holder is the answer; another failure may be one host's.
        if (err instanceof XenosError && (err.code === 'FORBIDDEN' || err.code === 'UNAUTHENTICATED')) throw err
        refusal = err
        this.#init.log.debug({ err, host, uri }, 'a host announcing a file could not give it')
        continue
      }
      this.#relayed.hold([stat.blob])
      const release = async (): Promise<void> => {
        if (this.#relayed.release([stat.blob]).length > 0) await this.#init.collect()
      }
      try {
        if (!await this.#init.blobs.has(stat.blob)) {
          await this.#init.fetcher.fetchBlob(uri, stat.blob, stat.file.size, async () => [host], { owner: ref.owner, ticketFor: peer => peer === host ? stat.ticket : undefined })
        }
      } catch (err) {
        await release()
        throw err
      }
      return { file: stat.file, blob: stat.blob, blobPath: this.#init.blobs.path(stat.blob), release }
    }
    if (refusal instanceof Error) throw new XenosError('PEER_UNREACHABLE', `${uri} is announced by ${holders.length} host(s), none of which could give it: ${refusal.message}`)
    throw new XenosError('DATA_NOT_FOUND', `no host holds ${uri}: check the name with "xenos data ls"`)
  }

  /**
   * Checks the authority host `peer` reads with: a `data.get` signature, which must be signed
   * for `peer`, or a place on `peer`. Either may come more than once (each host of a deploy
   * stages the same inputs, each file of a directory is asked for), so it is not refused as a
   * replay: while it is fresh it only lets the host it names read again what it could read once.
   */
  async #verified (uri: string, signedUri: string, authority: ReadAuthority, peer: string): Promise<{ ref: DataRef, who: string }> {
    const ref = parseDataUri(uri)
    const signed = parseDataUri(signedUri)
    checkWithin(ref, signed)
    const who = 'auth' in authority
      ? this.#init.verifier.verify(authority.auth, { action: 'data.get', target: formatDataUri(signed), params: {} }, { host: peer, once: false })
      : await placedReaderOf(authority.placed, peer, signed)
    return { ref, who }
  }
}

/** Throws unless `ref` is `signed` itself or a file under it: a signature on a directory reads what is in it. */
function checkWithin (ref: DataRef, signed: DataRef): void {
  if (ref.owner === signed.owner && (ref.path === signed.path || ref.path.startsWith(`${signed.path}/`))) return
  throw new XenosError('FORBIDDEN', `${formatDataUri(ref)} is not under ${formatDataUri(signed)}, which the request was signed for`)
}

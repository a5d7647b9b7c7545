import type { Logger } from 'pino'
import { z } from 'zod'
import { BLOB_ID_PATTERN, formatDataUri, parseDataUri, verifyAction, XenosError, type DataRef, type RequestAuth } from '../core/index.ts'
import type { DataContent, DataRepository } from '../data/index.ts'
import type { BlobStore } from '../images/index.ts'
import type { Overlay } from '../overlay/index.ts'
import type { TemplateFetcher } from './fetcher.ts'
import { authSchema, dataFileViewSchema } from './rpc-schemas.ts'
import { callHost } from './remote.ts'

export interface DataAccessInit {
  overlay: Pick<Overlay, 'peerId' | 'rpc' | 'provide' | 'findProviders' | 'learnHost'>
  repository: DataRepository
  fetcher: Pick<TemplateFetcher, 'fetchBlob'>
  blobs: Pick<BlobStore, 'has' | 'path'>
  log: Logger
}

const statRequestSchema = z.strictObject({
  uri: z.string().min(1).max(2048),
  /** The name the signature is on, when it is a directory holding `uri`. */
  signed: z.string().min(1).max(2048).optional(),
  auth: authSchema,
})
const statReplySchema = z.strictObject({
  file: dataFileViewSchema,
  blob: z.string().regex(BLOB_ID_PATTERN),
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
 * itself (access is decided where the data is) and names the blob, then fetches the blob's
 * chunks from it like any image file, each verified against the blob's index.
 */
export class DataAccess {
  readonly #init: DataAccessInit

  constructor (init: DataAccessInit) {
    this.#init = init
  }

  serve (): void {
    this.#init.overlay.rpc.handle('data.stat', statRequestSchema, async req => {
      const { ref, who } = this.#verified(req.uri, req.signed ?? req.uri, req.auth)
      const c = this.#init.repository.content(who, ref.owner, ref.path)
      return { file: c.file, blob: c.blob }
    })
  }

  /** Announces every file held here (after a start). */
  async announceAll (): Promise<void> {
    for (const ref of this.#init.repository.all()) await this.announce(ref)
  }

  async announce (ref: DataRef): Promise<void> {
    await this.#init.overlay.provide(holdingKey(ref))
  }

  /**
   * The file `ref` for `requester` (whose request `auth` signed `data.get` on it, or on the
   * directory `signed` holding it; checked here already): from this host's repository, or
   * fetched from the host that holds it.
   */
  async content (requester: string, auth: RequestAuth, ref: DataRef, signed: DataRef = ref): Promise<DataContent> {
    checkWithin(ref, signed)
    try {
      return this.#init.repository.content(requester, ref.owner, ref.path)
    } catch (err) {
      if (!(err instanceof XenosError) || err.code !== 'DATA_NOT_FOUND') throw err
    }
    const uri = formatDataUri(ref)
    const holders = (await this.#init.overlay.findProviders(holdingKey(ref), FIND_HOLDERS_MS)).filter(h => h !== this.#init.overlay.peerId)
    let refusal: unknown
    for (const host of holders) {
      let stat: z.infer<typeof statReplySchema>
      try {
        stat = statReplySchema.parse(await callHost(this.#init.overlay, host, 'data.stat', { uri, ...(signed === ref ? {} : { signed: formatDataUri(signed) }), auth }))
      } catch (err) {
        // FORBIDDEN from the holder is the answer; another failure may be one host's.
        if (err instanceof XenosError && (err.code === 'FORBIDDEN' || err.code === 'UNAUTHENTICATED')) throw err
        refusal = err
        this.#init.log.debug({ err, host, uri }, 'a host announcing a file could not give it')
        continue
      }
      if (!await this.#init.blobs.has(stat.blob)) await this.#init.fetcher.fetchBlob(uri, stat.blob, stat.file.size, async () => [host])
      return { file: stat.file, blob: stat.blob, blobPath: this.#init.blobs.path(stat.blob) }
    }
    if (refusal instanceof Error) throw new XenosError('PEER_UNREACHABLE', `${uri} is announced by ${holders.length} host(s), none of which could give it: ${refusal.message}`)
    throw new XenosError('DATA_NOT_FOUND', `no host holds ${uri}: check the name with "xenos data ls"`)
  }

  /**
   * Checks a forwarded `data.get` signature. A read signature may come more than once (each host
   * of a deploy stages the same inputs), so it is not refused as a replay: within its few minutes
   * it only lets the hosts it was given to read again what they could read once.
   */
  #verified (uri: string, signedUri: string, auth: RequestAuth): { ref: DataRef, who: string } {
    const ref = parseDataUri(uri)
    const signed = parseDataUri(signedUri)
    verifyAction(auth, { action: 'data.get', target: formatDataUri(signed), params: {} })
    checkWithin(ref, signed)
    return { ref, who: auth.owner }
  }
}

/** Throws unless `ref` is `signed` itself or a file under it: a signature on a directory reads what is in it. */
function checkWithin (ref: DataRef, signed: DataRef): void {
  if (ref.owner === signed.owner && (ref.path === signed.path || ref.path.startsWith(`${signed.path}/`))) return
  throw new XenosError('FORBIDDEN', `${formatDataUri(ref)} is not under ${formatDataUri(signed)}, which the request was signed for`)
}

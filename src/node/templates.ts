import type { Logger } from 'pino'
import { Readable } from 'node:stream'
import { XenosError, type RequestAuth, type Template, type TemplateManifest } from '../core/index.ts'
import type { BlobStore, TemplateFetcher, TemplateLibrary } from '../images/index.ts'
import type { Store } from '../store/index.ts'
import type { Quotas } from './quotas.ts'
import type { RequestVerifier } from './replay.ts'

export interface TemplatesInit {
  hostId: string
  library: TemplateLibrary
  blobs: BlobStore
  store: Pick<Store, 'blobClaims'>
  fetcher: Pick<TemplateFetcher, 'ensure'>
  verifier: RequestVerifier
  quotas: Pick<Quotas, 'check'>
  /** Blobs of the data repository's files, which garbage collection keeps. */
  dataBlobs: () => Set<string>
  /** Tells the overlay that this host now holds template `t`, or no longer holds template `id`. */
  advertise: (t: Template) => Promise<void>
  withdraw: (id: string) => Promise<void>
  log: Logger
}

/** How long an image file an owner uploaded waits for a template of theirs to use it. */
export const UNUSED_UPLOAD_MS = 60 * 60_000

/**
 * A host's templates and their image files as owners and the operator keep them: an owner
 * imports templates (signed) and uploads the image files they need, which count against the
 * owner's quota; only a template's importer, or the operator, removes it; the operator pulls
 * templates onto the host ahead of deploys. Image files no template, data file or recent upload
 * needs are removed.
 */
export class Templates {
  readonly #init: TemplatesInit

  constructor (init: TemplatesInit) {
    this.#init = init
  }

  /** Imports `manifest`, signed `template.import` by its owner over `body`, the request that carried it. */
  async import (manifest: TemplateManifest, body: unknown, auth: RequestAuth): Promise<Template> {
    const owner = this.#init.verifier.verify(auth, { action: 'template.import', target: 'templates', params: body })
    const missing = await this.#init.library.missingBlobs(manifest)
    if (missing.length > 0) {
      throw new XenosError('BAD_MANIFEST', `this host lacks ${missing.length} of the template's image files (${missing.join(', ')}): upload them first, as "xenos template build" does`)
    }
    await this.#init.library.verifyImage(manifest)
    const t = this.#init.library.add(manifest, owner)
    await this.#init.advertise(t)
    return t
  }

  /** Stores an image file (signed `blob.put` on its id): the operator's freely, an owner's within its quota. */
  async putBlob (id: string, declaredBytes: number | undefined, body: Readable, auth: RequestAuth): Promise<number> {
    const who = this.#init.verifier.verify(auth, { action: 'blob.put', target: id, params: {} })
    const operator = this.#init.verifier.isOperator(who)
    if (!operator) {
      if (declaredBytes === undefined) throw new XenosError('INVALID_ARGUMENT', 'an upload of an image file must say its length (Content-Length)')
      this.#init.quotas.check(who, declaredBytes, `image file ${id}`)
    }
    await this.#init.blobs.put(id, operator ? body : limited(body, declaredBytes ?? 0))
    const size = await this.#init.blobs.size(id)
    if (!operator) this.#init.store.blobClaims.put({ owner: who, blob: id, size, createdAt: Date.now() })
    return size
  }

  /** Brings template `id` onto this host from the hosts that hold it (signed `template.pull` by the operator). */
  async pull (id: string, auth: RequestAuth): Promise<Template> {
    this.#init.verifier.operator(auth, { action: 'template.pull', target: id, params: {} })
    return (await this.#init.fetcher.ensure(id)).template
  }

  /** Removes a template no instance or snapshot here uses (signed `template.remove` by its importer or the operator), and the image files only it needed. */
  async remove (id: string, auth: RequestAuth): Promise<{ id: string, blobsRemoved: number, bytesFreed: number }> {
    const who = this.#init.verifier.verify(auth, { action: 'template.remove', target: id, params: {} })
    const t = this.#init.library.get(id)
    if (t === undefined) throw new XenosError('TEMPLATE_NOT_FOUND', `no template ${id} on this host`)
    if (t.owner === null) {
      if (!this.#init.verifier.isOperator(who)) throw new XenosError('FORBIDDEN', `template ${id} was fetched by host ${this.#init.hostId} from other hosts; only its operator may remove it`)
    } else {
      this.#init.verifier.ownerOrOperator(who, t.owner, `template ${id}`, 'remove')
    }
    this.#init.library.remove(id)
    await this.#init.withdraw(id)
    // The importer's uploads for it stop counting at once (unless another of its templates uses them).
    if (t.owner !== null) for (const blob of this.#init.library.blobsOf(t)) if (!this.#usedBy(t.owner, blob)) this.#init.store.blobClaims.remove(t.owner, blob)
    const { removed, bytes } = await this.collect()
    this.#init.log.info({ template: id, blobs: removed, bytes }, 'template removed')
    return { id, blobsRemoved: removed, bytesFreed: bytes }
  }

  /** Whether a template `owner` imported here uses image file `blob`. */
  #usedBy (owner: string, blob: string): boolean {
    return this.#init.library.list().some(t => t.owner === owner && this.#init.library.blobsOf(t).includes(blob))
  }

  /**
   * Drops owners' claims on image files no template of theirs uses (once they had time to import
   * one), then removes every image file nothing needs.
   */
  async collect (now = Date.now()): Promise<{ removed: number, bytes: number }> {
    for (const c of this.#init.store.blobClaims.list()) {
      if (now - c.createdAt > UNUSED_UPLOAD_MS && !this.#usedBy(c.owner, c.blob)) this.#init.store.blobClaims.remove(c.owner, c.blob)
    }
    const { removed, bytes } = await this.#init.blobs.gc(() => new Set([...this.#init.library.blobsInUse(), ...this.#init.dataBlobs(), ...this.#init.store.blobClaims.list().map(c => c.blob)]))
    return { removed: removed.length, bytes }
  }
}

/** Passes `source` on, refusing more than `max` bytes (what the uploader said it would send). */
function limited (source: Readable, max: number): Readable {
  let seen = 0
  return Readable.from((async function * () {
    for await (const piece of source as AsyncIterable<Uint8Array>) {
      seen += piece.byteLength
      if (seen > max) throw new XenosError('INVALID_ARGUMENT', `the upload is longer than the ${max} bytes it said it was`)
      yield piece
    }
  })())
}

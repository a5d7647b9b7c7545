import { EventEmitter } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import { XenosError, type AdvertOf, type FetchProgress, type Template, type TemplateManifest } from '../core/index.ts'
import type { BlobStore } from './blobs.ts'
import { HeldBlobs } from './held.ts'
import type { TemplateLibrary } from './library.ts'
import type { Overlay } from '../overlay/index.ts'
import { swarmFetch, type SwarmProgress } from '../transfer/index.ts'

export interface TemplateFetcherInit {
  overlay: Pick<Overlay, 'peerId' | 'node' | 'search' | 'lookup' | 'learnHost' | 'provide' | 'findProviders'>
  library: TemplateLibrary
  blobs: BlobStore
  /** Asks `host` for template `id`'s manifest (an RPC to it). */
  manifestFrom: (host: string, id: string) => Promise<unknown>
  /** Called when a template has arrived, so this host advertises it too. */
  onTemplateAdded: (t: Template) => void
  log: Logger
}

/** A template made local, and how many bytes of it came from peers just now. */
export interface Pulled {
  template: Template
  fetched: number
}

/** A blob this host is fetching, as the API shows it. */
export interface TransferView extends SwarmProgress {
  /** What the blob is fetched for: a template id, or the data:// name of a file. */
  template: string
  /** For a file of the data repository: its owner, the only one who may see the transfer. */
  owner?: string
  startedAt: number
}

/** How a blob is fetched: template files from anyone who holds them; a data file from its holder only, with the ticket it gave. */
export interface FetchOptions {
  /** The owner of the data file fetched; absent for a template's file. */
  owner?: string
  ticketFor?: (peer: string) => string | undefined
}

/** Largest kernel or initramfs a peer may send; a template's disk is bounded by its manifest. */
const MAX_BOOT_FILE_BYTES = 512 * 1024 * 1024
/** How often the DHT is asked again for hosts holding part of a blob. */
const DHT_PROVIDERS_EVERY_MS = 1000

/**
 * Brings templates to this host: the manifest from a host that advertises the template (checked
 * against its id), then every image file it lacks from all the hosts that hold it or part of it,
 * at once. One pull per template however many deploys wait for it; a pull that failed resumes
 * from the chunks it got.
 */
export class TemplateFetcher extends EventEmitter<{ progress: [TransferView], done: [TransferView & { error: string | null }] }> {
  readonly #init: TemplateFetcherInit
  readonly #pulls = new Map<string, Promise<Pulled>>()
  readonly transfers = new Map<string, TransferView>()
  /** Per template being pulled: each file's progress, kept until the whole pull ends. */
  readonly #pullProgress = new Map<string, Map<string, FetchProgress>>()
  readonly counters = { fetchedBytes: 0, penalties: 0 }
  /** The image files of templates being pulled, until each template is kept: others may fetch them from here meanwhile, and garbage collection keeps them. */
  readonly #pulling = new HeldBlobs()

  constructor (init: TemplateFetcherInit) {
    super()
    this.#init = init
  }

  /** The local template `id`, fetched first if this host lacks it or any of its files. */
  async ensure (id: string): Promise<Pulled> {
    const local = this.#init.library.get(id)
    if (local !== undefined && (await this.#init.library.missingBlobs(local.manifest)).length === 0) return { template: local, fetched: 0 }
    let pull = this.#pulls.get(id)
    if (pull === undefined) {
      pull = this.#pull(id, local?.manifest).finally(() => this.#pulls.delete(id))
      this.#pulls.set(id, pull)
    }
    return await pull
  }

  /** How much of template `id`'s missing files this host holds, while it pulls them. */
  progressOf (id: string): FetchProgress | null {
    const files = this.#pullProgress.get(id)
    if (files === undefined) return null
    let held = 0
    let size = 0
    for (const f of files.values()) {
      held += f.held
      size += f.size
    }
    return { held, size }
  }

  /** Image files of templates being pulled now. */
  isPulling (blob: string): boolean {
    return this.#pulling.has(blob)
  }

  pulling (): string[] {
    return this.#pulling.list()
  }

  async #pull (id: string, known: TemplateManifest | undefined): Promise<Pulled> {
    this.#pullProgress.set(id, new Map())
    try {
      return await this.#pullFiles(id, known)
    } finally {
      this.#pullProgress.delete(id)
    }
  }

  async #pullFiles (id: string, known: TemplateManifest | undefined): Promise<Pulled> {
    const manifest = known ?? await this.#manifest(id)
    const image = manifest.image
    const missing = await this.#init.library.missingBlobs(manifest)
    return await this.#pulling.during(missing, async () => {
      const fetched = await Promise.all(missing.map(async blob => {
        const maxBytes = blob === image?.disk || blob === image?.base ? image.diskBytes : MAX_BOOT_FILE_BYTES
        return await this.fetchBlob(id, blob, maxBytes, async () => await this.#holders(id))
      }))
      return { template: await this.#keep(id, manifest), fetched: fetched.reduce((a, b) => a + b, 0) }
    })
  }

  async #keep (id: string, manifest: TemplateManifest): Promise<Template> {
    await this.#init.library.verifyImage(manifest)
    const template = this.#init.library.add(manifest, null)
    this.#init.log.info({ template: id }, 'template fetched')
    this.#init.onTemplateAdded(template)
    return template
  }

  /** Hosts advertising template `id` (they hold all its files), with their addresses learnt. */
  async #holders (id: string): Promise<string[]> {
    const adverts = (this.#init.overlay.search({ kind: 'template' }) as Array<AdvertOf<'template'>>).filter(a => a.id === id)
    if (adverts.length === 0) {
      const found = await this.#init.overlay.lookup('template', id)
      if (found !== undefined) adverts.push(found)
    }
    const hosts = adverts.map(a => a.host).filter(h => h !== this.#init.overlay.peerId)
    for (const host of hosts) await this.#init.overlay.learnHost(host)
    return hosts
  }

  async #manifest (id: string): Promise<TemplateManifest> {
    const failed = new Set<string>()
    // A holder's advert may have lapsed a moment (a busy host refreshes it late): look again, twice.
    for (let round = 0; round < 3; round++) {
      if (round > 0) await sleep(1000)
      for (const host of await this.#holders(id)) {
        if (failed.has(host)) continue
        try {
          return this.#init.library.verify(id, await this.#init.manifestFrom(host, id))
        } catch (err) {
          failed.add(host)
          this.#init.log.warn({ err, template: id, host }, 'could not get the template manifest')
        }
      }
    }
    throw new XenosError('TEMPLATE_NOT_FOUND', `template ${id} is not held by any reachable host`)
  }

  /**
   * Fetches one blob for `purpose` (a template id or a data:// name) from `holders` and, for a
   * template's file, the hosts the DHT names; returns the bytes that came from peers. A data
   * file comes from its holders only, and this host does not offer it to others.
   */
  async fetchBlob (purpose: string, blob: string, maxBytes: number, holders: () => Promise<string[]>, o: FetchOptions = {}): Promise<number> {
    const shared = o.owner === undefined
    let fromDht: string[] = []
    let dhtAt = 0
    let dhtQuery: Promise<void> | undefined
    const providers = async (): Promise<string[]> => {
      // Hosts still fetching the blob are found through the DHT, in the background.
      if (shared && dhtQuery === undefined && Date.now() - dhtAt > DHT_PROVIDERS_EVERY_MS) {
        dhtAt = Date.now()
        dhtQuery = this.#init.overlay.findProviders(blob).then(found => { fromDht = found }).finally(() => { dhtQuery = undefined })
      }
      return [...new Set([...await holders(), ...fromDht])]
    }
    const startedAt = Date.now()
    let counted = 0
    let error: string | null = null
    try {
      const result = await swarmFetch({
        node: this.#init.overlay.node,
        sink: this.#init.blobs,
        blob,
        maxBytes,
        providers,
        onHolding: () => { if (shared) void this.#init.overlay.provide(blob) },
        ...o.ticketFor === undefined ? {} : { ticketFor: o.ticketFor },
        onProgress: p => {
          this.counters.fetchedBytes += p.fetched - counted
          counted = p.fetched
          const view: TransferView = { ...p, template: purpose, startedAt, ...o.owner === undefined ? {} : { owner: o.owner } }
          this.transfers.set(blob, view)
          this.#pullProgress.get(purpose)?.set(blob, { held: p.held, size: p.size })
          this.emit('progress', view)
        },
        onPenalty: () => { this.counters.penalties++ },
        log: this.#init.log,
      })
      if (shared) void this.#init.overlay.provide(blob)
      return result.fetched
    } catch (err) {
      error = (err as Error).message
      throw err
    } finally {
      const last = this.transfers.get(blob)
      this.transfers.delete(blob)
      if (last !== undefined) this.emit('done', { ...last, error })
    }
  }
}

import { XenosError, type Template, type TemplateManifest } from '../core/index.ts'
import type { Store } from '../store/index.ts'
import type { BlobStore } from './blobs.ts'
import { templateId, validateManifest } from './manifest.ts'
import { checkTailoredDisk } from './qcow2.ts'

/** Shortest id prefix accepted in place of a full template id. */
export const MIN_ID_PREFIX = 12

/**
 * The templates a host holds. A template is immutable: its id is its content, so adding a
 * manifest that is already present changes nothing, and one fetched from a peer is accepted only
 * if it hashes to the id that was asked for.
 */
export class TemplateLibrary {
  readonly #store: Pick<Store, 'templates' | 'instances' | 'snapshots'>
  readonly #blobs: Pick<BlobStore, 'has' | 'path'>
  /** The image files templates here need, known once asked until a template comes or goes. */
  #inUse: Set<string> | undefined

  constructor (store: Pick<Store, 'templates' | 'instances' | 'snapshots'>, blobs: Pick<BlobStore, 'has' | 'path'>) {
    this.#store = store
    this.#blobs = blobs
  }

  /** Ids of the image files a template needs that this host does not hold yet. */
  async missingBlobs (manifest: TemplateManifest): Promise<string[]> {
    const ids = blobsOf(manifest)
    const held = await Promise.all(ids.map(async d => await this.#blobs.has(d)))
    return ids.filter((_, i) => held[i] !== true)
  }

  /** Checks a template's image files once they are all here: a tailored disk may reach nothing but its base. */
  async verifyImage (manifest: TemplateManifest): Promise<void> {
    const image = manifest.image
    if (image?.diskFormat === 'qcow2' && image.base !== undefined) await checkTailoredDisk(this.#blobs.path(image.disk), image.base, image.diskBytes)
  }

  /** Every image file some template here needs: what garbage collection must keep, and what any host may fetch. */
  blobsInUse (): ReadonlySet<string> {
    this.#inUse ??= new Set(this.list().flatMap(t => blobsOf(t.manifest)))
    return this.#inUse
  }

  /** The image files template `t` needs. */
  blobsOf (t: Template): string[] {
    return blobsOf(t.manifest)
  }

  /** Keeps `manifest` as a template, imported by `owner` (null: fetched from another host). */
  add (manifest: TemplateManifest, owner: string | null, now = Date.now()): Template {
    const id = templateId(manifest)
    const known = this.#store.templates.get(id)
    if (known !== undefined) return known
    const t: Template = { id, manifest, importedAt: now, owner }
    this.#store.templates.put(t)
    this.#inUse = undefined
    return t
  }

  /** Checks a manifest received from a peer, refusing it unless it is exactly template `id`. */
  verify (id: string, raw: unknown): TemplateManifest {
    const manifest = validateManifest(raw, `template ${id} from a peer`)
    if (templateId(manifest) !== id) throw new XenosError('PEER_PROTOCOL', `a peer sent a manifest that does not match template ${id}`)
    return manifest
  }

  get (id: string): Template | undefined {
    return this.#store.templates.get(id)
  }

  list (): Template[] {
    return this.#store.templates.list()
  }

  /** Finds a local template by id, id prefix (`sha256:` optional), `name` or `name:version`. */
  resolve (ref: string): Template | undefined {
    const all = this.list()
    const hex = ref.startsWith('sha256:') ? ref.slice(7) : ref
    if (/^[0-9a-f]+$/.test(hex) && hex.length >= MIN_ID_PREFIX) {
      const found = all.filter(t => t.id.slice(7).startsWith(hex))
      if (found.length > 1) throw new XenosError('INVALID_ARGUMENT', `"${ref}" matches ${found.length} templates: give more of the id`)
      if (found[0] !== undefined) return found[0]
    }
    const [name, version] = ref.split(':')
    const named = all.filter(t => t.manifest.name === name && (version === undefined || t.manifest.version === version))
    return named.sort((a, b) => b.importedAt - a.importedAt)[0]
  }

  remove (id: string): void {
    if (this.#store.templates.get(id) === undefined) throw new XenosError('TEMPLATE_NOT_FOUND', `no template ${id} on this host`)
    const users = this.#store.instances.countUsingTemplate(id)
    if (users > 0) throw new XenosError('TEMPLATE_IN_USE', `${users} instance(s) on this host use template ${id}: destroy them first`)
    const snapshots = this.#store.snapshots.list().filter(s => s.templateId === id).length
    if (snapshots > 0) throw new XenosError('TEMPLATE_IN_USE', `${snapshots} snapshot(s) on this host are of template ${id}: delete them first`)
    this.#store.templates.remove(id)
    this.#inUse = undefined
  }
}

/** The image files of a template, the base of a layered disk first (a host takes an overlay only on a base it holds). */
export function blobsOf (manifest: TemplateManifest): string[] {
  const image = manifest.image
  return image === undefined ? [] : [...new Set([...(image.base === undefined ? [] : [image.base]), image.kernel, image.initrd, image.disk])]
}

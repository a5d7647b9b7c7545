import { isTemplateUri, parseTemplateUri, templateIdSchema, XenosError, type AdvertOf, type TemplateSummary } from '../core/index.ts'
import type { NameRegistry, TemplateLibrary } from '../images/index.ts'
import type { Overlay, Rpc } from '../overlay/index.ts'
import { z } from 'zod'

export interface TemplateCatalogInit {
  overlay: Pick<Overlay, 'peerId' | 'search' | 'lookup' | 'lookupName'>
  library: TemplateLibrary
  names: NameRegistry
}

const templateRequestSchema = z.strictObject({ id: templateIdSchema })

/** The templates as one host sees them: its own, those other hosts advertise, and the names owners gave them. */
export class TemplateCatalog {
  readonly #init: TemplateCatalogInit

  constructor (init: TemplateCatalogInit) {
    this.#init = init
  }

  get #self (): string {
    return this.#init.overlay.peerId
  }

  /** Registers the RPC method through which other hosts read the manifest of a template this one holds. */
  serve (rpc: Rpc): void {
    rpc.handle('template.get', templateRequestSchema, async ({ id }) => {
      const t = this.#init.library.get(id)
      if (t === undefined) throw new XenosError('TEMPLATE_NOT_FOUND', `host ${this.#self} does not hold template ${id}`)
      return t.manifest
    })
  }

  /**
   * Finds a template by `template://owner/name/tag`, id, id prefix, `name` or `name:version`:
   * locally, in the advert cache, then in the DHT.
   */
  async resolve (ref: string): Promise<TemplateSummary> {
    if (isTemplateUri(ref)) {
      const record = this.#init.names.resolve(parseTemplateUri(ref))
      if (record === undefined) throw new XenosError('TEMPLATE_NOT_FOUND', `no host has heard of ${ref}: its owner publishes it with "xenos template tag" or "xenos template alias"`)
      ref = record.template
    }
    const local = this.#init.library.resolve(ref)
    if (local !== undefined) return this.summary(local.id)
    const [name = '', version] = ref.split(':')
    let advert: AdvertOf<'template'> | undefined
    if (/^sha256:[0-9a-f]{64}$/.test(ref)) {
      advert = await this.#init.overlay.lookup('template', ref)
    } else {
      advert = this.#templateAdverts().find(a => (a.id.startsWith(ref) && ref.length >= 19) || (a.body.name === name && (version === undefined || a.body.version === version)))
      if (advert === undefined && version === undefined) advert = await this.#init.overlay.lookupName('template', name)
    }
    if (advert === undefined) throw new XenosError('TEMPLATE_NOT_FOUND', `no template "${ref}" here or on the overlay: import it with "xenos template import FILE" or check "xenos search"`)
    return this.summary(advert.id, advert)
  }

  #templateAdverts (): Array<AdvertOf<'template'>> {
    return this.#init.overlay.search({ kind: 'template' }) as Array<AdvertOf<'template'>>
  }

  /** What is known of template `id`: the local copy, cached adverts, or one found in the DHT. */
  summary (id: string, found?: AdvertOf<'template'>): TemplateSummary {
    const adverts = this.#templateAdverts().filter(a => a.id === id)
    if (found !== undefined && !adverts.some(a => a.host === found.host)) adverts.push(found)
    const local = this.#init.library.get(id)
    const hosts = [...new Set([...(local === undefined ? [] : [this.#self]), ...adverts.map(a => a.host)])]
    if (local !== undefined) {
      const m = local.manifest
      return { id, name: m.name, version: m.version, driver: m.driver, tags: m.tags, resources: m.resources, hosts }
    }
    const a = adverts[0]
    if (a === undefined) throw new XenosError('TEMPLATE_NOT_FOUND', `template ${id} is no longer advertised`)
    return { id, name: a.body.name, version: a.body.version, driver: a.body.driver, tags: a.body.tags, resources: a.body.resources, hosts }
  }
}

import type { Logger } from 'pino'
import { z } from 'zod'
import {
  CONTROL_ACTIONS, deriveParamsSchema, instanceIdSchema, instanceMetricsSchema, instanceViewSchema, requestAuthSchema,
  snapshotViewSchema, templateSummarySchema, XenosError,
  type AdvertOf, type ControlAction, type DeriveParams, type InstanceMetrics, type InstanceView, type LogPiece, type RequestAuth, type Template, type TemplateSummary,
} from '../core/index.ts'
import { deriveDisk, tailoredManifest, type BlobStore, type TemplateLibrary } from '../images/index.ts'
import type { SnapshotRecord, Store } from '../store/index.ts'
import type { Overlay } from '../overlay/index.ts'
import type { TemplateCatalog } from './catalog.ts'
import type { RequestVerifier } from './replay.ts'
import type { InstanceSupervisor } from './instances/index.ts'
import { callHost, hostOfInstance } from './remote.ts'

export interface InstanceRouterInit {
  overlay: Pick<Overlay, 'peerId' | 'rpc' | 'search' | 'lookup' | 'lookupName' | 'learnHost' | 'cache'>
  library: Pick<TemplateLibrary, 'verifyImage' | 'add'>
  catalog: Pick<TemplateCatalog, 'summary'>
  blobs: BlobStore
  store: Pick<Store, 'snapshots'>
  supervisor: InstanceSupervisor
  verifier: RequestVerifier
  /** Called when a template is made here (derived), so this host advertises it. */
  onTemplateAdded: (t: Template) => void
  log: Logger
}

const CONTROL_TIMEOUT_MS = 60_000

/** What hosts ask each other about an instance, each with its owner's signature for the host that runs it. */
const controlRequestSchema = z.strictObject({ id: instanceIdSchema, action: z.enum(CONTROL_ACTIONS), auth: requestAuthSchema })
/** A signed read of an instance: its view (`get`), its usage (`metrics`) or a snapshot of it. */
const instanceRequestSchema = z.strictObject({ id: instanceIdSchema, auth: requestAuthSchema })
const logsRequestSchema = z.strictObject({ id: instanceIdSchema, lines: z.number().int().min(1).max(10_000), from: z.number().int().min(0).optional(), auth: requestAuthSchema })
const logPieceSchema = z.strictObject({ text: z.string(), next: z.number().int().min(0) })
const deriveRequestSchema = z.strictObject({ id: instanceIdSchema, params: deriveParamsSchema, auth: requestAuthSchema })

/**
 * Every action on an instance, wherever it runs: finds its host, and sends the action to the
 * host its owner signed it for, which is the one that checks the signature (this host only
 * relays); carries out those signed for this host.
 */
export class InstanceRouter {
  readonly #init: InstanceRouterInit

  constructor (init: InstanceRouterInit) {
    this.#init = init
  }

  get #self (): string {
    return this.#init.overlay.peerId
  }

  /** Registers the RPC methods through which other hosts reach this one. */
  serve (): void {
    const { rpc } = this.#init.overlay
    rpc.handle('instance.control', controlRequestSchema, async req => await this.#controlHere(req.id, req.action, req.auth) ?? null)
    rpc.handle('instance.get', instanceRequestSchema, async req => this.#getHere(req.id, req.auth))
    rpc.handle('instance.metrics', instanceRequestSchema, async req => await this.#metricsHere(req.id, req.auth))
    rpc.handle('instance.logs', logsRequestSchema, async req => await this.#logsHere(req.id, req.lines, req.from, req.auth))
    rpc.handle('instance.snapshot', instanceRequestSchema, async req => await this.#snapshotHere(req.id, req.auth))
    rpc.handle('instance.derive', deriveRequestSchema, async req => await this.#deriveHere(req.id, req.params, req.auth))
  }

  /** The host instance `id` runs on: this one, or the one its owner placed it on last. */
  async locate (id: string): Promise<string> {
    if (this.#init.supervisor.has(id) && this.#init.supervisor.arrivingFrom(id) === undefined) return this.#self
    return await hostOfInstance(this.#init.overlay, id)
  }

  /** Takes a snapshot of an instance (on the host that runs it, signed by its owner). */
  async snapshot (id: string, auth: RequestAuth): Promise<SnapshotRecord> {
    if (auth.host === this.#self) return await this.#snapshotHere(id, auth)
    return snapshotViewSchema.parse(await this.#call(auth.host, 'instance.snapshot', { id, auth }, CONTROL_TIMEOUT_MS))
  }

  async #snapshotHere (id: string, auth: RequestAuth): Promise<SnapshotRecord> {
    this.#authorise(id, 'snapshot', auth)
    return await this.#init.supervisor.snapshots.take(id)
  }

  /**
   * Makes a tailored template from a stopped or suspended VM: its template with the changes on its
   * disk, as a small overlay on the template's base disk (signed by the instance's owner).
   */
  async derive (id: string, params: DeriveParams, auth: RequestAuth): Promise<TemplateSummary> {
    if (auth.host === this.#self) return await this.#deriveHere(id, params, auth)
    return templateSummarySchema.parse(await this.#call(auth.host, 'instance.derive', { id, params, auth }, CONTROL_TIMEOUT_MS))
  }

  async #deriveHere (id: string, params: DeriveParams, auth: RequestAuth): Promise<TemplateSummary> {
    this.#init.verifier.verify(auth, { action: 'derive', target: id, params })
    const owner = this.#init.supervisor.view(id).owner
    if (owner !== auth.owner) throw new XenosError('FORBIDDEN', `instance ${id} belongs to another owner; only its owner may derive a template from it`)
    const manifest = await this.#init.supervisor.withResting(id, async (disk, template) => {
      const image = template.manifest.image
      if (image === undefined) throw new XenosError('INVALID_STATE', `instance ${id} does not run in a VM`)
      const base = image.base ?? image.disk
      const derived = await deriveDisk({ base: this.#init.blobs.path(base), baseId: base, from: disk })
      try {
        return tailoredManifest(template.manifest, await this.#init.blobs.putFile(derived.path), params.name, params.version)
      } finally {
        await derived.cleanup()
      }
    })
    await this.#init.library.verifyImage(manifest)
    const t = this.#init.library.add(manifest, owner)
    this.#init.onTemplateAdded(t)
    return this.#init.catalog.summary(t.id)
  }

  /** Deletes a snapshot held by this host (signed by its owner). */
  async deleteSnapshot (id: string, auth: RequestAuth): Promise<void> {
    const who = this.#init.verifier.verify(auth, { action: 'snapshot.delete', target: id, params: {} })
    const snapshot = this.#init.store.snapshots.get(id)
    if (snapshot === undefined) throw new XenosError('SNAPSHOT_NOT_FOUND', `host ${this.#self} holds no snapshot ${id}`)
    this.#init.verifier.ownerOrOperator(who, snapshot.owner, `snapshot ${id}`, 'delete')
    await this.#init.supervisor.snapshots.remove(id)
  }

  /** The snapshots held by this host that the signer may see: its own, or all for the operator. */
  snapshots (auth: RequestAuth): SnapshotRecord[] {
    const who = this.#init.verifier.verify(auth, { action: 'snapshots', target: this.#self, params: {} })
    const all = this.#init.store.snapshots.list()
    return this.#init.verifier.isOperator(who) ? all : all.filter(s => s.owner === who)
  }

  async control (id: string, action: ControlAction, auth: RequestAuth): Promise<InstanceView | undefined> {
    if (auth.host === this.#self) return await this.#controlHere(id, action, auth)
    const reply = await this.#call(auth.host, 'instance.control', { id, action, auth }, CONTROL_TIMEOUT_MS)
    return reply === null ? undefined : instanceViewSchema.parse(reply)
  }

  async #controlHere (id: string, action: ControlAction, auth: RequestAuth): Promise<InstanceView | undefined> {
    this.#authorise(id, action, auth)
    return await this.#init.supervisor.control(id, action)
  }

  /** Throws unless `auth` is the owner's signature of `action` on instance `id`, here. */
  #authorise (id: string, action: string, auth: RequestAuth): void {
    this.#init.verifier.verify(auth, { action, target: id, params: {} })
    const owner = this.#init.supervisor.view(id).owner
    if (owner !== auth.owner) throw new XenosError('FORBIDDEN', `instance ${id} belongs to another owner; only its owner may ${action} it`)
  }

  /** Throws unless `auth` is the owner's or this host's operator's signature of `action` on instance `id`. */
  #mayRead (id: string, action: string, auth: RequestAuth): void {
    const who = this.#init.verifier.verify(auth, { action, target: id, params: {} })
    this.#init.verifier.ownerOrOperator(who, this.#init.supervisor.view(id).owner, `instance ${id}`, action)
  }

  /** An instance's whole view (signed `get` by its owner or the operator of its host), asked of that host. */
  async get (id: string, auth: RequestAuth): Promise<InstanceView> {
    if (auth.host === this.#self) return this.#getHere(id, auth)
    return instanceViewSchema.parse(await this.#call(auth.host, 'instance.get', { id, auth }))
  }

  #getHere (id: string, auth: RequestAuth): InstanceView {
    this.#mayRead(id, 'get', auth)
    return this.#init.supervisor.view(id)
  }

  async metrics (id: string, auth: RequestAuth): Promise<InstanceMetrics> {
    if (auth.host === this.#self) return await this.#metricsHere(id, auth)
    return instanceMetricsSchema.parse(await this.#call(auth.host, 'instance.metrics', { id, auth }))
  }

  async #metricsHere (id: string, auth: RequestAuth): Promise<InstanceMetrics> {
    this.#mayRead(id, 'metrics', auth)
    return await this.#init.supervisor.metrics(id)
  }

  /** The last `lines` lines of an instance's output, or (`from`) what came after that offset. */
  async logs (id: string, lines: number, from: number | undefined, auth: RequestAuth): Promise<LogPiece> {
    if (auth.host === this.#self) return await this.#logsHere(id, lines, from, auth)
    return logPieceSchema.parse(await this.#call(auth.host, 'instance.logs', { id, lines, ...from === undefined ? {} : { from }, auth }))
  }

  async #logsHere (id: string, lines: number, from: number | undefined, auth: RequestAuth): Promise<LogPiece> {
    this.#authorise(id, 'logs', auth)
    return await this.#init.supervisor.logs(id, lines, from)
  }

  /** What anyone may see of the instances this host runs plus those advertised by others (what their adverts say). */
  list (filter: { owner?: string, host?: string } = {}): InstanceView[] {
    const local = this.#init.supervisor.list().map(publicView)
    const ids = new Set(local.map(v => v.id))
    const remote = (this.#init.overlay.search({ kind: 'instance' }) as Array<AdvertOf<'instance'>>)
      .filter(a => !ids.has(a.id))
      .map(viewFromAdvert)
    for (const v of remote) ids.add(v.id)
    // The instances of a host taken for dead, as last heard of, marked so: gone from searches, not from their owners' lists.
    const unreachable = this.#init.overlay.cache.unreachableHosts().flatMap(({ since, last }) => (last.filter(a => a.kind === 'instance' && !ids.has(a.id)) as Array<AdvertOf<'instance'>>)
      .map(a => ({ ...viewFromAdvert(a), unreachableSince: since })))
    return [...local, ...remote, ...unreachable]
      .filter(v => (filter.owner === undefined || v.owner === filter.owner) && (filter.host === undefined || v.host === filter.host))
      .sort((a, b) => a.createdAt - b.createdAt)
  }

  async #call (host: string, method: string, params: unknown, timeoutMs?: number): Promise<unknown> {
    return await callHost(this.#init.overlay, host, method, params, timeoutMs)
  }
}

/** An instance as anyone may see it: what its advert says, without what its task printed. */
function publicView (v: InstanceView): InstanceView {
  const view = { ...v }
  delete view.error
  return view
}

export function viewFromAdvert (a: AdvertOf<'instance'>): InstanceView {
  return {
    id: a.id,
    name: a.body.name,
    template: a.body.template,
    templateName: a.body.templateName,
    host: a.host,
    state: a.body.state,
    owner: a.body.owner,
    endpoints: a.body.endpoints,
    services: a.body.services.map(s => ({
      name: s.name,
      url: a.body.endpoints.find(e => e.name === s.name)?.url ?? '',
      registered: true,
      health: s.health,
      checkedAt: a.issuedAt,
    })),
    resources: a.body.resources,
    createdAt: a.body.createdAt,
    updatedAt: a.issuedAt,
  }
}

import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import {
  checkpointDropSchema, checkpointKeepSchema, checkpointTakeSchema, instanceIdOfPlace, XenosError,
  type CheckpointDrop, type CheckpointKeep, type CheckpointOffer, type CheckpointTake, type DeploymentGrant,
} from '../../core/index.ts'
import type { Workload } from '../../deploy/index.ts'
import { adoptOverlay, HeldBlobs, type BlobStore, type TemplateFetcher } from '../../images/index.ts'
import type { Overlay } from '../../overlay/index.ts'
import type { Store } from '../../store/index.ts'
import type { BlobTickets } from '../blob-tickets.ts'
import type { TemplateCatalog } from '../catalog.ts'
import type { Snapshots } from '../instances/index.ts'
import { checkActingFor, isEarlierMaking, signedWorkload, type Places } from './places.ts'

export interface CheckpointsInit {
  overlay: Pick<Overlay, 'peerId' | 'rpc' | 'learnHost'>
  places: Pick<Places, 'authorised'>
  snapshots: Pick<Snapshots, 'take' | 'remove' | 'keep' | 'dir'>
  store: Pick<Store, 'snapshots'>
  blobs: Pick<BlobStore, 'adopt' | 'path'>
  tickets: Pick<BlobTickets, 'issue'>
  fetcher: Pick<TemplateFetcher, 'fetchBlob' | 'ensure'>
  catalog: Pick<TemplateCatalog, 'resolve'>
  log: Logger
}

/** How long a checkpoint's host keeps what it offered for its keeper to fetch. */
const OFFER_MS = 10 * 60_000
/** A VM's saved memory is its RAM and the state of its devices. */
const STATE_OVERHEAD_BYTES = 64 * 2 ** 20

/**
 * This host's side of the checkpoints of deployments (a component's `checkpoint`): as the host
 * of an instance, it snapshots it at a supervisor's word (the VM runs on) and offers the snapshot
 * to the keeper the supervisor named, as two blobs with a ticket each; as a keeper, it fetches
 * them from that host alone, verified chunk by chunk, and keeps them as a snapshot of the
 * deployment's owner, from which a replacement of the instance resumes. Each step only for a
 * supervisor the owner's grant names, only for a component whose description asks for checkpoints.
 */
export class Checkpoints {
  readonly #init: CheckpointsInit
  /** What this host offers of each instance's latest checkpoint, until when. */
  readonly #offers = new Map<string, { at: number, blobs: string[], until: number }>()
  /** Blobs of checkpoints being kept here now. */
  readonly #receiving = new HeldBlobs()

  constructor (init: CheckpointsInit) {
    this.#init = init
  }

  get #self (): string {
    return this.#init.overlay.peerId
  }

  serve (): void {
    const { rpc } = this.#init.overlay
    rpc.handle('checkpoint.take', checkpointTakeSchema, async (req, from) => {
      if (from.toString() !== req.request.by) throw new XenosError('FORBIDDEN', `host ${from.toString()} asks for a checkpoint in the name of host ${req.request.by}`)
      return await this.take(req)
    })
    rpc.handle('checkpoint.keep', checkpointKeepSchema, async (req, from) => await this.keep(req, from.toString()))
    rpc.handle('checkpoint.drop', checkpointDropSchema, async (req, from) => {
      await this.drop(req, from.toString())
      return null
    })
  }

  /** Blobs garbage collection keeps: those offered to keepers, and those being kept. */
  held (now = Date.now()): string[] {
    for (const [id, offer] of this.#offers) if (offer.until < now) this.#offers.delete(id)
    return [...[...this.#offers.values()].flatMap(o => o.blobs), ...this.#receiving.list()]
  }

  /** Snapshots an instance placed here, at its supervisor's word, and offers the snapshot to `req.keeper`. */
  async take (req: CheckpointTake): Promise<CheckpointOffer> {
    const { request, keeper } = req
    if (request.action !== 'checkpoint') throw new XenosError('INVALID_ARGUMENT', `a checkpoint is asked for with the checkpoint action, not ${request.action}`)
    if (keeper === this.#self) throw new XenosError('INVALID_ARGUMENT', 'a checkpoint is kept on another host than its instance\'s')
    const root = await this.#init.places.authorised(request)
    this.#workload(req.text, root.grant, root.component)
    const snap = await this.#init.snapshots.take(request.id)
    try {
      const offered = async (file: string): Promise<CheckpointOffer['state']> => {
        const path = join(this.#init.snapshots.dir(snap.id), file)
        const { size } = await stat(path)
        // Offered from the moment it is stored: garbage collection never sees it unheld.
        const { id } = await this.#init.blobs.adopt(path, undefined, blob => { this.#offer(request.id, snap.createdAt, blob) })
        return { blob: id, size, ticket: this.#init.tickets.issue(keeper, id) }
      }
      return { template: snap.templateId, at: snap.createdAt, state: await offered('state'), disk: await offered('disk.qcow2') }
    } finally {
      // Its files are blobs now, offered for a while: the keeper keeps the snapshot, not this host.
      await this.#init.snapshots.remove(snap.id)
    }
  }

  /** The latest offer of instance `id` (taken at `at`) holds `blob`; an older offer goes. */
  #offer (id: string, at: number, blob: string): void {
    const known = this.#offers.get(id)
    const blobs = known?.at === at ? [...known.blobs, blob] : [blob]
    this.#offers.set(id, { at, blobs, until: Date.now() + OFFER_MS })
  }

  /** Fetches the checkpoint host `req.from` offers and keeps it as snapshot `req.snapshot` (in place of `req.replaces`), at the word of supervisor `from`. */
  async keep (req: CheckpointKeep, from: string): Promise<{ snapshot: string, at: number }> {
    const { grant, offer } = req
    checkActingFor(grant, from)
    const workload = this.#workload(req.text, grant, req.component)
    if (req.from === this.#self) throw new XenosError('INVALID_ARGUMENT', 'a checkpoint is kept on another host than its instance\'s')
    const instance = instanceIdOfPlace(req)
    const known = this.#init.store.snapshots.get(req.snapshot)
    if (known !== undefined) {
      if (known.owner !== grant.owner || known.instanceId !== instance) throw new XenosError('FORBIDDEN', `snapshot ${req.snapshot} is another's`)
      return { snapshot: known.id, at: known.createdAt }
    }
    const named = await this.#init.catalog.resolve(workload.template)
    if (named.id !== offer.template) throw new XenosError('FORBIDDEN', `component ${req.component} runs ${workload.template} (${named.id}), not ${offer.template}`)
    const { template } = await this.#init.fetcher.ensure(named.id)
    const { image } = template.manifest
    if (image === undefined) throw new XenosError('INVALID_STATE', `template ${named.id} is not a VM's: it has no checkpoints`)
    const memory = workload.resources?.memory ?? template.manifest.resources.memory
    const fetch = async (file: CheckpointOffer['state'], maxBytes: number): Promise<string> => {
      await this.#init.fetcher.fetchBlob(`checkpoint of ${instance}`, file.blob, maxBytes, async () => [req.from], { owner: grant.owner, ticketFor: peer => peer === req.from ? file.ticket : undefined })
      return this.#init.blobs.path(file.blob)
    }
    // The swarm fetches from the host that offers it alone: this host may not be connected to it yet.
    if (!await this.#init.overlay.learnHost(req.from)) throw new XenosError('HOST_NOT_FOUND', `host ${req.from}, which offers the checkpoint, is not advertised on the overlay`)
    await this.#receiving.during([offer.state.blob, offer.disk.blob], async () => {
      const files = { state: await fetch(offer.state, memory * 2 ** 20 + STATE_OVERHEAD_BYTES), disk: await fetch(offer.disk, 2 * image.diskBytes) }
      await this.#init.snapshots.keep(
        { id: req.snapshot, instanceId: instance, templateId: named.id, owner: grant.owner, createdAt: offer.at },
        files,
        async disk => { await adoptOverlay(disk, this.#init.blobs.path(image.disk), image.diskFormat) },
      )
    })
    if (req.replaces !== undefined) await this.#dropIfOf(req.replaces, { ...req, generation: req.generation + 1 })
    this.#init.log.info({ deployment: grant.name, component: req.component, instance, snapshot: req.snapshot, from: req.from }, 'kept a checkpoint')
    return { snapshot: req.snapshot, at: offer.at }
  }

  /** Drops a checkpoint kept here, at the word of supervisor `from`. */
  async drop (req: CheckpointDrop, from: string): Promise<void> {
    checkActingFor(req.grant, from)
    await this.#dropIfOf(req.snapshot, { ...req, generation: req.generation + 1 })
  }

  /** Drops snapshot `id` if it is a checkpoint of a making of the instance at `place` before its `generation`-th. */
  async #dropIfOf (id: string, place: Omit<CheckpointDrop, 'snapshot'>): Promise<void> {
    const snapshot = this.#init.store.snapshots.get(id)
    if (snapshot === undefined) return
    if (snapshot.owner !== place.grant.owner || !isEarlierMaking(snapshot.instanceId, place)) throw new XenosError('FORBIDDEN', `snapshot ${id} is not a checkpoint of component ${place.component} of deployment ${place.grant.name}`)
    await this.#init.snapshots.remove(id)
  }

  /** The workload at `component` of the description `text` its owner signed in `grant`, which must ask for checkpoints. */
  #workload (text: string, grant: DeploymentGrant, component: string): Workload {
    const workload = signedWorkload(text, grant, component)
    if (workload?.checkpointMs === undefined) throw new XenosError('FORBIDDEN', `component ${component} of deployment ${grant.name} takes no checkpoints`)
    return workload
  }
}

import type { Logger } from 'pino'
import { z } from 'zod'
import {
  checkpointSchema, COMPONENT_EVENTS_KEPT, COMPONENT_STATES, DEPLOYMENT_STATES, deploymentGrantSchema, deploymentGrantValid, instanceIdOfPlace, instanceIdSchema, MAX_DESCRIPTION_TEXT, MAX_STAGED_FILES, peerIdSchema, sha256Hex, terminationSchema, XenosError,
} from '../../core/index.ts'
import type { Overlay } from '../../overlay/index.ts'
import type { DeploymentRecord, DeploymentTable, PlacedInstance, Store } from '../../store/index.ts'

export interface DeploymentCopiesInit {
  overlay: Pick<Overlay, 'peerId' | 'rpc' | 'learnHost'>
  store: Pick<Store, 'deployments'>
  /** Ends an instance a supervisor that lost its place had made meanwhile (its winner knows nothing of it). */
  release: (record: DeploymentRecord, path: string, i: PlacedInstance) => Promise<void>
  log: Logger
}

const placedSchema = z.strictObject({ index: z.number().int().min(0).max(99), generation: z.number().int().min(0), id: instanceIdSchema, host: peerIdSchema, grant: z.string().max(200).optional() })
const describedSchema = z.strictObject({ text: z.string().min(1).max(MAX_DESCRIPTION_TEXT), grant: deploymentGrantSchema })

/** What a supervisor tells the others its grant names: the deployment as it stands. */
export const deploymentCopySchema = z.strictObject({
  owner: z.string().max(64),
  name: z.string().min(1).max(63),
  text: z.string().min(1).max(MAX_DESCRIPTION_TEXT),
  grant: deploymentGrantSchema,
  earlier: z.array(describedSchema).max(64),
  state: z.enum(DEPLOYMENT_STATES),
  components: z.record(z.string().max(256), z.strictObject({
    state: z.enum(COMPONENT_STATES),
    instances: z.array(placedSchema).max(100),
    generation: z.number().int().min(0),
    restarts: z.number().int().min(0).optional(),
    replacedAt: z.array(z.number().int()).max(100).optional(),
    checkpoints: z.array(checkpointSchema).max(100).optional(),
    orphans: z.array(placedSchema).max(1000).optional(),
    outdated: z.boolean().optional(),
    retiring: z.array(placedSchema).max(100).optional(),
    termination: terminationSchema.optional(),
    outputs: z.array(z.string().max(1024)).max(MAX_STAGED_FILES).optional(),
    event: z.string().max(4096).nullable(),
    events: z.array(z.strictObject({ at: z.number().int(), event: z.string().max(4096) })).max(COMPONENT_EVENTS_KEPT).optional(),
    updatedAt: z.number().int(),
  })).refine(c => Object.keys(c).length <= 256),
  error: z.string().max(4096).nullable(),
  acting: peerIdSchema,
  term: z.number().int().min(0),
  createdAt: z.number().int(),
  updatedAt: z.number().int(),
})

/** How often the acting supervisor sends a deployment to the others even when nothing happens. */
const RESEND_EVERY_MS = 30_000

type Table = Pick<DeploymentTable, 'insert' | 'update' | 'put' | 'get' | 'list' | 'remove'>

/**
 * A deployment is held by every supervisor its grant names: the one that acts writes each step
 * and sends the deployment as it stands to the others, which keep it, ready to take over. Of two
 * copies the one of the later term (counting takeovers) stands; a supervisor whose copy lost ends
 * what it made that the winner's does not know.
 */
export class DeploymentCopies {
  readonly #init: DeploymentCopiesInit
  /** The table the supervisor writes to: each write it makes as the acting supervisor goes to the others. */
  readonly table: Table
  /** When each deployment was last sent to the other supervisors. */
  readonly #sentAt = new Map<string, number>()

  constructor (init: DeploymentCopiesInit) {
    this.#init = init
    const store = init.store.deployments
    const sent = (d: DeploymentRecord | undefined): DeploymentRecord | undefined => {
      if (d !== undefined && d.acting === this.#self) this.#send(d)
      return d
    }
    this.table = {
      insert: d => { store.insert(d); sent(d) },
      put: d => { store.put(d); sent(d) },
      update: (owner, name, change, now) => sent(store.update(owner, name, change, now)),
      get: (owner, name) => store.get(owner, name),
      list: owner => store.list(owner),
      remove: (owner, name) => { store.remove(owner, name) },
    }
  }

  get #self (): string {
    return this.#init.overlay.peerId
  }

  /** Registers the RPC methods through which supervisors of one deployment keep each other's copies. */
  serve (): void {
    const { rpc } = this.#init.overlay
    rpc.handle('deployment.copy', deploymentCopySchema, async (copy, from) => ({ taken: await this.receive(copy, from.toString()) }))
  }

  /**
   * Takes `copy` from supervisor `from` if it is the later one: a later term, or the same term
   * from the supervisor that acts in it. Returns whether it was taken.
   */
  async receive (copy: DeploymentRecord, from: string): Promise<boolean> {
    const { grant } = copy
    for (const d of [copy, ...copy.earlier]) {
      if (!deploymentGrantValid(d.grant) || d.grant.owner !== copy.owner || d.grant.name !== copy.name) throw new XenosError('UNAUTHENTICATED', `deployment ${copy.name} is not signed by the owner it names`)
      if (sha256Hex(d.text) !== d.grant.description) throw new XenosError('UNAUTHENTICATED', `deployment ${copy.name} comes with another text than its owner signed`)
    }
    if (!grant.supervisors.includes(from) || !grant.supervisors.includes(this.#self) || !grant.supervisors.includes(copy.acting)) throw new XenosError('FORBIDDEN', `deployment ${copy.name} does not name hosts ${from} and ${this.#self} as its supervisors`)
    for (const [path, c] of Object.entries(copy.components)) {
      const derived = (i: PlacedInstance): boolean => {
        const under = i.grant === undefined ? copy : copy.earlier.find(e => e.grant.sig === i.grant)
        return under !== undefined && instanceIdOfPlace({ grant: under.grant, component: path, index: i.index, generation: i.generation }) === i.id
      }
      if (![...c.instances, ...c.retiring ?? []].every(derived)) throw new XenosError('PEER_PROTOCOL', `deployment ${copy.name} names an instance of ${path} its places do not derive`)
    }
    const current = this.#init.store.deployments.get(copy.owner, copy.name)
    if (current !== undefined && current.grant.sig === grant.sig) {
      const later = copy.term > current.term || (copy.term === current.term && copy.acting === from && current.acting !== this.#self && copy.updatedAt >= current.updatedAt)
      if (!later) return false
      if (current.acting === this.#self && copy.acting !== this.#self) await this.#stepDown(current, copy)
    } else if (current !== undefined && current.state !== 'terminated' && (current.grant.issuedAt > grant.issuedAt || current.earlier.some(e => e.grant.sig === grant.sig))) {
      // A copy from before an update this host knows of.
      return false
    }
    this.#init.store.deployments.put(copy)
    return true
  }

  /** This host acted, and another's later copy stands: what only this host made goes, so that no two copies of a component live on. */
  async #stepDown (mine: DeploymentRecord, winner: DeploymentRecord): Promise<void> {
    const kept = new Set(Object.values(winner.components).flatMap(c => [...c.instances, ...c.retiring ?? []].map(i => i.id)))
    for (const [path, c] of Object.entries(mine.components)) {
      for (const i of [...c.instances, ...c.retiring ?? []]) if (!kept.has(i.id)) await this.#init.release(mine, path, i)
    }
    this.#init.log.warn({ deployment: mine.name, acting: winner.acting, term: winner.term }, 'another supervisor acts for a deployment this host acted for: it steps down')
  }

  /** Sends deployment `d` again when it was last sent a while ago: a copy lost in flight, or a supervisor that was away, is made good. */
  keepFresh (d: DeploymentRecord, now = Date.now()): void {
    if (now - (this.#sentAt.get(`${d.owner}/${d.name}`) ?? 0) >= RESEND_EVERY_MS) this.#send(d)
  }

  #send (d: DeploymentRecord): void {
    this.#sentAt.set(`${d.owner}/${d.name}`, Date.now())
    for (const host of d.grant.supervisors.filter(h => h !== this.#self)) {
      void this.#init.overlay.learnHost(host)
        .then(async () => await this.#init.overlay.rpc.call(host, 'deployment.copy', d))
        .catch((err: unknown) => { this.#init.log.debug({ err, host, deployment: d.name }, 'could not send a copy of a deployment to another supervisor') })
    }
  }
}

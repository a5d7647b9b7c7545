import type { Logger } from 'pino'
import { z } from 'zod'
import { applyRequestSchema, deploymentViewSchema, requestAuthSchema, supervisionSchema, XenosError, type ApplyRequest, type DeploymentView, type RequestAuth, type Supervision } from '../../core/index.ts'
import type { Overlay } from '../../overlay/index.ts'
import type { DeploymentTable } from '../../store/index.ts'
import type { RequestVerifier } from '../replay.ts'
import { callHost } from '../remote.ts'

export interface DeploymentDirectoryInit {
  overlay: Pick<Overlay, 'peerId' | 'rpc' | 'provide' | 'findProviders' | 'learnHost'>
  store: { deployments: Pick<DeploymentTable, 'get'> }
  verifier: RequestVerifier
  /** This host's own answers, for requests signed for it. */
  here: {
    apply: (req: ApplyRequest, onChange?: (v: DeploymentView) => void) => Promise<DeploymentView>
    show: (owner: string, name: string) => DeploymentView
    terminate: (owner: string, name: string, onChange?: (v: DeploymentView) => void) => Promise<DeploymentView>
  }
  log: Logger
}

const whereSchema = z.strictObject({ owner: z.string().min(1).max(64), name: z.string().min(1).max(63) })
const signedSchema = z.strictObject({ name: z.string().min(1).max(63), auth: requestAuthSchema })
/** How long a search for the hosts holding a deployment waits on the DHT. */
const FIND_SUPERVISORS_MS = 5000
/** A terminate ends every instance, one host after another; an apply places them, and an update makes them anew one by one. */
const TERMINATE_TIMEOUT_MS = 10 * 60_000
const APPLY_TIMEOUT_MS = 30 * 60_000

/** The DHT key under which the supervisors of a deployment announce that they hold it (hashed into a CID: the names are not in it). */
function holdingKey (owner: string, name: string): string {
  return `xenos-deployment:${owner}/${name}`
}

/**
 * Deployments seen from any host: its supervisors announce on the DHT that they hold it, so
 * that any host finds where it is supervised; a request the owner signed for the supervising
 * host is relayed to it there, which checks the signature itself (this host only relays).
 */
export class DeploymentDirectory {
  readonly #init: DeploymentDirectoryInit
  readonly #announced = new Set<string>()

  constructor (init: DeploymentDirectoryInit) {
    this.#init = init
  }

  get #self (): string {
    return this.#init.overlay.peerId
  }

  serve (): void {
    const { rpc } = this.#init.overlay
    rpc.handle('deployment.where', whereSchema, async req => this.#held(req.owner, req.name))
    rpc.handle('deployment.show', signedSchema, async req => this.#init.here.show(this.#signer(req.auth, 'deployment.get', req.name), req.name))
    rpc.handle('deployment.apply', applyRequestSchema, async req => await this.#init.here.apply(req))
    rpc.handle('deployment.terminate', signedSchema, async req => await this.#init.here.terminate(this.#signer(req.auth, 'deployment.terminate', req.name), req.name))
  }

  /** Announces that this host holds deployment `name` of `owner` (once: the overlay provides it again as it must). */
  async announce (owner: string, name: string): Promise<void> {
    const key = holdingKey(owner, name)
    if (this.#announced.has(key)) return
    this.#announced.add(key)
    await this.#init.overlay.provide(key).catch((err: unknown) => {
      this.#announced.delete(key)
      this.#init.log.debug({ err, deployment: name }, 'could not announce a deployment held here')
    })
  }

  /**
   * Where deployment `name` of `owner` is supervised: from this host's copy, or from a host that
   * announces one; a copy of one that was terminated only when no host holds it running (it
   * may have been applied anew elsewhere since).
   */
  async where (owner: string, name: string): Promise<Supervision> {
    const held = this.#init.store.deployments.get(owner, name)
    if (held !== undefined && held.state !== 'terminated') return this.#held(owner, name)
    const holders = (await this.#init.overlay.findProviders(holdingKey(owner, name), FIND_SUPERVISORS_MS)).filter(h => h !== this.#self)
    let ended: Supervision | undefined = held === undefined ? undefined : this.#held(owner, name)
    for (const host of holders) {
      try {
        const found = supervisionSchema.parse(await callHost(this.#init.overlay, host, 'deployment.where', { owner, name }))
        if (found.state !== 'terminated') return found
        ended ??= found
      } catch (err) {
        this.#init.log.debug({ err, host, deployment: name }, 'a host announcing a deployment could not say where it is')
      }
    }
    if (ended !== undefined) return ended
    throw new XenosError('DEPLOYMENT_NOT_FOUND', `no host holds a deployment ${name} of ${owner}: check the name with "xenos deployment list" on the host you applied it on`)
  }

  /** Deployment `name`, as the owner's request `auth` signed for its supervisor asks: answered here, or relayed to that host. */
  async show (name: string, auth: RequestAuth): Promise<DeploymentView> {
    if (auth.host === this.#self) return this.#init.here.show(this.#signer(auth, 'deployment.get', name), name)
    return deploymentViewSchema.parse(await callHost(this.#init.overlay, auth.host, 'deployment.show', { name, auth }))
  }

  /**
   * Runs the description `req` carries: here, unless another of its supervisors holds the
   * deployment and acts for it now (an update applied on a standby, or on a host that holds no
   * copy), where it is relayed, which checks the owner's signature itself.
   */
  async apply (req: ApplyRequest, onChange?: (v: DeploymentView) => void): Promise<DeploymentView> {
    const { owner, name } = req.grant
    const held = this.#init.store.deployments.get(owner, name)
    const running = held !== undefined && held.state !== 'terminated'
    let acting = running ? held.acting : this.#self
    if (!running && !req.grant.supervisors.includes(this.#self)) acting = await this.where(owner, name).then(s => s.state === 'terminated' ? this.#self : s.acting, () => this.#self)
    if (acting === this.#self) return await this.#init.here.apply(req, onChange)
    return deploymentViewSchema.parse(await callHost(this.#init.overlay, acting, 'deployment.apply', req, APPLY_TIMEOUT_MS))
  }

  /** Terminates deployment `name` where the owner's request `auth` was signed for: here, or relayed to that host. */
  async terminate (name: string, auth: RequestAuth, onChange?: (v: DeploymentView) => void): Promise<DeploymentView> {
    if (auth.host === this.#self) return await this.#init.here.terminate(this.#signer(auth, 'deployment.terminate', name), name, onChange)
    return deploymentViewSchema.parse(await callHost(this.#init.overlay, auth.host, 'deployment.terminate', { name, auth }, TERMINATE_TIMEOUT_MS))
  }

  #held (owner: string, name: string): Supervision {
    const d = this.#init.store.deployments.get(owner, name)
    if (d === undefined) throw new XenosError('DEPLOYMENT_NOT_FOUND', `host ${this.#self} holds no deployment ${name} of ${owner}`)
    return { acting: d.acting, supervisors: d.grant.supervisors, state: d.state }
  }

  #signer (auth: RequestAuth, action: string, name: string): string {
    return this.#init.verifier.verify(auth, { action, target: name, params: {} })
  }
}

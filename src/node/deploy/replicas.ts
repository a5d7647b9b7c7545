import { z } from 'zod'
import {
  instanceIdSchema, replicaSchema, replicateAction, replicateRequestSchema, requestAuthSchema, XenosError,
  type MigrationStatus, type Replica, type ReplicateRequest, type RequestAuth,
} from '../../core/index.ts'
import type { Overlay } from '../../overlay/index.ts'
import type { InstanceSupervisor } from '../instances/index.ts'
import type { Migrations } from '../migration/index.ts'
import { callHost } from '../remote.ts'
import type { RequestVerifier } from '../replay.ts'
import type { Deployer } from './deployer.ts'

export interface ReplicasInit {
  overlay: Pick<Overlay, 'peerId' | 'rpc' | 'learnHost'>
  verifier: RequestVerifier
  supervisor: Pick<InstanceSupervisor, 'view' | 'snapshots'>
  deployer: Pick<Deployer, 'deploy'>
  migrations: Pick<Migrations, 'migrate'>
}

const replicateCallSchema = z.strictObject({ id: instanceIdSchema, request: replicateRequestSchema, auth: requestAuthSchema })
/** A booted replica waits until healthy; one from a snapshot may then move. */
const REPLICATE_TIMEOUT_MS = 45 * 60_000

/**
 * Another instance of a service on another host, carried out by the host that runs the
 * instance: booted from the same template with the same name, or from a snapshot of the
 * instance taken now (memory and disk), started beside it and then moved, disk and all, so that
 * the replica depends on nothing of the original's host.
 */
export class Replicas {
  readonly #init: ReplicasInit

  constructor (init: ReplicasInit) {
    this.#init = init
  }

  get #self (): string {
    return this.#init.overlay.peerId
  }

  serve (): void {
    this.#init.overlay.rpc.handle('instance.replicate', replicateCallSchema, async req => await this.#replicateHere(req.id, req.request, req.auth))
  }

  /** Replicates instance `id` as `request` says, signed by its owner for the host that runs it; `onMove` sees the replica's move when it runs here. */
  async replicate (id: string, request: ReplicateRequest, auth: RequestAuth, onMove: (s: MigrationStatus) => void = () => {}): Promise<Replica> {
    if (auth.host === this.#self) return await this.#replicateHere(id, request, auth, onMove)
    return replicaSchema.parse(await callHost(this.#init.overlay, auth.host, 'instance.replicate', { id, request, auth }, REPLICATE_TIMEOUT_MS))
  }

  async #replicateHere (id: string, request: ReplicateRequest, auth: RequestAuth, onMove: (s: MigrationStatus) => void = () => {}): Promise<Replica> {
    const { to, snapshot, part, move } = request
    const { action, target, params } = replicateAction(id, this.#self, to, snapshot)
    this.#init.verifier.verify(auth, { action, target, params })
    const v = this.#init.supervisor.view(id)
    if (v.owner !== auth.owner) throw new XenosError('FORBIDDEN', `instance ${id} belongs to another owner; only its owner may replicate it`)
    // A relay cannot swap in a token of its own: the replica (a copy of the memory, perhaps) would be the token's signer's.
    if (part.token.owner !== auth.owner) throw new XenosError('FORBIDDEN', `the replica's deploy token is signed by another key than the replicate request: sign both with the same key`)
    const startOn = snapshot === undefined ? to : this.#self
    if (part.token.host !== startOn) throw new XenosError('INVALID_ARGUMENT', `the replica's deploy token is for host ${part.token.host}; it starts on ${startOn}`)
    const moves = snapshot !== undefined && to !== this.#self
    if (moves !== (move !== undefined)) throw new XenosError('INVALID_ARGUMENT', moves ? `a replica from a snapshot starts on ${this.#self} and needs its owner's signed move to ${to}` : 'a move is signed only for a replica that starts from a snapshot on another host')
    if (snapshot !== undefined) await this.#init.supervisor.snapshots.take(id, snapshot)
    // A booted replica is ready once healthy; a copy runs at once, and its signed move is not to grow old.
    const made = await this.#init.deployer.deploy(v.template, { name: v.name, ...snapshot === undefined ? {} : { snapshot } }, [part], { wait: snapshot === undefined })
    const replica = made.instances[0]
    if (replica === undefined) {
      const failure = made.failures[0]
      throw new XenosError((failure?.code ?? 'INTERNAL') as XenosError['code'], failure?.message ?? 'the deploy made no replica')
    }
    if (move === undefined) return { replica, migration: null }
    return { replica, migration: await this.#init.migrations.migrate(replica.id, to, true, move, onMove) }
  }
}

import {
  drainAction, handoffBytes, MAX_DRAIN_LINKS, XenosError,
  type DrainLink, type DrainResult, type DrainStatus, type Placement, type RequestAuth,
} from '../../core/index.ts'
import type { Overlay } from '../../overlay/index.ts'
import type { InstanceSupervisor } from '../instances/index.ts'
import type { RequestVerifier } from '../replay.ts'
import type { Migrations } from './protocol.ts'

export interface DrainingInit {
  overlay: Pick<Overlay, 'peerId' | 'search' | 'sign'>
  supervisor: Pick<InstanceSupervisor, 'admission' | 'list' | 'remoteDiskOf'>
  migrations: Pick<Migrations, 'move' | 'placementOf'>
  verifier: RequestVerifier
  /** Told when the host starts or stops being drained (its room changed). */
  onDraining: () => void
}

/** An operator empties their host before it goes: every instance moves live to another, and none is admitted meanwhile. */
export class Draining {
  readonly #init: DrainingInit

  constructor (init: DrainingInit) {
    this.#init = init
  }

  get #self (): string {
    return this.#init.overlay.peerId
  }

  /**
   * Moves every running instance on this host to other hosts (`targets`, or those with most
   * room), one at a time, disks and all, and admits no new ones meanwhile: an operator's action
   * on its own host (`auth`, the operator's signed drain), after which the host can go. Each move
   * is signed by this host under that drain, so the destination can show why the instance runs
   * there. (An instance whose disk another host serves goes back to that host if it has room,
   * else on to another, its disk staying where it is.) Instances that cannot move stay, with the reason.
   */
  async drain (targets: string[] | null, auth: RequestAuth, onStatus: (s: DrainStatus) => void = () => {}): Promise<DrainResult> {
    const { supervisor, migrations } = this.#init
    const { action, target, params } = drainAction(this.#self, targets)
    const operator = this.#init.verifier.operator(auth, { action, target, params })
    supervisor.admission.setDraining(true)
    this.#init.onDraining()
    const result: DrainResult = { moved: [], stayed: [] }
    const views = supervisor.list()
    const room = new Map(this.#init.overlay.search({ kind: 'host' }).flatMap(a =>
      a.kind === 'host' && a.withdrawn !== true && a.host !== this.#self && (targets === null || targets.includes(a.host)) ? [[a.host, { ...a.body.free }] as const] : []))
    for (const [index, v] of views.entries()) {
      if (v.state !== 'running') {
        result.stayed.push({ id: v.id, reason: `it is ${v.state}: only running instances move live; start it and drain again, or destroy it` })
        continue
      }
      const served = supervisor.remoteDiskOf(v.id)
      const to = [...room]
        .filter(([, free]) => free.cpu + 1e-9 >= v.resources.cpu && free.memory >= v.resources.memory)
        .sort(([x, xFree], [y, yFree]) => Number(y === served?.host) - Number(x === served?.host) || yFree.memory - xFree.memory)[0]?.[0]
      if (to === undefined) {
        result.stayed.push({ id: v.id, reason: `no ${targets === null ? 'other advertised' : 'named'} host has ${v.resources.cpu} CPU and ${v.resources.memory} MiB free` })
        continue
      }
      try {
        const placement = await this.#drained(v.id, to, operator, auth, targets)
        result.moved.push(await migrations.move(v, to, served === null, placement, migration => { onStatus({ instance: v.id, to, index, total: views.length, migration }) }))
        const free = room.get(to)
        if (free !== undefined) room.set(to, { cpu: free.cpu - v.resources.cpu, memory: free.memory - v.resources.memory })
      } catch (err) {
        result.stayed.push({ id: v.id, reason: (err as Error).message })
      }
    }
    return result
  }

  /** Lets the host take instances again after a drain (signed by its operator). */
  undrain (auth: RequestAuth): void {
    this.#init.verifier.operator(auth, { action: 'undrain', target: this.#self, params: {} })
    this.#init.supervisor.admission.setDraining(false)
    this.#init.onDraining()
  }

  /** The placement of instance `id` on `to` after this host moved it there under its operator's drain. */
  async #drained (id: string, to: string, operator: string, drain: RequestAuth, targets: string[] | null): Promise<Placement> {
    const current = this.#init.migrations.placementOf(id)
    if (current.drains.length >= MAX_DRAIN_LINKS) {
      throw new XenosError('INVALID_STATE', `instance ${id} was moved by ${current.drains.length} drains since its owner last placed it: only its owner may move it now ("xenos migrate")`)
    }
    const unsigned = { from: this.#self, to, operator, drain, targets, at: Date.now() }
    const link: DrainLink = { ...unsigned, sig: await this.#init.overlay.sign(handoffBytes(id, unsigned)) }
    return { ...current, drains: [...current.drains, link] }
  }
}

import { ACTIVE_STATES, XenosError, type Resources } from '../../core/index.ts'
import type { Store } from '../../store/index.ts'

const DRAINING_SETTING = 'draining'

export interface AdmissionInit {
  store: Pick<Store, 'instances' | 'settings'>
  capacity: Resources
  hostId: string
}

/**
 * What this host may still take: its capacity less what instances that are creating, running or
 * paused hold, and nothing while it is drained (kept in the store: a drained host that restarts
 * stays drained). Callers hold the supervisor's admission lock between `check` and writing the
 * records it admitted.
 */
export class Admission {
  readonly #init: AdmissionInit
  #draining: boolean

  constructor (init: AdmissionInit) {
    this.#init = init
    this.#draining = init.store.settings.get(DRAINING_SETTING) === '1'
  }

  /** Resources held by instances that are creating, running or paused. */
  used (): Resources {
    const used = { cpu: 0, memory: 0 }
    for (const r of this.#init.store.instances.list()) {
      if (!ACTIVE_STATES.has(r.state)) continue
      used.cpu += r.resources.cpu
      used.memory += r.resources.memory
    }
    return used
  }

  free (): Resources {
    if (this.#draining) return { cpu: 0, memory: 0 }
    const used = this.used()
    const { capacity } = this.#init
    return { cpu: round(capacity.cpu - used.cpu), memory: capacity.memory - used.memory }
  }

  /** While a host is drained it admits no instance and offers no room, across restarts, until undrained. */
  setDraining (on: boolean): void {
    this.#init.store.settings.set(DRAINING_SETTING, on ? '1' : '0')
    this.#draining = on
  }

  get draining (): boolean {
    return this.#draining
  }

  /** Throws ADMISSION_REFUSED unless `count` instances of `name`, each wanting `want`, fit in what is free. */
  check (want: Resources, count: number, name: string): void {
    const host = this.#init.hostId
    if (this.#draining) throw new XenosError('ADMISSION_REFUSED', `host ${host} is being drained and takes no instances: deploy elsewhere`)
    const free = this.free()
    if (want.cpu * count > free.cpu + 1e-9 || want.memory * count > free.memory) {
      throw new XenosError('ADMISSION_REFUSED',
        `host ${host} has ${free.cpu} CPU and ${free.memory} MiB free; ${count} × ${name} needs ${round(want.cpu * count)} CPU and ${want.memory * count} MiB. Deploy elsewhere or stop instances here.`)
    }
  }
}

function round (n: number): number {
  return Math.round(n * 1000) / 1000
}

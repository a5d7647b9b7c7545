import type { Overlay } from '../../overlay/index.ts'
import type { PlacedInstance } from '../../store/index.ts'
import type { InstanceSupervisor } from '../instances/index.ts'

export interface LivenessInit {
  overlay: Pick<Overlay, 'peerId' | 'search' | 'cache'>
  supervisor: Pick<InstanceSupervisor, 'has' | 'view'>
}

/**
 * Whether the instances of a deployment are alive, as their hosts tell everyone (SmartFrog's
 * liveness, from adverts): an instance lives while its host's advert does, its own advert says
 * it runs, and none of its health checks fails. A host that dies stops refreshing its adverts:
 * they expire everywhere within their lifetime, and so do its instances. Counts the checks in a
 * row each instance failed.
 */
export class Liveness {
  readonly #init: LivenessInit
  readonly #misses = new Map<string, number>()
  readonly #checkedAt = new Map<string, number>()
  /** When each instance's host last answered that it is healthy (a place): its adverts from before say less. */
  readonly #healthyAt = new Map<string, number>()

  constructor (init: LivenessInit) {
    this.#init = init
  }

  /** Whether `key` (a component) is due for a check, every `everyMs`; if it is, the check counts as made now. */
  due (key: string, everyMs: number, now = Date.now()): boolean {
    if (now - (this.#checkedAt.get(key) ?? 0) < everyMs) return false
    this.#checkedAt.set(key, now)
    return true
  }

  /** Whether host `host` is heard of: this one, or one whose advert is alive. */
  hostAlive (host: string): boolean {
    return host === this.#init.overlay.peerId || this.#init.overlay.search({ kind: 'host' }).some(a => a.host === host && a.withdrawn !== true)
  }

  /** Instance `id`'s host has just answered that it is healthy. */
  healthy (id: string, at = Date.now()): void {
    this.#healthyAt.set(id, at)
  }

  /** Whether instance `i` is alive now, and if not, why (`health`: it runs, and a health check fails). */
  check (i: PlacedInstance): Seen {
    if (i.host === this.#init.overlay.peerId) {
      return this.#init.supervisor.has(i.id) ? judged(this.#init.supervisor.view(i.id)) : { alive: false, why: 'it is gone' }
    }
    if (!this.hostAlive(i.host)) return { alive: false, why: `its host ${i.host.slice(-8)} is gone (its adverts expired)` }
    const advert = this.#init.overlay.cache.get('instance', i.id)
    if (advert?.kind !== 'instance') return { alive: false, why: 'its host no longer advertises it' }
    // An advert from before its host answered that it is healthy (one still booting) is old news.
    return advert.issuedAt < (this.#healthyAt.get(i.id) ?? 0) ? { alive: true } : judged(advert.body)
  }

  /** Counts one check of instance `id`: returns how many in a row it failed. */
  observe (id: string, alive: boolean): number {
    const misses = alive ? 0 : (this.#misses.get(id) ?? 0) + 1
    this.#misses.set(id, misses)
    return misses
  }

  forget (id: string): void {
    this.#misses.delete(id)
    this.#healthyAt.delete(id)
  }
}

export type Seen = { alive: true } | { alive: false, why: string, health?: true }

/** Alive is running with no failing health check, whether its host says so itself or in its advert. */
function judged (seen: { state: string, services: Array<{ health: string }> }): Seen {
  if (seen.state !== 'running') return { alive: false, why: `it is ${seen.state}` }
  return seen.services.some(s => s.health === 'failing') ? { alive: false, why: 'a health check fails', health: true } : { alive: true }
}

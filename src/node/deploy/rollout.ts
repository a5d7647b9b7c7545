import { setTimeout as sleep } from 'node:timers/promises'
import { XenosError, type HostRollout, type InstanceView } from '../../core/index.ts'

const POLL_MS = 500
/** Changes to a rollout are sent on at most this often. */
const REPORT_EVERY_MS = 200

/**
 * The parts of a deploy as they change, reported to a watcher (at most every REPORT_EVERY_MS,
 * so eight hosts fetching at once do not flood it).
 */
export class Rollout {
  readonly parts: HostRollout[]
  readonly #onChange: ((parts: HostRollout[]) => void) | undefined
  #timer: NodeJS.Timeout | undefined

  constructor (hosts: string[], onChange?: (parts: HostRollout[]) => void) {
    this.parts = hosts.map(host => ({ host, phase: 'waiting', fetching: null, instances: [], fetchMs: null, fetchedBytes: null, createMs: null, bootMs: null, healthyMs: null, error: null }))
    this.#onChange = onChange
    this.#report()
  }

  part (host: string): HostRollout {
    const part = this.parts.find(p => p.host === host)
    if (part === undefined) throw new Error(`host ${host} has no part in this rollout`)
    return part
  }

  update (host: string, patch: Partial<HostRollout>): void {
    Object.assign(this.part(host), patch)
    if (this.#onChange !== undefined && this.#timer === undefined) this.#timer = setTimeout(() => { this.#report() }, REPORT_EVERY_MS)
  }

  /** Stops reporting: the deploy's result says the rest. */
  close (): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
  }

  #report (): void {
    this.#timer = undefined
    this.#onChange?.(structuredClone(this.parts))
  }
}

/**
 * Follows freshly created instances until all have booted and passed their health checks, and
 * says how long each phase took: boot from the end of create, healthy from boot. Times come
 * from the instances' own host (its clock), so hosts' clocks need not agree. `onViews` sees
 * each round of views.
 */
export async function untilHealthy (
  instances: InstanceView[], createMs: number, get: (id: string) => Promise<InstanceView>, timeoutMs: number, onViews: (views: InstanceView[]) => void = () => {},
): Promise<{ bootMs: number, healthyMs: number }> {
  const deadline = Date.now() + timeoutMs
  let views = instances
  for (;;) {
    onViews(views)
    const failed = views.find(v => v.state !== 'running' && v.state !== 'creating')
    if (failed !== undefined) throw new XenosError('DRIVER_FAILED', `instance ${failed.id} is ${failed.state}${failed.error === undefined ? '' : `: ${failed.error}`}`)
    if (views.every(v => v.healthyAt !== undefined)) break
    if (Date.now() > deadline) {
      const pending = views.filter(v => v.healthyAt === undefined).map(v => v.id)
      throw new XenosError('TIMEOUT', `${pending.join(', ')} did not pass ${pending.length === 1 ? 'its' : 'their'} health checks within ${Math.round(timeoutMs / 1000)} s: see "xenos instance show" and "xenos instance logs"`)
    }
    await sleep(POLL_MS)
    // A view that cannot be had right now (a busy host, a lost RPC) is asked for again next time.
    views = await Promise.all(views.map(async v => await get(v.id).catch(() => v)))
  }
  const createdEnd = Math.max(...views.map(v => v.createdAt + createMs))
  const booted = Math.max(...views.map(v => v.bootedAt ?? v.healthyAt ?? 0))
  const healthy = Math.max(...views.map(v => v.healthyAt ?? 0))
  return { bootMs: Math.max(0, booted - createdEnd), healthyMs: Math.max(0, healthy - booted) }
}

/** Booting until every guest is up, then checking until every instance is healthy. */
export function bootPhase (views: InstanceView[]): 'booting' | 'checking' {
  return views.every(v => v.bootedAt !== undefined || v.healthyAt !== undefined) ? 'checking' : 'booting'
}

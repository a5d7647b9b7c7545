import { connect } from 'node:net'
import type { Driver, GuestService, ServiceHealth, ServiceStatus, TaskHandle } from '../../core/index.ts'
import type { InstanceRecord, Store } from '../../store/index.ts'

/** How often the host checks the services of its running instances. */
const HEALTH_INTERVAL_MS = 3000
/** Instances not yet healthy are checked this often, so a deploy learns soon when they are. */
const HEALTH_PENDING_INTERVAL_MS = 500
/** …for at most this long after they start. */
const HEALTH_PENDING_FOR_MS = 5 * 60_000
const CHECK_TIMEOUT_MS = 2000

/** A service to check: where it is reached from the host and how it wants to be checked. */
export interface CheckTarget {
  name: string
  protocol: string
  hostPort: number | undefined
  health: string
  /** Whether the guest itself registered it (VMs) or the template declared it (processes). */
  registered: boolean
}

/** Runs one health check: an HTTP GET of a path (2xx or 3xx passes) or a TCP connect. */
async function checkService (address: string, t: CheckTarget): Promise<ServiceHealth> {
  if (t.hostPort === undefined || !t.registered) return 'unknown'
  if (t.health === 'tcp') {
    return await new Promise(resolve => {
      const socket = connect({ host: address, port: t.hostPort ?? 0, timeout: CHECK_TIMEOUT_MS })
      socket.once('connect', () => { socket.destroy(); resolve('passing') })
      socket.once('timeout', () => { socket.destroy(); resolve('failing') })
      socket.once('error', () => { resolve('failing') })
    })
  }
  if (t.health.startsWith('/')) {
    try {
      const res = await fetch(`http://${address}:${t.hostPort}${t.health}`, { signal: AbortSignal.timeout(CHECK_TIMEOUT_MS), redirect: 'manual' })
      await res.body?.cancel()
      return res.status >= 200 && res.status < 400 ? 'passing' : 'failing'
    } catch {
      return 'failing'
    }
  }
  return 'unknown'
}

/** What to check for an instance: a VM's registrations when its guest reports them, else its template's ports. */
function checkTargets (declared: Array<{ name: string, protocol: string, hostPort: number, health?: string | undefined }>, guest: GuestService[] | undefined): CheckTarget[] {
  return declared.map(p => ({
    name: p.name,
    protocol: p.protocol,
    hostPort: p.hostPort,
    health: p.health ?? '',
    registered: guest === undefined || guest.some(g => g.name === p.name),
  }))
}

function statusOf (address: string, t: CheckTarget, health: ServiceHealth, checkedAt: number): ServiceStatus {
  return { name: t.name, url: `${t.protocol}://${address}:${t.hostPort ?? 0}`, registered: t.registered, health, checkedAt }
}

/** When a running instance booted and became healthy, and was last checked (this host's clock). */
export interface Milestones {
  since: number
  bootedAt?: number
  healthyAt?: number
  checkedAt: number
}

export interface HealthMonitorInit {
  store: Pick<Store, 'instances' | 'templates'>
  drivers: ReadonlyMap<string, Driver>
  /** Address services bind to and endpoints name. */
  address: string
  /** The tasks this host watches, by instance. */
  live: () => Iterable<[string, TaskHandle]>
  /** Called when an instance's services changed: it is to be advertised again. */
  onChange: (id: string, record: InstanceRecord) => void
}

/**
 * Checks the services of running instances every few seconds (those not yet healthy more
 * often, for a while), and remembers when each booted and first passed its checks.
 */
export class HealthMonitor {
  readonly #init: HealthMonitorInit
  readonly #statuses = new Map<string, ServiceStatus[]>()
  readonly #milestones = new Map<string, Milestones>()
  #timer: NodeJS.Timeout | undefined

  constructor (init: HealthMonitorInit) {
    this.#init = init
  }

  start (): void {
    this.#timer = setInterval(() => { void this.#check() }, HEALTH_PENDING_INTERVAL_MS)
  }

  stop (): void {
    clearInterval(this.#timer)
  }

  /** The instance no longer runs here (or not any more): what was learnt of it goes. */
  forget (id: string): void {
    this.#statuses.delete(id)
    this.#milestones.delete(id)
  }

  services (id: string): ServiceStatus[] {
    return this.#statuses.get(id) ?? []
  }

  milestones (id: string): Milestones | undefined {
    return this.#milestones.get(id)
  }

  async #check (): Promise<void> {
    for (const [id, handle] of this.#init.live()) {
      const r = this.#init.store.instances.get(id)
      if (r?.state !== 'running') continue
      const now = Date.now()
      const m = this.#milestones.get(id) ?? { since: now, checkedAt: 0 }
      this.#milestones.set(id, m)
      const settled = m.healthyAt !== undefined || now - m.since > HEALTH_PENDING_FOR_MS
      if (settled && now - m.checkedAt < HEALTH_INTERVAL_MS) continue
      m.checkedAt = now
      const driver = this.#init.drivers.get(r.driver)
      const guest = driver?.services?.(handle)
      // A process is up when it starts; a VM when its agent first reports.
      if (m.bootedAt === undefined && (driver?.services === undefined || guest !== undefined)) m.bootedAt = now
      const targets = checkTargets(this.#declaredPorts(r), guest)
      const address = this.#init.address
      const statuses = await Promise.all(targets.map(async t => statusOf(address, t, await checkService(address, t), now)))
      // Healthy: every service that declares a health check passes it.
      if (m.bootedAt !== undefined && m.healthyAt === undefined && statuses.every((s, i) => targets[i]?.health === '' || s.health === 'passing')) m.healthyAt = Date.now()
      const before = this.#statuses.get(id) ?? []
      this.#statuses.set(id, statuses)
      const summary = (list: ServiceStatus[]): string => list.map(s => `${s.name}:${s.registered}:${s.health}`).join(',')
      if (summary(before) !== summary(statuses)) this.#init.onChange(id, r)
    }
  }

  #declaredPorts (r: InstanceRecord): Array<{ name: string, protocol: string, hostPort: number, health?: string | undefined }> {
    const declared = this.#init.store.templates.get(r.templateId)?.manifest.ports ?? []
    return r.ports.map(p => ({ ...p, health: declared.find(d => d.name === p.name)?.health }))
  }
}

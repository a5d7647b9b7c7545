import { connect } from 'node:net'
import type { GuestService, ServiceHealth, ServiceStatus } from '../core/index.ts'

/** How often the host checks the services of its running instances. */
export const HEALTH_INTERVAL_MS = 3000
/** Instances not yet healthy are checked this often, so a deploy learns soon when they are. */
export const HEALTH_PENDING_INTERVAL_MS = 500
/** …for at most this long after they start. */
export const HEALTH_PENDING_FOR_MS = 5 * 60_000
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
export async function checkService (address: string, t: CheckTarget): Promise<ServiceHealth> {
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
export function checkTargets (declared: Array<{ name: string, protocol: string, hostPort: number, health?: string | undefined }>, guest: GuestService[] | undefined): CheckTarget[] {
  return declared.map(p => ({
    name: p.name,
    protocol: p.protocol,
    hostPort: p.hostPort,
    health: p.health ?? '',
    registered: guest === undefined || guest.some(g => g.name === p.name),
  }))
}

export function statusOf (address: string, t: CheckTarget, health: ServiceHealth, checkedAt: number): ServiceStatus {
  return { name: t.name, url: `${t.protocol}://${address}:${t.hostPort ?? 0}`, registered: t.registered, health, checkedAt }
}

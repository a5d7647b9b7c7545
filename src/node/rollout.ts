import { setTimeout as sleep } from 'node:timers/promises'
import { XenosError, type InstanceView } from '../core/index.ts'

const POLL_MS = 500

/**
 * Follows freshly created instances until all have booted and passed their health checks, and
 * says how long each phase took: boot from the end of create, healthy from boot. Times come
 * from the instances' own host (its clock), so hosts' clocks need not agree.
 */
export async function untilHealthy (instances: InstanceView[], createMs: number, get: (id: string) => Promise<InstanceView>, timeoutMs: number): Promise<{ bootMs: number, healthyMs: number }> {
  const deadline = Date.now() + timeoutMs
  let views = instances
  for (;;) {
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

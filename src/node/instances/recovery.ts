import { existsSync } from 'node:fs'
import { readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { ACTIVE_STATES, type Driver } from '../../core/index.ts'
import { tailFile } from '../../hypervisor/index.ts'
import type { InstanceRecord } from '../../store/index.ts'
import { DESTROYING_MARKER, type InstanceRecords } from './records.ts'
import { LOG_TAIL_LINES, withTail, type LinkEnds, type RemoteDisks, type TaskRunner } from './runner.ts'

export interface RecoveryInit {
  records: InstanceRecords
  tasks: Pick<TaskRunner, 'end' | 'watch'>
  drivers: ReadonlyMap<string, Driver>
  instancesDir: string
  remoteDisks: Pick<RemoteDisks, 'attach'>
  links: LinkEnds
  log: Logger
  /** Finishes destroying an instance (its record, task and directory). */
  destroy: (r: InstanceRecord) => Promise<void>
}

/**
 * Settles every persisted instance after a (re)start of the host: re-attaches to tasks that
 * still run, records those that ended meanwhile, and finishes what a stop interrupted (arrivals,
 * creations, destroys). Returns the instances whose destroy it finished (their adverts may live
 * on elsewhere: they are to be withdrawn).
 */
export async function recoverInstances (init: RecoveryInit): Promise<InstanceRecord[]> {
  const { records } = init
  const destroyed: InstanceRecord[] = []
  for (const r of records.list()) {
    const driver = init.drivers.get(r.driver)
    // Half-arrived: the host it came from still runs it. Half-destroyed: its owner asked.
    const arriving = records.isArriving(r.id)
    if (arriving || existsSync(join(records.dir(r.id), DESTROYING_MARKER))) {
      await init.destroy(r)
      if (!arriving) destroyed.push(r)
      continue
    }
    if (r.state === 'creating') {
      if (driver !== undefined) await init.tasks.end(driver, r.handle ?? { id: r.id, driver: r.driver, state: {} })
      records.set(r.id, { state: 'failed', handle: null, error: 'the host stopped while this instance was being created' })
      continue
    }
    if (!ACTIVE_STATES.has(r.state) || r.handle === null) continue
    if (driver === undefined) {
      records.set(r.id, { state: 'failed', error: `driver ${r.driver} is not enabled on this host` })
      continue
    }
    const status = await driver.recover(r.handle).catch(() => 'exited' as const)
    if (status === 'exited') {
      const tail = await tailFile(driver.logFile(r.handle), LOG_TAIL_LINES)
      const code = await driver.endedWith?.(r.handle).catch(() => undefined)
      await driver.destroy(r.handle).catch(() => {})
      if (code === 0) records.set(r.id, { state: 'exited', error: null, exitCode: 0 })
      else records.set(r.id, { state: 'failed', error: withTail(`the task ended while xenosd was not running${code === undefined ? '' : ` (with code ${code})`}`, tail), exitCode: code ?? null })
      continue
    }
    if (r.remoteDisk !== null) await init.remoteDisks.attach(r.id, r.remoteDisk)
    await init.links.open(r)
    records.set(r.id, { state: status })
    init.tasks.watch(r.id, driver, r.handle)
    init.log.info({ instance: r.id, state: status }, 're-attached to instance')
  }
  // What a destroy had left when the host stopped, its record already gone.
  for (const id of await readdir(init.instancesDir).catch(() => [])) {
    if (!records.has(id) && existsSync(join(records.dir(id), DESTROYING_MARKER))) await rm(records.dir(id), { recursive: true, force: true })
  }
  return destroyed
}

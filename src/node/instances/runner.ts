import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { canMigrate, type Driver, type InstanceState, type TaskExit, type TaskHandle, type TaskLink, type TaskSpec, type Template } from '../../core/index.ts'
import { tailFile } from '../../hypervisor/index.ts'
import type { InstanceRecord, RemoteDisk } from '../../store/index.ts'
import type { HealthMonitor } from './health.ts'
import type { KeyedLock } from './locks.ts'
import type { PortPlanner } from './ports.ts'
import type { InstanceRecords } from './records.ts'
import { stagedDisksOf } from './staged-disks.ts'

/** How an instance reaches a disk another host serves (see migration/remote-disks.ts). */
export interface RemoteDisks {
  /** Makes the disk reachable here; returns the unix socket a VM attaches to. */
  attach: (id: string, disk: RemoteDisk) => Promise<string>
  /** The instance stops using the disk here (it did not arrive, or went away). */
  detach: (id: string) => Promise<void>
  /** The instance is gone for good: the serving host may drop the disk. */
  release: (id: string, disk: RemoteDisk) => Promise<void>
}

/** Sets up the host's end of an instance's links (the services it reaches by name); again after a restart. */
export interface LinkEnds {
  open: (r: InstanceRecord) => Promise<TaskLink[]>
}

export interface TaskRunnerInit {
  records: InstanceRecords
  ports: PortPlanner
  health: HealthMonitor
  /** The supervisor's locks: a task's end is settled holding its instance's. */
  locks: KeyedLock
  remoteDisks: RemoteDisks
  links: LinkEnds
  /** Address services bind to and endpoints name. */
  address: string
  /** How long a graceful stop may take before the driver forces it. */
  stopTimeoutMs: number
  /** An instance still arriving by migration whose task ended: it is to be destroyed. */
  onArrivalEnded: (r: InstanceRecord) => Promise<void>
  log: Logger
}

/** An instance's task as this process knows it; replaced on every (re)start. */
interface LiveTask {
  handle: TaskHandle
  stopping: boolean
}

export const LOG_TAIL_LINES = 20

/**
 * Starts instances' tasks through their drivers, watches them, and records how a task that
 * ended by itself ended (with its last output). A task ended on purpose is unwatched first.
 */
export class TaskRunner {
  readonly #init: TaskRunnerInit
  readonly #live = new Map<string, LiveTask>()

  constructor (init: TaskRunnerInit) {
    this.#init = init
  }

  /** The tasks this host watches, by instance. */
  * live (): Iterable<[string, TaskHandle]> {
    for (const [id, t] of this.#live) yield [id, t.handle]
  }

  /** Starts the instance's task: booting, or from saved state, or to wait for a migrating VM (see `TaskSpec`). */
  async start (r: InstanceRecord, template: Template, from: Pick<TaskSpec, 'restoreFrom' | 'incoming' | 'diskServer'> = {}): Promise<TaskHandle> {
    const { records } = this.#init
    const { restoreFrom, incoming, diskServer } = from
    const driver = records.driverFor(r.driver)
    const ports = await this.#init.ports.endpoints(template, r.ports)
    records.set(r.id, { state: 'creating', ports, error: null, exitCode: null })
    const dir = records.dir(r.id)
    await mkdir(dir, { recursive: true })
    try {
      const handle = await driver.start({
        id: r.id,
        dir,
        command: template.manifest.command,
        env: template.manifest.env,
        ports,
        resources: r.resources,
        bindAddress: this.#init.address,
        image: template.manifest.image,
        restoreFrom,
        incoming,
        diskServer,
        remoteDisk: r.remoteDisk === null ? undefined : await this.#init.remoteDisks.attach(r.id, r.remoteDisk),
        disks: stagedDisksOf(r, dir),
        outbound: template.manifest.network === 'outbound',
        links: await this.#init.links.open(r),
        instanceEnv: r.env,
      })
      // An arriving VM waits paused, still `creating`, until it takes over.
      records.set(r.id, { state: incoming === undefined ? 'running' : 'creating', handle })
      this.watch(r.id, driver, handle)
      return handle
    } catch (err) {
      const tail = await tailFile(driver.logFile({ id: r.id, driver: r.driver, state: { log: join(dir, 'console.log') } }), LOG_TAIL_LINES)
      records.set(r.id, { state: 'failed', handle: null, error: withTail((err as Error).message, tail) })
      throw err
    }
  }

  /** Stops the instance's task gracefully and removes what it left. */
  async stop (r: InstanceRecord): Promise<void> {
    this.unwatch(r.id)
    const driver = this.#init.records.driverFor(r.driver)
    const handle = this.#init.records.handle(r)
    await driver.stop(handle, this.#init.stopTimeoutMs)
    await driver.destroy(handle)
  }

  /** Ends a task whatever state it is in, logging what fails (a destroy goes on regardless). */
  async end (driver: Driver, handle: TaskHandle): Promise<void> {
    await driver.stop(handle, this.#init.stopTimeoutMs).catch((err: unknown) => { this.#init.log.warn({ err, instance: handle.id }, 'stop during cleanup failed') })
    await driver.destroy(handle).catch((err: unknown) => { this.#init.log.warn({ err, instance: handle.id }, 'destroy during cleanup failed') })
  }

  /**
   * Ends a VM that was arriving by migration without ever letting it run (a stop would resume it
   * first): the host it came from may be running it again, on the same disk. A disk of its own
   * made here goes with it; its own disk that this host kept serving (`home`) stays.
   */
  async discardArrival (driver: Driver, r: InstanceRecord, home: boolean): Promise<void> {
    const handle = r.handle ?? { id: r.id, driver: r.driver, state: {} }
    try {
      // Quit through its monitor; without a handle, killed by its id.
      if (r.handle !== null && canMigrate(driver)) await driver.handOff(r.handle)
      else await driver.stop(handle, 0)
      if (!home) await driver.destroy(handle)
    } catch (err) {
      this.#init.log.warn({ err, instance: r.id }, 'could not end a VM that was arriving')
    }
  }

  watch (id: string, driver: Driver, handle: TaskHandle): void {
    const live: LiveTask = { handle, stopping: false }
    this.#live.set(id, live)
    driver.wait(handle).then(async exit => {
      await this.#init.locks.run(id, async () => { await this.#onExit(id, driver, live, exit) })
    }, (err: unknown) => { this.#init.log.error({ err, instance: id }, 'waiting for the task failed') })
  }

  /** Its task is ending on purpose: when it does, nothing is reported; what health learnt goes. */
  unwatch (id: string): void {
    const live = this.#live.get(id)
    if (live !== undefined) live.stopping = true
    this.#live.delete(id)
    this.#init.health.forget(id)
  }

  async #onExit (id: string, driver: Driver, live: LiveTask, exit: TaskExit): Promise<void> {
    if (live.stopping || this.#live.get(id) !== live) return
    this.#live.delete(id)
    const { records } = this.#init
    const r = records.find(id)
    if (r !== undefined && records.isArriving(id)) {
      // A VM that was arriving and ended (its source gave up): nothing of it stays here.
      this.#init.log.info({ instance: id, exit }, 'an arriving instance ended before it took over')
      await this.#init.onArrivalEnded(r)
      return
    }
    const tail = await tailFile(driver.logFile(live.handle), LOG_TAIL_LINES)
    await driver.destroy(live.handle).catch(() => {})
    const how = exit.signal !== null ? `killed by ${exit.signal}` : exit.code === null ? 'ended' : `exited with code ${exit.code}`
    const state: InstanceState = exit.code === 0 ? 'exited' : 'failed'
    records.set(id, { state, error: state === 'exited' ? null : withTail(`the task ${how}`, tail), exitCode: exit.code })
    this.#init.log.info({ instance: id, exit }, 'task ended')
  }
}

/** `message`, followed by the task's last output when there is any. */
export function withTail (message: string, tail: string): string {
  return tail.trim() === '' ? message : `${message}; last output:\n${tail}`
}

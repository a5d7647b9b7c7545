import { existsSync } from 'node:fs'
import { copyFile, mkdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import {
  ACTIVE_STATES, canMigrate, ENDED_STATES, XenosError,
  type ControlAction, type Driver, type InstanceMetrics, type InstanceState, type InstanceView, type LogPiece, type MarketView, type MigratingDriver, type Placement, type Resources, type TaskHandle, type TaskSpec, type Template,
} from '../../core/index.ts'
import { readFileFrom, tailFileFrom } from '../../hypervisor/index.ts'
import type { InstanceLink, InstanceRecord, RemoteDisk, SnapshotRecord, Store } from '../../store/index.ts'
import { Admission } from './admission.ts'
import { HealthMonitor } from './health.ts'
import { KeyedLock } from './locks.ts'
import { PortPlanner } from './ports.ts'
import { DESTROYING_MARKER, INCOMING_MARKER, InstanceRecords } from './records.ts'
import { recoverInstances } from './recovery.ts'
import { TaskRunner, type LinkEnds, type RemoteDisks } from './runner.ts'
import { Snapshots } from './snapshots.ts'
import { OUTPUTS_IMAGE, OUTPUTS_SERIAL, stageDisks } from './staged-disks.ts'
import { viewOf } from './view.ts'

/** A service an instance reaches by name (see `TaskLink`). */
export type ServiceLink = Omit<InstanceLink, 'port'>

/** A new instance a deploy makes: its id and placement come from its owner's token. */
export interface NewInstance {
  id: string
  name: string
  placement: Placement
  links: ServiceLink[]
  /** Environment variables over its template's. */
  env: Record<string, string>
  /** What it may hold, when not what its template asks for. */
  resources?: Resources | undefined
}

/** An instance arriving from another host by live migration. */
export interface IncomingInstance extends NewInstance {
  owner: string
  createdAt: number
}

export interface SupervisorInit {
  store: Pick<Store, 'instances' | 'templates' | 'snapshots' | 'diskExports' | 'settings' | 'tasks' | 'transaction'>
  drivers: ReadonlyMap<string, Driver>
  /** Where instance directories live. */
  instancesDir: string
  /** Where snapshots live. */
  snapshotsDir: string
  hostId: string
  /** Address services bind to and endpoints name. */
  advertiseAddress: string
  capacity: Resources
  /** How long a graceful stop may take before the driver forces it. @default 10_000 */
  stopTimeoutMs: number
  log: Logger
  remoteDisks: RemoteDisks
  links: LinkEnds
  /** Called after every change to an instance; `undefined` record means it was destroyed. */
  onChange: (id: string, record: InstanceRecord | undefined) => void
  /** What views show of an instance's bid and share (the host's market). */
  market: (id: string) => MarketView
}

/** What a new instance starts from besides its template. */
export interface CreateOptions {
  snapshot?: SnapshotRecord | undefined
  /** A disk image of staged inputs, linked into each instance. */
  inputs?: string | undefined
  /** Gives each instance an empty outputs disk of this many bytes. */
  outputBytes?: number | undefined
  /** Rows that belong with each new instance, written in the same transaction as its record. */
  alongside?: ((record: InstanceRecord) => void) | undefined
}

/**
 * What a live migration may do to this host's instances (see migration/): the one opening
 * through which an instance leaves or arrives. Everything else stays the supervisor's.
 */
export interface InstanceMoves {
  readonly records: InstanceRecords
  /** Runs `fn` holding instance `id`'s lock: no other action on it meanwhile. */
  locked: <T>(id: string, fn: () => Promise<T>) => Promise<T>
  /** Instance `r`'s driver, which must move tasks live. */
  migrator: (r: InstanceRecord) => MigratingDriver
  /**
   * Admits instance `arriving` of `template` from host `from` and records it, `creating`, its
   * directory marked as arriving (it is not advertised until it takes over).
   */
  admitArrival: (template: Template, arriving: IncomingInstance, from: string, remoteDisk: RemoteDisk | null) => Promise<InstanceRecord>
  /** Starts instance `r`'s task (holding its lock), to wait for its VM as `from` says. */
  start: (r: InstanceRecord, template: Template, from: Pick<TaskSpec, 'incoming' | 'diskServer'>) => Promise<TaskHandle>
  /** Stops watching instance `id`'s task: it ends here because the instance moves away, not by itself. */
  unwatch: (id: string) => void
  /** Instance `id` left this host: its record and task go, with `alongside` in the same transaction. */
  forget: (id: string, alongside?: () => void) => void
  destroy: (r: InstanceRecord) => Promise<void>
  view: (id: string) => InstanceView
}

/**
 * Runs this host's instances: admission, ports, starting and stopping through the driver,
 * persisting every state change, noticing tasks that end by themselves, and re-attaching to
 * running tasks after a restart. Authorisation happens before any call reaches it.
 */
export class InstanceSupervisor {
  readonly #init: SupervisorInit
  readonly #locks = new KeyedLock()
  /** Instances being sent to another host right now. */
  readonly #moving = new Set<string>()
  readonly #records: InstanceRecords
  readonly #ports: PortPlanner
  readonly #tasks: TaskRunner
  readonly admission: Admission
  readonly health: HealthMonitor
  readonly snapshots: Snapshots
  readonly moves: InstanceMoves
  /** The state each instance was last logged in. */
  readonly #states = new Map<string, InstanceState>()

  constructor (init: SupervisorInit) {
    this.#init = init
    this.#records = new InstanceRecords({
      ...init,
      onChange: (id, r) => {
        if (r?.state !== 'running') this.health.forget(id)
        this.#logTransition(id, r)
        init.onChange(id, r)
      },
    })
    this.#ports = new PortPlanner(init.store.instances, init.advertiseAddress)
    this.admission = new Admission(init)
    this.health = new HealthMonitor({
      ...init,
      address: init.advertiseAddress,
      live: () => this.#tasks.live(),
      onChange: init.onChange,
    })
    this.#tasks = new TaskRunner({
      ...init,
      records: this.#records,
      ports: this.#ports,
      health: this.health,
      locks: this.#locks,
      address: init.advertiseAddress,
      onArrivalEnded: async r => { await this.#destroy(r) },
    })
    this.snapshots = new Snapshots({ store: init.store, records: this.#records, locks: this.#locks, dir: init.snapshotsDir })
    this.moves = {
      records: this.#records,
      locked: async (id, fn) => await this.#locks.run(id, fn),
      migrator: r => this.#migrator(r),
      admitArrival: async (template, arriving, from, remoteDisk) => await this.#admitArrival(template, arriving, from, remoteDisk),
      start: async (r, template, from) => await this.#tasks.start(r, template, from),
      unwatch: id => { this.#tasks.unwatch(id) },
      forget: (id, alongside) => {
        this.#init.store.transaction(() => {
          this.#init.store.instances.remove(id)
          this.#init.store.tasks.remove(id)
          alongside?.()
        })
        this.#records.changed(id, undefined)
      },
      destroy: async r => { await this.#destroy(r) },
      view: id => this.view(id),
    }
  }

  /**
   * Settles every persisted instance after a (re)start of the host; returns those whose
   * destroy it finished (their adverts may live on elsewhere: they are to be withdrawn).
   */
  async recover (): Promise<InstanceRecord[]> {
    return await recoverInstances({ ...this.#init, records: this.#records, tasks: this.#tasks, destroy: async r => { await this.#destroy(r) } })
  }

  /**
   * Runs `fn` with the disk of a stopped or suspended VM (consistent: no QEMU writes to it), its
   * template and the instance's own record, holding the instance's lock meanwhile.
   */
  async withResting<T> (id: string, fn: (disk: string, template: Template) => Promise<T>): Promise<T> {
    return await this.#locks.run(id, async () => {
      const r = this.#records.get(id)
      this.#records.expect(r, ['stopped', 'suspended', 'exited'], 'derive a template from')
      if (r.remoteDisk !== null) throw new XenosError('INVALID_STATE', `instance ${id}'s disk is served by host ${r.remoteDisk.host}, where it migrated from, and a template can only be derived from a disk of this host's own: derive one from another instance of the service`)
      const disk = join(this.#records.dir(id), 'disk.qcow2')
      if (!existsSync(disk)) throw new XenosError('INVALID_STATE', `instance ${id} has no disk of its own (it does not run in a VM)`)
      return await fn(disk, this.#records.template(r))
    })
  }

  /** Runs `fn` with the outputs disk of instance `id`, which must have ended (no VM writes to the disk meanwhile). */
  async withOutputs<T> (id: string, fn: (image: string, owner: string) => Promise<T>): Promise<T> {
    return await this.#locks.run(id, async () => {
      const r = this.#records.get(id)
      this.#records.expect(r, ENDED_STATES, 'collect the outputs of')
      const image = join(this.#records.dir(id), OUTPUTS_IMAGE)
      // A task that moved here left its outputs disk with the host that serves its disk: read it from there.
      if (!existsSync(image) && r.remoteDisk?.staged?.some(d => d.serial === OUTPUTS_SERIAL) === true) {
        await this.#migrator(r).readStagedDisk(await this.#init.remoteDisks.attach(id, r.remoteDisk), OUTPUTS_SERIAL, image)
      }
      if (!existsSync(image)) throw new XenosError('INVALID_STATE', `instance ${id} has no outputs disk: run tasks with "xenos run … --out DIR"`)
      return await fn(image, r.owner)
    })
  }

  /**
   * Creates and starts instances of a template held locally (from a snapshot of it, if given),
   * each with the disk image `inputs` (if given) as its staged inputs. All their records are
   * written at once, so a host that stops half-way has either all or none of them to settle.
   */
  async create (template: Template, owner: string, instances: NewInstance[], options: CreateOptions = {}): Promise<InstanceView[]> {
    const { snapshot, alongside } = options
    if (template.manifest.image?.system !== undefined && (options.inputs !== undefined || options.outputBytes !== undefined)) {
      throw new XenosError('INVALID_ARGUMENT', `${template.manifest.name} boots its image's own system, which has no Xenos init to mount inputs and outputs: run tasks on a template built by Xenos (xenos template build)`)
    }
    const driver = this.#records.driverFor(template.manifest.driver)
    const records = await this.#locks.run('admission', async () => {
      for (const [want, n] of resourceGroups(template, instances)) this.admission.check(want, n, template.manifest.name)
      const out: InstanceRecord[] = []
      const pending = new Set<number>()
      for (const i of instances) out.push(await this.#newRecord(template, driver, { ...i, owner, createdAt: Date.now() }, null, pending))
      this.#init.store.transaction(() => {
        for (const r of out) {
          this.#init.store.instances.insert(r)
          alongside?.(r)
        }
      })
      for (const r of out) this.#records.changed(r.id, r)
      return out
    })
    return await Promise.all(records.map(async r => await this.#locks.run(r.id, async () => {
      const dir = this.#records.dir(r.id)
      await stageDisks(dir, options)
      if (snapshot === undefined) {
        await this.#tasks.start(r, template)
      } else {
        // The new instance starts from the snapshot's memory with its own copy of the snapshot's disk.
        await mkdir(dir, { recursive: true })
        await copyFile(join(this.snapshots.dir(snapshot.id), 'disk.qcow2'), join(dir, 'disk.qcow2'))
        await this.#tasks.start(r, template, { restoreFrom: join(this.snapshots.dir(snapshot.id), 'state') })
      }
      return this.view(r.id)
    })))
  }

  async control (id: string, action: ControlAction): Promise<InstanceView | undefined> {
    this.#refuseIfMoving(id, action)
    return await this.#locks.run(id, async () => {
      const records = this.#records
      const r = records.get(id)
      switch (action) {
        case 'start':
          records.expect(r, ENDED_STATES, 'start')
          await this.#admitAgain(r)
          await this.#tasks.start(r, records.template(r))
          break
        case 'stop':
          records.expect(r, ['running', 'paused', 'suspended'], 'stop')
          if (r.state === 'suspended') await rm(this.#statePath(r), { force: true })
          else await this.#tasks.stop(r)
          records.set(id, { state: 'stopped', error: null })
          break
        case 'suspend': {
          records.expect(r, ['running', 'paused'], 'suspend')
          const driver = records.driverFor(r.driver)
          if (driver.suspend === undefined || !driver.capabilities().suspend) throw new XenosError('INVALID_STATE', `instance ${id} runs on the ${r.driver} driver, which cannot suspend`)
          this.#tasks.unwatch(id)
          await driver.suspend(records.handle(r), this.#statePath(r))
          await driver.destroy(records.handle(r))
          records.set(id, { state: 'suspended', handle: null })
          break
        }
        case 'pause':
          records.expect(r, ['running'], 'pause')
          await records.driverFor(r.driver).pause(records.handle(r))
          records.set(id, { state: 'paused' })
          break
        case 'resume':
          records.expect(r, ['paused', 'suspended'], 'resume')
          if (r.state === 'suspended') {
            await this.#admitAgain(r)
            await this.#tasks.start(r, records.template(r), { restoreFrom: this.#statePath(r) })
            await rm(this.#statePath(r), { force: true })
          } else {
            await records.driverFor(r.driver).resume(records.handle(r))
            records.set(id, { state: 'running' })
          }
          break
        case 'destroy':
          await mkdir(records.dir(id), { recursive: true })
          await writeFile(join(records.dir(id), DESTROYING_MARKER), '')
          await this.#destroy(r)
          return undefined
      }
      return this.view(id)
    })
  }

  /** Runs `fn`, the whole of a migration of instance `id`; meanwhile other actions on it, and another migration, are refused. */
  async moving<T> (id: string, fn: () => Promise<T>): Promise<T> {
    this.#refuseIfMoving(id, 'migrate')
    this.#moving.add(id)
    try {
      return await fn()
    } finally {
      this.#moving.delete(id)
    }
  }

  /** Whether instance `id` is being moved away from this host. */
  isMoving (id: string): boolean {
    return this.#moving.has(id)
  }

  /** The host instance `id` is arriving from; undefined unless it is arriving. */
  arrivingFrom (id: string): string | undefined {
    return this.#records.arrivingFrom(id)
  }

  /** The services instance `id` reaches at addresses its host sets up (which move with it). */
  linksOf (id: string): ServiceLink[] {
    return this.#records.get(id).links.map(({ name, target, endpoint }) => ({ name, target, ...endpoint === undefined ? {} : { endpoint } }))
  }

  /** The environment instance `id`'s deploy gave it (which moves with it). */
  envOf (id: string): Record<string, string> {
    return this.#records.get(id).env
  }

  /** Why instance `id` may run here, as signed (null for an instance from before placements). */
  placementOf (id: string): Placement | null {
    return this.#records.get(id).placement
  }

  /** The host serving instance `id`'s disk, when not this one. */
  remoteDiskOf (id: string): RemoteDisk | null {
    return this.#records.get(id).remoteDisk
  }

  /** Where on this host clients reach the TCP endpoints of running instance `id`. */
  tcpEndpoints (id: string): Array<{ name: string, address: string, port: number }> {
    const r = this.#records.get(id)
    if (r.state !== 'running') throw new XenosError('INVALID_STATE', `instance ${id} is ${r.state}, not running`)
    return r.ports.filter(p => p.protocol !== 'udp').map(p => ({ name: p.name, address: this.#init.advertiseAddress, port: p.hostPort }))
  }

  has (id: string): boolean {
    return this.#records.has(id)
  }

  list (): InstanceView[] {
    return this.#records.list().map(r => this.#toView(r))
  }

  view (id: string): InstanceView {
    return this.#toView(this.#records.get(id))
  }

  async metrics (id: string): Promise<InstanceMetrics> {
    const r = this.#records.get(id)
    const base = { id, host: this.#init.hostId, state: r.state, sampledAt: Date.now() }
    if (!ACTIVE_STATES.has(r.state) || r.handle === null) return { ...base, cpuSeconds: 0, memoryBytes: 0, uptimeSeconds: 0 }
    const s = await this.#records.driverFor(r.driver).stats(r.handle)
    const { startedAt, ...usage } = s
    return { ...base, ...usage, uptimeSeconds: Math.max(0, (Date.now() - startedAt) / 1000) }
  }

  /** The last `lines` lines an instance printed, or with `from`, what it printed from that offset on; and where to go on from. */
  async logs (id: string, lines: number, from?: number): Promise<LogPiece> {
    const r = this.#records.get(id)
    const file = this.#init.drivers.get(r.driver)?.logFile(r.handle ?? { id, driver: r.driver, state: {} })
    return from === undefined ? await tailFileFrom(file, lines) : await readFileFrom(file, from)
  }

  /** A line for each instance that changes state, and one when it is gone: what an operator reads to follow the host. */
  #logTransition (id: string, r: InstanceRecord | undefined): void {
    const was = this.#states.get(id)
    if (r === undefined) {
      if (this.#states.delete(id)) this.#init.log.info({ instance: id, from: was }, 'instance removed')
      return
    }
    if (was === r.state) return
    this.#states.set(id, r.state)
    const line = { instance: id, name: r.name, owner: r.owner, template: r.templateId, from: was ?? null, to: r.state, ...r.error === null || r.error === undefined ? {} : { error: r.error } }
    if (r.state === 'failed') this.#init.log.warn(line, `instance ${r.state}`)
    else this.#init.log.info(line, `instance ${r.state}`)
  }

  /** A new instance's record, `creating`, with host ports of its own (none of `pending`, ports of records not written yet). */
  async #newRecord (template: Template, driver: Driver, o: IncomingInstance, remoteDisk: RemoteDisk | null, pending = new Set<number>()): Promise<InstanceRecord> {
    const ports = await this.#ports.endpoints(template, [], pending)
    for (const p of ports) pending.add(p.hostPort)
    // A process reaches its links on loopback ports, fixed now: its environment names them.
    const links: InstanceLink[] = []
    for (const l of o.links) links.push(driver.capabilities().links === 'path' ? l : { ...l, port: await this.#ports.link(pending) })
    return {
      ...o,
      remoteDisk,
      links,
      templateId: template.id,
      state: 'creating',
      driver: driver.name,
      handle: null,
      ports,
      resources: o.resources ?? template.manifest.resources,
      error: null,
      exitCode: null,
      updatedAt: o.createdAt,
    }
  }

  async #admitArrival (template: Template, arriving: IncomingInstance, from: string, remoteDisk: RemoteDisk | null): Promise<InstanceRecord> {
    const driver = this.#records.driverFor(template.manifest.driver)
    if (!canMigrate(driver)) throw new XenosError('INVALID_STATE', `the ${driver.name} driver cannot take over migrating instances`)
    return await this.#locks.run('admission', async () => {
      if (this.has(arriving.id)) throw new XenosError('INVALID_STATE', `host ${this.#init.hostId} already holds instance ${arriving.id}`)
      this.admission.check(arriving.resources ?? template.manifest.resources, 1, template.manifest.name)
      const r = await this.#newRecord(template, driver, arriving, remoteDisk)
      await mkdir(this.#records.dir(r.id), { recursive: true })
      await writeFile(join(this.#records.dir(r.id), INCOMING_MARKER), from)
      this.#init.store.instances.insert(r)
      return r
    })
  }

  /**
   * Admits an instance that held no resources (stopped, ended, suspended) and is starting again:
   * it counts as `creating` from here on, so that no other admission can take its room.
   */
  async #admitAgain (r: InstanceRecord): Promise<void> {
    await this.#locks.run('admission', async () => {
      this.admission.check(r.resources, 1, r.name)
      this.#records.set(r.id, { state: 'creating', error: null })
    })
  }

  /** Where a suspended instance's saved state lives. */
  #statePath (r: InstanceRecord): string {
    return join(this.#records.dir(r.id), 'suspended.state')
  }

  async #destroy (r: InstanceRecord): Promise<void> {
    // An instance that never finished arriving leaves its disk to the host it was coming from;
    // one that was coming back to its disk here leaves it served to that host.
    const arriving = this.#records.isArriving(r.id)
    const home = arriving && this.#init.store.diskExports.forInstance(r.id).length > 0
    const driver = this.#init.drivers.get(r.driver)
    this.#tasks.unwatch(r.id)
    if (driver !== undefined) {
      if (arriving) await this.#tasks.discardArrival(driver, r, home)
      // Without a handle (the host stopped while starting it) the driver still finds what it started by the id.
      else await this.#tasks.end(driver, r.handle ?? { id: r.id, driver: r.driver, state: {} })
    }
    // The record goes before the directory: a host that stops in between finds the marker and no record.
    this.#init.store.instances.remove(r.id)
    this.#records.changed(r.id, undefined)
    const dir = this.#records.dir(r.id)
    if (home) await rm(join(dir, INCOMING_MARKER), { force: true })
    else await rm(dir, { recursive: true, force: true })
    if (r.remoteDisk !== null) await this.#init.remoteDisks.detach(r.id)
    if (r.remoteDisk !== null && !arriving) {
      await this.#init.remoteDisks.release(r.id, r.remoteDisk).catch((err: unknown) => { this.#init.log.warn({ err, instance: r.id, host: r.remoteDisk?.host }, 'could not release the disk the instance used remotely') })
    }
  }

  #refuseIfMoving (id: string, action: string): void {
    if (this.#moving.has(id)) throw new XenosError('INVALID_STATE', `cannot ${action} instance ${id}: it is migrating to another host`)
  }

  #migrator (r: InstanceRecord): MigratingDriver {
    const d = this.#records.driverFor(r.driver)
    if (!canMigrate(d)) throw new XenosError('INVALID_STATE', `instance ${r.id} runs on the ${r.driver} driver, which cannot migrate`)
    return d
  }

  #toView (r: InstanceRecord): InstanceView {
    return viewOf(r, this.#init.store.templates.get(r.templateId), {
      host: this.#init.hostId,
      address: this.#init.advertiseAddress,
      services: this.health.services(r.id),
      milestones: this.health.milestones(r.id),
      market: this.#init.market(r.id),
    })
  }
}

/** The instances of a create by what each holds (its own resources, or its template's), counted: admission checks each group. */
function resourceGroups (template: Template, instances: NewInstance[]): Array<[Resources, number]> {
  const groups = new Map<string, [Resources, number]>()
  for (const i of instances) {
    const want = i.resources ?? template.manifest.resources
    const key = `${want.cpu}/${want.memory}`
    groups.set(key, [want, (groups.get(key)?.[1] ?? 0) + 1])
  }
  return [...groups.values()]
}

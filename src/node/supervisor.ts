import { existsSync, readFileSync, statSync } from 'node:fs'
import { copyFile, link, mkdir, readdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import {
  ACTIVE_STATES, ENDED_STATES, newSnapshotId, XenosError,
  type ControlAction, type DiskCopyProgress, type Driver, type InstanceMetrics, type MigrationChannel, type MigrationProgress, type InstanceState, type InstanceView, type Placement, type Resources, type ServiceStatus, type StagedDisk, type TaskExit, type TaskHandle, type TaskLink, type TaskSpec, type Template,
} from '../core/index.ts'
import { createEmptyImage, createOutputImage } from '../data/index.ts'
import type { InstanceLink, InstanceRecord, RemoteDisk, SnapshotRecord, Store, TaskRecord } from '../store/index.ts'
import { checkService, checkTargets, HEALTH_INTERVAL_MS, HEALTH_PENDING_FOR_MS, HEALTH_PENDING_INTERVAL_MS, statusOf } from './health.ts'
import { KeyedLock } from './locks.ts'
import { allocatePort, isPortFree } from './ports.ts'

/** How an instance reaches a disk another host serves (see migration.ts). */
export interface RemoteDisks {
  /** Makes the disk reachable here; returns the unix socket a VM attaches to. */
  attach: (id: string, disk: RemoteDisk) => Promise<string>
  /** The instance stops using the disk here (it did not arrive, or went away). */
  detach: (id: string) => Promise<void>
  /** The instance is gone for good: the serving host may drop the disk. */
  release: (id: string, disk: RemoteDisk) => Promise<void>
}

/**
 * What becomes of a migrating instance's disk: it stays here, served to the new host with the
 * ticket `token`, or it is copied to the NBD export on unix socket `copyTo` before the memory moves.
 */
export type DiskPlan =
  /** The disk stays here, served to the new host with this ticket. */
  | { serveTo: { peer: string, token: string } }
  /** The disk is copied into the new host's disk server, reached on this unix socket. */
  | { copyTo: string, onCopy: (p: DiskCopyProgress) => void }
  /** The disk stays with the other host that serves it (where the instance first ran), which serves it to the new host too. */
  | { servedBy: string }
  /** The new host is the one that serves the disk: the instance goes back to it. */
  | { backTo: string }

/** The disk of an instance arriving by migration. */
export type ArrivingDisk =
  /** Served by another host (the one it comes from, or where it first ran). */
  | { servedBy: RemoteDisk }
  /** A disk of its own here, into which the source copies the disk first, with images as large as its staged disks. */
  | { copied: true, staged?: Array<{ serial: string, bytes: number }> }
  /** Its own disk, which this host kept serving while it ran elsewhere: it comes back. */
  | { home: true }

/** An instance arriving from another host by live migration. */
export interface IncomingInstance {
  id: string
  name: string
  owner: string
  createdAt: number
  /** Why it may run here (the move that brings it, signed). */
  placement: Placement
  /** The services it reaches at addresses its host sets up. */
  links: ServiceLink[]
}

/** A service an instance reaches by name (see `TaskLink`). */
export type ServiceLink = Omit<InstanceLink, 'port'>

/** A new instance a deploy makes: its id and placement come from its owner's token. */
export interface NewInstance {
  id: string
  name: string
  placement: Placement
  links: ServiceLink[]
}

/** Sets up the host's end of an instance's links (the services it reaches by name); again after a restart. */
export interface LinkEnds {
  open: (r: InstanceRecord) => Promise<TaskLink[]>
}

/** What moves with an instance that runs a task: the parts of its task record that are not the instance's. */
export type MovingTask = Pick<TaskRecord, 'inputs' | 'outputsPrefix' | 'keep' | 'createdAt'>

export interface SupervisorInit {
  store: Pick<Store, 'instances' | 'templates' | 'snapshots' | 'diskExports' | 'settings' | 'tasks' | 'transaction'>
  drivers: ReadonlyMap<string, Driver>
  /** Where instance directories live. */
  instancesDir: string
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
}

/** An instance's task as this process knows it; replaced on every (re)start. */
interface LiveTask {
  handle: TaskHandle
  stopping: boolean
}

const LOG_TAIL_LINES = 20
/** An instance's staged inputs, in its directory: a read-only disk the guest mounts at /in. */
const INPUTS_IMAGE = 'inputs.img'
const INPUTS_SERIAL = 'xenos-in'
/** A task's outputs: a disk the guest mounts at /out, read back once the task has ended. */
const OUTPUTS_IMAGE = 'outputs.img'
const OUTPUTS_SERIAL = 'xenos-out'
/** The staged disks an instance may have, as images in its directory. */
const STAGED_IMAGES = [
  { file: INPUTS_IMAGE, serial: INPUTS_SERIAL, readOnly: true },
  { file: OUTPUTS_IMAGE, serial: OUTPUTS_SERIAL, readOnly: false },
]
export const STAGED_SERIALS = [INPUTS_SERIAL, OUTPUTS_SERIAL] as const

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
const DRAINING_SETTING = 'draining'
/** Marks the directory of an instance still arriving by migration (it names the host it comes from): a restart removes it whole. */
const INCOMING_MARKER = 'incoming'
/** Marks the directory of an instance being destroyed: a restart finishes the job. */
const DESTROYING_MARKER = 'destroying'

/**
 * Runs this host's instances: admission, ports, starting and stopping through the driver,
 * persisting every state change, noticing tasks that end by themselves, and re-attaching to
 * running tasks after a restart. Authorisation happens before any call reaches it.
 */
export class InstanceSupervisor {
  readonly #init: SupervisorInit
  readonly #locks = new KeyedLock()
  readonly #live = new Map<string, LiveTask>()
  /** Instances being sent to another host right now. */
  readonly #moving = new Set<string>()
  /** The tasks of instances arriving here, recorded when they take over. */
  readonly #arrivingTasks = new Map<string, MovingTask>()
  /** Kept in the store: a drained host that restarts stays drained. */
  #draining: boolean
  readonly #health = new Map<string, ServiceStatus[]>()
  /** When each running instance booted and became healthy, and was last checked (this host's clock). */
  readonly #milestones = new Map<string, { since: number, bootedAt?: number, healthyAt?: number, checkedAt: number }>()
  #healthTimer: NodeJS.Timeout | undefined

  constructor (init: SupervisorInit) {
    this.#init = init
    this.#draining = init.store.settings.get(DRAINING_SETTING) === '1'
  }

  /** Checks the services of running instances every few seconds; a change re-advertises the instance. */
  startHealthChecks (): void {
    this.#healthTimer = setInterval(() => { void this.#checkHealth() }, HEALTH_PENDING_INTERVAL_MS)
  }

  stopHealthChecks (): void {
    clearInterval(this.#healthTimer)
  }

  async #checkHealth (): Promise<void> {
    for (const [id, live] of this.#live) {
      const r = this.#init.store.instances.get(id)
      if (r?.state !== 'running') continue
      const now = Date.now()
      const m = this.#milestones.get(id) ?? { since: now, checkedAt: 0 }
      this.#milestones.set(id, m)
      const settled = m.healthyAt !== undefined || now - m.since > HEALTH_PENDING_FOR_MS
      if (settled && now - m.checkedAt < HEALTH_INTERVAL_MS) continue
      m.checkedAt = now
      const driver = this.#init.drivers.get(r.driver)
      const guest = driver?.services?.(live.handle)
      // A process is up when it starts; a VM when its agent first reports.
      if (m.bootedAt === undefined && (driver?.services === undefined || guest !== undefined)) m.bootedAt = now
      const targets = checkTargets(this.#declaredPorts(r), guest)
      const statuses = await Promise.all(targets.map(async t => statusOf(this.#init.advertiseAddress, t, await checkService(this.#init.advertiseAddress, t), now)))
      // Healthy: every service that declares a health check passes it.
      if (m.bootedAt !== undefined && m.healthyAt === undefined && statuses.every((s, i) => targets[i]?.health === '' || s.health === 'passing')) m.healthyAt = Date.now()
      const before = this.#health.get(id) ?? []
      this.#health.set(id, statuses)
      const summary = (list: ServiceStatus[]): string => list.map(s => `${s.name}:${s.registered}:${s.health}`).join(',')
      if (summary(before) !== summary(statuses)) this.#init.onChange(id, r)
    }
  }

  #declaredPorts (r: InstanceRecord): Array<{ name: string, protocol: string, hostPort: number, health?: string | undefined }> {
    const declared = this.#init.store.templates.get(r.templateId)?.manifest.ports ?? []
    return r.ports.map(p => ({ ...p, health: declared.find(d => d.name === p.name)?.health }))
  }

  /**
   * Settles every persisted instance after a (re)start of the host; returns those whose
   * destroy it finished (their adverts may live on elsewhere: they are to be withdrawn).
   */
  async recover (): Promise<InstanceRecord[]> {
    const destroyed: InstanceRecord[] = []
    for (const r of this.#init.store.instances.list()) {
      const driver = this.#init.drivers.get(r.driver)
      // Half-arrived: the host it came from still runs it. Half-destroyed: its owner asked.
      const arriving = existsSync(join(this.#init.instancesDir, r.id, INCOMING_MARKER))
      if (arriving || existsSync(join(this.#init.instancesDir, r.id, DESTROYING_MARKER))) {
        await this.#destroy(r)
        if (!arriving) destroyed.push(r)
        continue
      }
      if (r.state === 'creating') {
        if (driver !== undefined) await this.#cleanup(driver, r.handle ?? { id: r.id, driver: r.driver, state: {} })
        this.#set(r.id, { state: 'failed', handle: null, error: 'the host stopped while this instance was being created' })
        continue
      }
      if (!ACTIVE_STATES.has(r.state) || r.handle === null) continue
      if (driver === undefined) {
        this.#set(r.id, { state: 'failed', error: `driver ${r.driver} is not enabled on this host` })
        continue
      }
      const status = await driver.recover(r.handle).catch(() => 'exited' as const)
      if (status === 'exited') {
        const tail = await driver.logTail(r.handle, LOG_TAIL_LINES).catch(() => '')
        const code = await driver.endedWith?.(r.handle).catch(() => undefined)
        await driver.destroy(r.handle).catch(() => {})
        if (code === 0) this.#set(r.id, { state: 'exited', error: null, exitCode: 0 })
        else this.#set(r.id, { state: 'failed', error: withTail(`the task ended while xenosd was not running${code === undefined ? '' : ` (with code ${code})`}`, tail), exitCode: code ?? null })
        continue
      }
      if (r.remoteDisk !== null) await this.#init.remoteDisks.attach(r.id, r.remoteDisk)
      await this.#init.links.open(r)
      this.#set(r.id, { state: status })
      this.#watch(r.id, driver, r.handle)
      this.#init.log.info({ instance: r.id, state: status }, 're-attached to instance')
    }
    // What a destroy had left when the host stopped, its record already gone.
    for (const id of await readdir(this.#init.instancesDir).catch(() => [])) {
      if (!this.has(id) && existsSync(join(this.#init.instancesDir, id, DESTROYING_MARKER))) await rm(join(this.#init.instancesDir, id), { recursive: true, force: true })
    }
    // One server per disk, however many hosts it is served to.
    const servers = new Map<string, Record<string, unknown>>()
    for (const e of this.#init.store.diskExports.list()) {
      const driver = this.#init.drivers.get('qemu')
      if (driver?.serveDisk === undefined) continue
      const dir = join(this.#init.instancesDir, e.instanceId)
      const server = servers.get(e.instanceId) ?? (await driver.serveDisk(e.instanceId, dir, stagedImagesIn(dir), e.server)).server
      servers.set(e.instanceId, server)
      this.#init.store.diskExports.put({ ...e, server })
    }
    return destroyed
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

  /** While a host is drained it admits no instance and offers no room, across restarts, until undrained. */
  setDraining (on: boolean): void {
    this.#init.store.settings.set(DRAINING_SETTING, on ? '1' : '0')
    this.#draining = on
  }

  get draining (): boolean {
    return this.#draining
  }

  free (): Resources {
    if (this.#draining) return { cpu: 0, memory: 0 }
    const used = this.used()
    const { capacity } = this.#init
    return { cpu: round(capacity.cpu - used.cpu), memory: capacity.memory - used.memory }
  }

  /** Saves a running or paused VM's memory and disk as a snapshot new instances can start from. */
  async snapshot (id: string): Promise<SnapshotRecord> {
    return await this.#locks.run(id, async () => {
      const r = this.#get(id)
      this.#expect(r, ['running', 'paused'], 'snapshot')
      this.#refuseIfStaged(r, 'snapshot')
      const driver = this.#driverFor(r.driver)
      if (driver.snapshot === undefined) throw new XenosError('INVALID_STATE', `instance ${id} runs on the ${r.driver} driver, which cannot take snapshots`)
      const snap: SnapshotRecord = { id: newSnapshotId(), instanceId: id, templateId: r.templateId, owner: r.owner, createdAt: Date.now() }
      const dir = this.snapshotDir(snap.id)
      await mkdir(dir, { recursive: true })
      try {
        await driver.snapshot(this.#handle(r), dir)
      } catch (err) {
        await rm(dir, { recursive: true, force: true })
        throw err
      }
      this.#init.store.snapshots.insert(snap)
      return snap
    })
  }

  /**
   * Runs `fn` with the disk of a stopped or suspended VM (consistent: no QEMU writes to it), its
   * template and the instance's own record, holding the instance's lock meanwhile.
   */
  async withResting<T> (id: string, fn: (disk: string, template: Template) => Promise<T>): Promise<T> {
    return await this.#locks.run(id, async () => {
      const r = this.#get(id)
      this.#expect(r, ['stopped', 'suspended', 'exited'], 'derive a template from')
      if (r.remoteDisk !== null) throw new XenosError('INVALID_STATE', `instance ${id}'s disk is served by host ${r.remoteDisk.host}, where it migrated from, and a template can only be derived from a disk of this host's own: derive one from another instance of the service`)
      const disk = join(this.#init.instancesDir, id, 'disk.qcow2')
      if (!existsSync(disk)) throw new XenosError('INVALID_STATE', `instance ${id} has no disk of its own (it does not run in a VM)`)
      return await fn(disk, this.#template(r))
    })
  }

  /** Runs `fn` with the outputs disk of instance `id`, which must have ended (no VM writes to the disk meanwhile). */
  async withOutputs<T> (id: string, fn: (image: string, owner: string) => Promise<T>): Promise<T> {
    return await this.#locks.run(id, async () => {
      const r = this.#get(id)
      this.#expect(r, ENDED_STATES, 'collect the outputs of')
      const image = join(this.#init.instancesDir, id, OUTPUTS_IMAGE)
      // A task that moved here left its outputs disk with the host that serves its disk: read it from there.
      if (!existsSync(image) && r.remoteDisk?.staged?.some(d => d.serial === OUTPUTS_SERIAL) === true) {
        const driver = this.#driverFor(r.driver)
        if (driver.readStagedDisk === undefined) throw new XenosError('INVALID_STATE', `instance ${id} runs on the ${r.driver} driver, which cannot read disks other hosts serve`)
        await driver.readStagedDisk(await this.#init.remoteDisks.attach(id, r.remoteDisk), OUTPUTS_SERIAL, image)
      }
      if (!existsSync(image)) throw new XenosError('INVALID_STATE', `instance ${id} has no outputs disk: run tasks with "xenos run … --out DIR"`)
      return await fn(image, r.owner)
    })
  }

  /** Deletes a snapshot's saved memory and disk. */
  async deleteSnapshot (id: string): Promise<void> {
    await this.#locks.run(`snapshot/${id}`, async () => {
      this.#init.store.snapshots.remove(id)
      await rm(this.snapshotDir(id), { recursive: true, force: true })
    })
  }

  snapshotDir (id: string): string {
    return join(this.#init.instancesDir, '..', 'snapshots', id)
  }

  /**
   * Creates and starts instances of a template held locally (from a snapshot of it, if given),
   * each with the disk image `inputs` (if given) as its staged inputs. All their records are
   * written at once, so a host that stops half-way has either all or none of them to settle.
   */
  async create (template: Template, owner: string, instances: NewInstance[], options: CreateOptions = {}): Promise<InstanceView[]> {
    const { snapshot, inputs, outputBytes, alongside } = options
    const driver = this.#driverFor(template.manifest.driver)
    const records = await this.#locks.run('admission', async () => {
      this.#admit(template.manifest.resources, instances.length, template.manifest.name)
      const out: InstanceRecord[] = []
      const pending = new Set<number>()
      for (const i of instances) out.push(await this.#newRecord(template, driver, { ...i, owner, createdAt: Date.now(), remoteDisk: null }, pending))
      this.#init.store.transaction(() => {
        for (const r of out) {
          this.#init.store.instances.insert(r)
          alongside?.(r)
        }
      })
      for (const r of out) this.#init.onChange(r.id, r)
      return out
    })
    return await Promise.all(records.map(async r => await this.#locks.run(r.id, async () => {
      if (inputs !== undefined) {
        // Read-only, so every instance of the deploy shares the one image.
        await mkdir(join(this.#init.instancesDir, r.id), { recursive: true })
        await link(inputs, join(this.#init.instancesDir, r.id, INPUTS_IMAGE))
      }
      if (outputBytes !== undefined) {
        await mkdir(join(this.#init.instancesDir, r.id), { recursive: true })
        await createOutputImage(join(this.#init.instancesDir, r.id, OUTPUTS_IMAGE), outputBytes)
      }
      if (snapshot === undefined) {
        await this.#startTask(r, template)
      } else {
        // The new instance starts from the snapshot's memory with its own copy of the snapshot's disk.
        await mkdir(join(this.#init.instancesDir, r.id), { recursive: true })
        await copyFile(join(this.snapshotDir(snapshot.id), 'disk.qcow2'), join(this.#init.instancesDir, r.id, 'disk.qcow2'))
        await this.#startTask(r, template, { restoreFrom: join(this.snapshotDir(snapshot.id), 'state') })
      }
      return this.view(r.id)
    })))
  }

  async control (id: string, action: ControlAction): Promise<InstanceView | undefined> {
    this.#refuseIfMoving(id, action)
    return await this.#locks.run(id, async () => {
      const r = this.#get(id)
      switch (action) {
        case 'start':
          this.#expect(r, ENDED_STATES, 'start')
          await this.#admitAgain(r)
          await this.#startTask(r, this.#template(r))
          break
        case 'stop':
          this.#expect(r, ['running', 'paused', 'suspended'], 'stop')
          if (r.state === 'suspended') await rm(this.#statePath(r), { force: true })
          else await this.#stopTask(r)
          this.#set(id, { state: 'stopped', error: null })
          break
        case 'suspend': {
          this.#expect(r, ['running', 'paused'], 'suspend')
          const driver = this.#driverFor(r.driver)
          if (driver.suspend === undefined || !driver.capabilities().suspend) throw new XenosError('INVALID_STATE', `instance ${id} runs on the ${r.driver} driver, which cannot suspend`)
          const live = this.#live.get(id)
          if (live !== undefined) live.stopping = true
          await driver.suspend(this.#handle(r), this.#statePath(r))
          await driver.destroy(this.#handle(r))
          this.#live.delete(id)
          this.#set(id, { state: 'suspended', handle: null })
          break
        }
        case 'pause':
          this.#expect(r, ['running'], 'pause')
          await this.#driverFor(r.driver).pause(this.#handle(r))
          this.#set(id, { state: 'paused' })
          break
        case 'resume':
          this.#expect(r, ['paused', 'suspended'], 'resume')
          if (r.state === 'suspended') {
            await this.#admitAgain(r)
            await this.#startTask(r, this.#template(r), { restoreFrom: this.#statePath(r) })
            await rm(this.#statePath(r), { force: true })
          } else {
            await this.#driverFor(r.driver).resume(this.#handle(r))
            this.#set(id, { state: 'running' })
          }
          break
        case 'destroy':
          await mkdir(join(this.#init.instancesDir, id), { recursive: true })
          await writeFile(join(this.#init.instancesDir, id, DESTROYING_MARKER), '')
          await this.#destroy(r)
          return undefined
      }
      return this.view(id)
    })
  }

  /**
   * Sends running instance `id` to another host: first its disk if the plan says so (while it
   * runs), then its memory goes through the first of `channels` that connects, while it runs;
   * once all of it is there, `takeOver` asks the other host to run it, and only then does this
   * host end its VM. A disk that was not copied stays here, served to the new host. If anything
   * fails before the other host took over, the VM runs on here. Returns the channel used.
   */
  async migrateOut (id: string, channels: MigrationChannel[], disk: DiskPlan, onProgress: (p: MigrationProgress) => void, takeOver: () => Promise<void>): Promise<MigrationChannel> {
    return await this.#locks.run(id, async () => {
      const r = this.#get(id)
      this.#expect(r, ['running'], 'migrate')
      const driver = this.#migrator(r)
      if ((r.remoteDisk !== null) !== ('servedBy' in disk || 'backTo' in disk)) throw new XenosError('INVALID_STATE', `instance ${id}'s disk is ${r.remoteDisk === null ? 'here' : `served by host ${r.remoteDisk.host}`}: it cannot move with that disk plan`)
      const handle = this.#handle(r)
      let mirroring = false
      let used: MigrationChannel
      try {
        if ('copyTo' in disk) {
          mirroring = true
          await driver.mirrorDisk(handle, disk.copyTo, disk.onCopy)
        }
        used = await driver.migrate(handle, channels, onProgress)
        // The VM is paused for good and wrote its last: the copy is whole.
        if (mirroring) await driver.finishMirror(handle)
        mirroring = false
        await takeOver()
      } catch (err) {
        if (mirroring) await driver.dropMirror(handle).catch((e: unknown) => { this.#init.log.warn({ err: e, instance: id }, 'could not stop copying the disk') })
        await driver.cancelMigration(handle).catch((e: unknown) => { this.#init.log.error({ err: e, instance: id }, 'could not resume the VM after a failed migration') })
        throw err
      }
      const live = this.#live.get(id)
      if (live !== undefined) live.stopping = true
      const server = await driver.handOff(handle)
      this.#live.delete(id)
      this.#health.delete(id)
      this.#milestones.delete(id)
      const remote = r.remoteDisk
      // Its task, if it runs one, is the new host's to finish now.
      const forget = (): void => {
        this.#init.store.instances.remove(id)
        this.#init.store.tasks.remove(id)
      }
      if (remote !== null || server === null) {
        // The disk stays with the host that serves it, which serves it to the new host too.
        this.#init.store.transaction(forget)
        await rm(join(this.#init.instancesDir, id), { recursive: true, force: true })
        await this.#init.remoteDisks.detach(id)
        // Back on the disk's host, the instance uses the disk again: nothing to release.
        if (remote !== null && !('backTo' in disk)) void this.#init.remoteDisks.release(id, remote).catch((err: unknown) => { this.#init.log.warn({ err, instance: id, host: remote.host }, 'could not tell the host serving the disk that this host no longer uses it') })
      } else if ('serveTo' in disk) {
        this.#init.store.transaction(() => {
          this.#init.store.diskExports.put({ instanceId: id, owner: r.owner, peer: disk.serveTo.peer, token: disk.serveTo.token, server, createdAt: Date.now() })
          forget()
        })
      } else {
        // The new host has its own copy: nothing of the instance stays here.
        await driver.stopDisk(id, server).catch((e: unknown) => { this.#init.log.warn({ err: e, instance: id }, 'could not end the server of the disk the instance left behind') })
        this.#init.store.transaction(forget)
        await rm(join(this.#init.instancesDir, id), { recursive: true, force: true })
      }
      this.#init.onChange(id, undefined)
      return used
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

  /** The unix socket on which this host serves running instance `id`'s disk. */
  async diskSocket (id: string): Promise<string> {
    const r = this.#get(id)
    const driver = this.#migrator(r)
    return (await driver.serveDisk(id, join(this.#init.instancesDir, id), this.#stagedDisks(r), this.#handle(r).state.disk as Record<string, unknown> | undefined)).socket
  }

  /** The staged disks of instance `id` (see `StagedDisk`), which move with its disk; their size when they are here. */
  stagedDisks (id: string): Array<{ serial: string, readOnly: boolean, bytes?: number }> {
    return this.#stagedDisks(this.#get(id)).map(({ serial, readOnly, path }) => ({ serial, readOnly, ...path === undefined ? {} : { bytes: statSync(path).size } }))
  }

  /** The task instance `id` runs, which moves with it; undefined when it runs none. */
  movingTask (id: string): MovingTask | undefined {
    const t = this.#init.store.tasks.get(id)
    return t === undefined ? undefined : { inputs: t.inputs, outputsPrefix: t.outputsPrefix, keep: t.keep, createdAt: t.createdAt }
  }

  /**
   * Prepares instance `arriving` of `template` to arrive by migration from host `from`:
   * admission, ports, and a paused VM that waits as `incoming` says, on the disk `disk` says;
   * `task`, the task it runs, is recorded when it takes over. Returns the port the VM waits on.
   */
  async receive (template: Template, arriving: IncomingInstance, from: string, disk: ArrivingDisk, incoming: NonNullable<TaskSpec['incoming']>, task?: MovingTask): Promise<number> {
    const driver = this.#driverFor(template.manifest.driver)
    if (!canMigrate(driver)) throw new XenosError('INVALID_STATE', `the ${driver.name} driver cannot take over migrating instances`)
    let diskServer: Record<string, unknown> | undefined
    if ('home' in disk) {
      const served = this.#init.store.diskExports.forInstance(arriving.id).find(e => e.peer === from)
      if (served?.owner !== arriving.owner) throw new XenosError('FORBIDDEN', `this host serves no disk of instance ${arriving.id} to host ${from} for owner ${arriving.owner}`)
      diskServer = served.server
    }
    const record = await this.#locks.run('admission', async () => {
      if (this.has(arriving.id)) throw new XenosError('INVALID_STATE', `host ${this.#init.hostId} already holds instance ${arriving.id}`)
      this.#admit(template.manifest.resources, 1, template.manifest.name)
      const r = await this.#newRecord(template, driver, { ...arriving, remoteDisk: 'servedBy' in disk ? disk.servedBy : null })
      await mkdir(join(this.#init.instancesDir, r.id), { recursive: true })
      await writeFile(join(this.#init.instancesDir, r.id, INCOMING_MARKER), from)
      this.#init.store.instances.insert(r)
      if (task !== undefined) this.#arrivingTasks.set(r.id, task)
      return r
    })
    return await this.#locks.run(record.id, async () => {
      try {
        // Empty images, into which the source copies the staged disks with the disk.
        for (const s of 'copied' in disk ? disk.staged ?? [] : []) await createEmptyImage(join(this.#init.instancesDir, record.id, stagedImageFile(s.serial)), s.bytes)
        return driver.incomingPort(await this.#startTask(record, template, { incoming, diskServer }))
      } catch (err) {
        await this.#destroy(this.#get(record.id))
        throw err
      }
    })
  }

  /** The host instance `id` is arriving from; undefined unless it is arriving. */
  arrivingFrom (id: string): string | undefined {
    try {
      return readFileSync(join(this.#init.instancesDir, id, INCOMING_MARKER), 'utf8')
    } catch {
      return undefined
    }
  }

  /**
   * Runs an instance that has arrived: from here on this host owns it. One that came back to
   * its disk here stops being served to others: returns the tickets of those exports.
   */
  async takeOver (id: string): Promise<{ view: InstanceView, endedExports: string[] }> {
    return await this.#locks.run(id, async () => {
      const r = this.#get(id)
      if (!existsSync(join(this.#init.instancesDir, id, INCOMING_MARKER))) throw new XenosError('INVALID_STATE', `instance ${id} is not arriving here`)
      await this.#migrator(r).takeOver(this.#handle(r))
      await rm(join(this.#init.instancesDir, id, INCOMING_MARKER))
      const exports = this.#init.store.diskExports.forInstance(id)
      const task = this.#arrivingTasks.get(id)
      this.#init.store.transaction(() => {
        this.#init.store.diskExports.remove(id)
        if (task !== undefined) {
          this.#init.store.tasks.insert({
            ...task, id, owner: r.owner, templateId: r.templateId, state: 'running', exitCode: null, error: null, outputs: [], refused: [], collectingAt: null, endedAt: null,
          })
        }
        this.#set(id, { state: 'running' })
      })
      this.#arrivingTasks.delete(id)
      return { view: this.view(id), endedExports: exports.map(e => e.token) }
    })
  }

  /** Gives up an instance that was arriving: nothing of it stays. */
  async abandon (id: string): Promise<void> {
    await this.#locks.run(id, async () => {
      const r = this.#init.store.instances.get(id)
      if (r === undefined || !existsSync(join(this.#init.instancesDir, id, INCOMING_MARKER))) return
      const live = this.#live.get(id)
      if (live !== undefined) live.stopping = true
      await this.#destroy(r)
    })
  }

  /** A snapshot holds an instance's memory and own disk, not its staged ones. */
  #refuseIfStaged (r: InstanceRecord, action: string): void {
    if (this.#stagedDisks(r).length > 0) throw new XenosError('INVALID_STATE', `cannot ${action} instance ${r.id}: it has staged inputs or outputs, which a snapshot cannot hold yet; deploy another instance with the same inputs instead`)
  }

  /** Its staged disks: images in its directory, or, for a disk another host serves, what that host serves with it. */
  #stagedDisks (r: InstanceRecord): StagedDisk[] {
    if (r.remoteDisk !== null) return r.remoteDisk.staged ?? []
    return stagedImagesIn(join(this.#init.instancesDir, r.id))
  }

  #refuseIfMoving (id: string, action: string): void {
    if (this.#moving.has(id)) throw new XenosError('INVALID_STATE', `cannot ${action} instance ${id}: it is migrating to another host`)
  }

  #migrator (r: InstanceRecord): MigratingDriver {
    const d = this.#driverFor(r.driver)
    if (!canMigrate(d)) throw new XenosError('INVALID_STATE', `instance ${r.id} runs on the ${r.driver} driver, which cannot migrate`)
    return d
  }

  /**
   * Host `peer` no longer uses the disk this host serves it for instance `id`. When it was the
   * newest host served (the instance ended there), the disk ends: no host needs it any more.
   * Returns the tickets of the exports that ended.
   */
  async releaseExport (id: string, peer: string): Promise<string[]> {
    return await this.#locks.run(`export/${id}`, async () => {
      const exports = this.#init.store.diskExports.forInstance(id)
      const released = exports.find(e => e.peer === peer)
      if (released === undefined) {
        if (exports.length === 0) return []
        throw new XenosError('FORBIDDEN', `the disk of instance ${id} is not served to host ${peer}`)
      }
      // An instance that came back here runs on the disk: it stays whatever the others say.
      if (released !== exports.at(-1) || this.has(id)) {
        this.#init.store.diskExports.remove(id, peer)
        return [released.token]
      }
      await this.#driverFor('qemu').stopDisk?.(id, released.server)
      this.#init.store.diskExports.remove(id)
      await rm(join(this.#init.instancesDir, id), { recursive: true, force: true })
      return exports.map(e => e.token)
    })
  }

  /**
   * Serves the disk of instance `id`, which this host serves to host `from`, to host `to` too:
   * the instance moves on from `from` to `to`, and its disk stays here. `issue` makes the ticket
   * to the disk server's socket. Returns the ticket.
   */
  async shareExport (id: string, from: string, to: string, issue: (socket: string) => string): Promise<string> {
    return await this.#locks.run(`export/${id}`, async () => {
      const exports = this.#init.store.diskExports.forInstance(id)
      const current = exports.find(e => e.peer === from)
      if (current === undefined) throw new XenosError('FORBIDDEN', `the disk of instance ${id} is not served to host ${from}, which cannot hand it on`)
      const socket = exportSocket(current.server)
      if (socket === undefined) throw new XenosError('INVALID_STATE', `the server of instance ${id}'s disk has no socket`)
      const token = issue(socket)
      // Newest of all, even within the same millisecond: the host the instance is arriving at.
      const createdAt = Math.max(Date.now(), ...exports.map(e => e.createdAt + 1))
      this.#init.store.diskExports.put({ ...current, peer: to, token, createdAt })
      return token
    })
  }

  /** Stops serving instance `id`'s disk to `peer`, where host `from` (also served it) failed to move it; returns the ticket that ended. */
  async recallExport (id: string, from: string, peer: string): Promise<string | undefined> {
    return await this.#locks.run(`export/${id}`, async () => {
      const exports = this.#init.store.diskExports.forInstance(id)
      if (!exports.some(e => e.peer === from)) throw new XenosError('FORBIDDEN', `the disk of instance ${id} is not served to host ${from}`)
      const recalled = exports.find(e => e.peer === peer && peer !== from)
      if (recalled === undefined) return undefined
      this.#init.store.diskExports.remove(id, peer)
      return recalled.token
    })
  }

  /** The unix sockets of the disks this host serves to other hosts, with the tickets that reach them. */
  exportedDisks (): Array<{ peer: string, token: string, socket: string }> {
    return this.#init.store.diskExports.list().flatMap(e => {
      const socket = exportSocket(e.server)
      return socket === undefined ? [] : [{ peer: e.peer, token: e.token, socket }]
    })
  }

  /** The services instance `id` reaches at addresses its host sets up (which move with it). */
  linksOf (id: string): ServiceLink[] {
    return this.#get(id).links.map(({ name, target, endpoint }) => ({ name, target, ...endpoint === undefined ? {} : { endpoint } }))
  }

  /** Why instance `id` may run here, as signed (null for an instance from before placements). */
  placementOf (id: string): Placement | null {
    return this.#get(id).placement
  }

  /** The host serving instance `id`'s disk, when not this one. */
  remoteDiskOf (id: string): RemoteDisk | null {
    return this.#get(id).remoteDisk
  }

  /** Whether instance `id` is being moved away from this host. */
  isMoving (id: string): boolean {
    return this.#moving.has(id)
  }

  /** Where on this host clients reach the TCP endpoints of running instance `id`. */
  tcpEndpoints (id: string): Array<{ name: string, address: string, port: number }> {
    const r = this.#get(id)
    if (r.state !== 'running') throw new XenosError('INVALID_STATE', `instance ${id} is ${r.state}, not running`)
    return r.ports.filter(p => p.protocol !== 'udp').map(p => ({ name: p.name, address: this.#init.advertiseAddress, port: p.hostPort }))
  }

  has (id: string): boolean {
    return this.#init.store.instances.get(id) !== undefined
  }

  list (): InstanceView[] {
    return this.#init.store.instances.list().map(r => this.#toView(r))
  }

  view (id: string): InstanceView {
    return this.#toView(this.#get(id))
  }

  async metrics (id: string): Promise<InstanceMetrics> {
    const r = this.#get(id)
    const base = { id, host: this.#init.hostId, state: r.state, sampledAt: Date.now() }
    if (!ACTIVE_STATES.has(r.state) || r.handle === null) return { ...base, cpuSeconds: 0, memoryBytes: 0, uptimeSeconds: 0 }
    const s = await this.#driverFor(r.driver).stats(r.handle)
    return { ...base, cpuSeconds: s.cpuSeconds, memoryBytes: s.memoryBytes, uptimeSeconds: Math.max(0, (Date.now() - s.startedAt) / 1000) }
  }

  async logs (id: string, lines: number): Promise<string> {
    const r = this.#get(id)
    const driver = this.#init.drivers.get(r.driver)
    return driver === undefined ? '' : await driver.logTail(r.handle ?? { id, driver: r.driver, state: {} }, lines)
  }

  /** A new instance's record, `creating`, with host ports of its own (none of `pending`, ports of records not written yet). */
  async #newRecord (template: Template, driver: Driver, o: IncomingInstance & { remoteDisk: RemoteDisk | null }, pending = new Set<number>()): Promise<InstanceRecord> {
    const ports = await this.#assignPorts(template, [], pending)
    for (const p of ports) pending.add(p.hostPort)
    // A process reaches its links on loopback ports, fixed now: its environment names them.
    const links: InstanceLink[] = []
    for (const l of o.links) {
      if (driver.capabilities().links === 'path') {
        links.push(l)
        continue
      }
      const port = await allocatePort('127.0.0.1', this.#takenPorts(pending))
      pending.add(port)
      links.push({ ...l, port })
    }
    return {
      ...o,
      links,
      templateId: template.id,
      state: 'creating',
      driver: driver.name,
      handle: null,
      ports,
      resources: template.manifest.resources,
      error: null,
      exitCode: null,
      updatedAt: o.createdAt,
    }
  }

  /** Throws ADMISSION_REFUSED unless `count` instances of `name`, each wanting `want`, fit in what is free. */
  #admit (want: Resources, count: number, name: string): void {
    if (this.#draining) throw new XenosError('ADMISSION_REFUSED', `host ${this.#init.hostId} is being drained and takes no instances: deploy elsewhere`)
    const free = this.free()
    if (want.cpu * count > free.cpu + 1e-9 || want.memory * count > free.memory) {
      throw new XenosError('ADMISSION_REFUSED',
        `host ${this.#init.hostId} has ${free.cpu} CPU and ${free.memory} MiB free; ${count} × ${name} needs ${round(want.cpu * count)} CPU and ${want.memory * count} MiB. Deploy elsewhere or stop instances here.`)
    }
  }

  /**
   * Admits an instance that held no resources (stopped, ended, suspended) and is starting again:
   * it counts as `creating` from here on, so that no other admission can take its room.
   */
  async #admitAgain (r: InstanceRecord): Promise<void> {
    await this.#locks.run('admission', async () => {
      this.#admit(r.resources, 1, r.name)
      this.#set(r.id, { state: 'creating', error: null })
    })
  }

  /** Where a suspended instance's saved state lives. */
  #statePath (r: InstanceRecord): string {
    return join(this.#init.instancesDir, r.id, 'suspended.state')
  }

  /** Starts the instance's task: booting, or from saved state, or to wait for a migrating VM (see `TaskSpec`). */
  async #startTask (r: InstanceRecord, template: Template, from: Pick<TaskSpec, 'restoreFrom' | 'incoming' | 'diskServer'> = {}): Promise<TaskHandle> {
    const { restoreFrom, incoming, diskServer } = from
    const driver = this.#driverFor(r.driver)
    const ports = await this.#assignPorts(template, r.ports)
    this.#set(r.id, { state: 'creating', ports, error: null, exitCode: null })
    const dir = join(this.#init.instancesDir, r.id)
    await mkdir(dir, { recursive: true })
    try {
      const handle = await driver.start({
        id: r.id,
        dir,
        command: template.manifest.command,
        env: template.manifest.env,
        ports,
        resources: r.resources,
        bindAddress: this.#init.advertiseAddress,
        image: template.manifest.image,
        restoreFrom,
        incoming,
        diskServer,
        remoteDisk: r.remoteDisk === null ? undefined : await this.#init.remoteDisks.attach(r.id, r.remoteDisk),
        disks: this.#stagedDisks(r),
        outbound: template.manifest.network === 'outbound',
        links: await this.#init.links.open(r),
      })
      // An arriving VM waits paused, still `creating`, until it takes over.
      this.#set(r.id, { state: incoming === undefined ? 'running' : 'creating', handle })
      this.#watch(r.id, driver, handle)
      return handle
    } catch (err) {
      const tail = await driver.logTail({ id: r.id, driver: r.driver, state: { log: join(dir, 'console.log') } }, LOG_TAIL_LINES).catch(() => '')
      this.#set(r.id, { state: 'failed', handle: null, error: withTail((err as Error).message, tail) })
      throw err
    }
  }

  async #stopTask (r: InstanceRecord): Promise<void> {
    const live = this.#live.get(r.id)
    if (live !== undefined) live.stopping = true
    const driver = this.#driverFor(r.driver)
    const handle = this.#handle(r)
    await driver.stop(handle, this.#init.stopTimeoutMs)
    await driver.destroy(handle)
    this.#live.delete(r.id)
  }

  async #destroy (r: InstanceRecord): Promise<void> {
    // An instance that never finished arriving leaves its disk to the host it was coming from;
    // one that was coming back to its disk here leaves it served to that host.
    const arriving = existsSync(join(this.#init.instancesDir, r.id, INCOMING_MARKER))
    const home = arriving && this.#init.store.diskExports.forInstance(r.id).length > 0
    const driver = this.#init.drivers.get(r.driver)
    if (driver !== undefined) {
      const live = this.#live.get(r.id)
      if (live !== undefined) live.stopping = true
      if (arriving) await this.#discardArrival(driver, r, home)
      // Without a handle (the host stopped while starting it) the driver still finds what it started by the id.
      else await this.#cleanup(driver, r.handle ?? { id: r.id, driver: r.driver, state: {} })
    }
    this.#live.delete(r.id)
    this.#health.delete(r.id)
    this.#milestones.delete(r.id)
    this.#arrivingTasks.delete(r.id)
    // The record goes before the directory: a host that stops in between finds the marker and no record.
    this.#init.store.instances.remove(r.id)
    this.#init.onChange(r.id, undefined)
    if (home) await rm(join(this.#init.instancesDir, r.id, INCOMING_MARKER), { force: true })
    else await rm(join(this.#init.instancesDir, r.id), { recursive: true, force: true })
    if (r.remoteDisk !== null) await this.#init.remoteDisks.detach(r.id)
    if (r.remoteDisk !== null && !arriving) {
      await this.#init.remoteDisks.release(r.id, r.remoteDisk).catch((err: unknown) => { this.#init.log.warn({ err, instance: r.id, host: r.remoteDisk?.host }, 'could not release the disk the instance used remotely') })
    }
  }

  /**
   * Ends a VM that was arriving by migration without ever letting it run (a stop would resume it
   * first): the host it came from may be running it again, on the same disk. A disk of its own
   * made here goes with it; its own disk that this host kept serving (`home`) stays.
   */
  async #discardArrival (driver: Driver, r: InstanceRecord, home: boolean): Promise<void> {
    const handle = r.handle ?? { id: r.id, driver: r.driver, state: {} }
    try {
      // Quit through its monitor; without a handle, killed by its id.
      if (r.handle !== null && driver.handOff !== undefined) await driver.handOff(r.handle)
      else await driver.stop(handle, 0)
      if (!home) await driver.destroy(handle)
    } catch (err) {
      this.#init.log.warn({ err, instance: r.id }, 'could not end a VM that was arriving')
    }
  }

  async #cleanup (driver: Driver, handle: TaskHandle): Promise<void> {
    await driver.stop(handle, this.#init.stopTimeoutMs).catch((err: unknown) => { this.#init.log.warn({ err, instance: handle.id }, 'stop during cleanup failed') })
    await driver.destroy(handle).catch((err: unknown) => { this.#init.log.warn({ err, instance: handle.id }, 'destroy during cleanup failed') })
  }

  #watch (id: string, driver: Driver, handle: TaskHandle): void {
    const live: LiveTask = { handle, stopping: false }
    this.#live.set(id, live)
    driver.wait(handle).then(async exit => {
      await this.#locks.run(id, async () => { await this.#onExit(id, driver, live, exit) })
    }, (err: unknown) => { this.#init.log.error({ err, instance: id }, 'waiting for the task failed') })
  }

  async #onExit (id: string, driver: Driver, live: LiveTask, exit: TaskExit): Promise<void> {
    if (live.stopping || this.#live.get(id) !== live) return
    this.#live.delete(id)
    const r = this.#init.store.instances.get(id)
    if (r !== undefined && existsSync(join(this.#init.instancesDir, id, INCOMING_MARKER))) {
      // A VM that was arriving and ended (its source gave up): nothing of it stays here.
      this.#init.log.info({ instance: id, exit }, 'an arriving instance ended before it took over')
      await this.#destroy(r)
      return
    }
    const tail = await driver.logTail(live.handle, LOG_TAIL_LINES).catch(() => '')
    await driver.destroy(live.handle).catch(() => {})
    const how = exit.signal !== null ? `killed by ${exit.signal}` : exit.code === null ? 'ended' : `exited with code ${exit.code}`
    const state: InstanceState = exit.code === 0 ? 'exited' : 'failed'
    this.#set(id, { state, error: state === 'exited' ? null : withTail(`the task ${how}`, tail), exitCode: exit.code })
    this.#init.log.info({ instance: id, exit }, 'task ended')
  }

  /** Host ports instances and their links hold, and `pending` ones. */
  #takenPorts (pending: ReadonlySet<number>): Set<number> {
    return new Set([...pending, ...this.#init.store.instances.list().flatMap(r => [...r.ports.map(p => p.hostPort), ...r.links.flatMap(l => l.port ?? [])])])
  }

  async #assignPorts (template: Template, previous: InstanceRecord['ports'], pending: ReadonlySet<number> = new Set()): Promise<InstanceRecord['ports']> {
    const taken = this.#takenPorts(pending)
    const out: InstanceRecord['ports'] = []
    for (const spec of template.manifest.ports) {
      const before = previous.find(p => p.name === spec.name)
      const hostPort = before !== undefined && await isPortFree(this.#init.advertiseAddress, before.hostPort)
        ? before.hostPort
        : await allocatePort(this.#init.advertiseAddress, taken)
      taken.add(hostPort)
      out.push({ ...spec, hostPort })
    }
    return out
  }

  #set (id: string, change: Parameters<Store['instances']['update']>[1]): void {
    if (change.state !== undefined && change.state !== 'running') {
      this.#health.delete(id)
      this.#milestones.delete(id)
    }
    const r = this.#init.store.instances.update(id, change)
    this.#init.onChange(id, r)
  }

  #get (id: string): InstanceRecord {
    const r = this.#init.store.instances.get(id)
    if (r === undefined) throw new XenosError('INSTANCE_NOT_FOUND', `no instance ${id} on host ${this.#init.hostId}`)
    return r
  }

  #template (r: InstanceRecord): Template {
    const t = this.#init.store.templates.get(r.templateId)
    if (t === undefined) throw new XenosError('TEMPLATE_NOT_FOUND', `template ${r.templateId} of instance ${r.id} is missing on this host`)
    return t
  }

  #handle (r: InstanceRecord): TaskHandle {
    if (r.handle === null) throw new XenosError('INVALID_STATE', `instance ${r.id} has no running task`)
    return r.handle
  }

  #driverFor (name: string): Driver {
    const driver = this.#init.drivers.get(name)
    if (driver === undefined) throw new XenosError('DRIVER_UNAVAILABLE', `driver "${name}" is not enabled on host ${this.#init.hostId}; start xenosd with --driver ${name}`)
    return driver
  }

  #expect (r: InstanceRecord, states: readonly InstanceState[], action: string): void {
    if (!states.includes(r.state)) {
      throw new XenosError('INVALID_STATE', `cannot ${action} instance ${r.id}: it is ${r.state} (${action} needs ${states.join(' or ')})`)
    }
  }

  #toView (r: InstanceRecord): InstanceView {
    const t = this.#init.store.templates.get(r.templateId)
    const view: InstanceView = {
      id: r.id,
      name: r.name,
      template: r.templateId,
      templateName: t === undefined ? '' : `${t.manifest.name}:${t.manifest.version}`,
      host: this.#init.hostId,
      state: r.state,
      owner: r.owner,
      endpoints: ACTIVE_STATES.has(r.state) ? r.ports.map(p => ({ name: p.name, url: `${p.protocol}://${this.#init.advertiseAddress}:${p.hostPort}` })) : [],
      services: r.state === 'running' ? this.#health.get(r.id) ?? [] : [],
      resources: r.resources,
      createdAt: r.createdAt,
      updatedAt: r.updatedAt,
    }
    const m = r.state === 'running' ? this.#milestones.get(r.id) : undefined
    if (m?.bootedAt !== undefined) view.bootedAt = m.bootedAt
    if (m?.healthyAt !== undefined) view.healthyAt = m.healthyAt
    if (r.error !== null) view.error = r.error
    if (r.exitCode !== null) view.exitCode = r.exitCode
    return view
  }
}

const MIGRATION_METHODS = ['incomingPort', 'migrate', 'cancelMigration', 'takeOver', 'handOff', 'serveDisk', 'stopDisk', 'mirrorDisk', 'finishMirror', 'dropMirror'] as const
type MigratingDriver = Driver & Required<Pick<Driver, typeof MIGRATION_METHODS[number]>>

function canMigrate (d: Driver): d is MigratingDriver {
  return d.capabilities().migrate && MIGRATION_METHODS.every(m => d[m] !== undefined)
}

/** The file in an instance's directory that holds the staged disk with serial `serial`. */
function stagedImageFile (serial: string): string {
  const image = STAGED_IMAGES.find(s => s.serial === serial)
  if (image === undefined) throw new XenosError('INVALID_ARGUMENT', `no staged disk has serial ${serial}`)
  return image.file
}

/** The staged disks whose images are in instance directory `dir`. */
function stagedImagesIn (dir: string): StagedDisk[] {
  return STAGED_IMAGES.flatMap(s => existsSync(join(dir, s.file)) ? [{ serial: s.serial, readOnly: s.readOnly, path: join(dir, s.file) }] : [])
}

/** Where a disk server (opaque driver state) listens. */
function exportSocket (server: Record<string, unknown>): string | undefined {
  return typeof server.socket === 'string' ? server.socket : undefined
}

function withTail (message: string, tail: string): string {
  return tail.trim() === '' ? message : `${message}; last output:\n${tail}`
}

function round (n: number): number {
  return Math.round(n * 1000) / 1000
}

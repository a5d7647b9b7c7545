import { existsSync } from 'node:fs'
import { copyFile, mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import {
  ACTIVE_STATES, newInstanceId, newSnapshotId, XenosError,
  type ControlAction, type Driver, type InstanceMetrics, type InstanceState, type InstanceView, type Resources, type ServiceStatus, type TaskExit, type TaskHandle, type Template,
} from '../core/index.ts'
import type { InstanceRecord, SnapshotRecord, Store } from '../store/index.ts'
import { checkService, checkTargets, HEALTH_INTERVAL_MS, HEALTH_PENDING_FOR_MS, HEALTH_PENDING_INTERVAL_MS, statusOf } from './health.ts'
import { KeyedLock } from './locks.ts'
import { allocatePort, isPortFree } from './ports.ts'

export interface SupervisorInit {
  store: Pick<Store, 'instances' | 'templates' | 'snapshots'>
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
  /** Called after every change to an instance; `undefined` record means it was destroyed. */
  onChange: (id: string, record: InstanceRecord | undefined) => void
}

/** An instance's task as this process knows it; replaced on every (re)start. */
interface LiveTask {
  handle: TaskHandle
  stopping: boolean
}

const LOG_TAIL_LINES = 20

/**
 * Runs this host's instances: admission, ports, starting and stopping through the driver,
 * persisting every state change, noticing tasks that end by themselves, and re-attaching to
 * running tasks after a restart. Authorisation happens before any call reaches it.
 */
export class InstanceSupervisor {
  readonly #init: SupervisorInit
  readonly #locks = new KeyedLock()
  readonly #live = new Map<string, LiveTask>()
  readonly #health = new Map<string, ServiceStatus[]>()
  /** When each running instance booted and became healthy, and was last checked (this host's clock). */
  readonly #milestones = new Map<string, { since: number, bootedAt?: number, healthyAt?: number, checkedAt: number }>()
  #healthTimer: NodeJS.Timeout | undefined

  constructor (init: SupervisorInit) {
    this.#init = init
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

  /** Settles every persisted instance after a (re)start of the host. */
  async recover (): Promise<void> {
    for (const r of this.#init.store.instances.list()) {
      const driver = this.#init.drivers.get(r.driver)
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
        await driver.destroy(r.handle).catch(() => {})
        this.#set(r.id, { state: 'failed', error: withTail('the task ended while xenosd was not running', tail) })
        continue
      }
      this.#set(r.id, { state: status })
      this.#watch(r.id, driver, r.handle)
      this.#init.log.info({ instance: r.id, state: status }, 're-attached to instance')
    }
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
    const used = this.used()
    const { capacity } = this.#init
    return { cpu: round(capacity.cpu - used.cpu), memory: capacity.memory - used.memory }
  }

  /** Saves a running or paused VM's memory and disk as a snapshot new instances can start from. */
  async snapshot (id: string): Promise<SnapshotRecord> {
    return await this.#locks.run(id, async () => {
      const r = this.#get(id)
      this.#expect(r, ['running', 'paused'], 'snapshot')
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
      const disk = join(this.#init.instancesDir, id, 'disk.qcow2')
      if (!existsSync(disk)) throw new XenosError('INVALID_STATE', `instance ${id} has no disk of its own (it does not run in a VM)`)
      return await fn(disk, this.#template(r))
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

  /** Creates and starts `count` instances of a template held locally (from a snapshot of it, if given). */
  async create (template: Template, owner: string, name: string | undefined, count: number, snapshot?: SnapshotRecord): Promise<InstanceView[]> {
    const driver = this.#driverFor(template.manifest.driver)
    const records = await this.#locks.run('admission', async () => {
      const want = template.manifest.resources
      const free = this.free()
      if (want.cpu * count > free.cpu + 1e-9 || want.memory * count > free.memory) {
        throw new XenosError('ADMISSION_REFUSED',
          `host ${this.#init.hostId} has ${free.cpu} CPU and ${free.memory} MiB free; ${count} × ${template.manifest.name} needs ${round(want.cpu * count)} CPU and ${want.memory * count} MiB. Deploy elsewhere or stop instances here.`)
      }
      const out: InstanceRecord[] = []
      for (let i = 0; i < count; i++) {
        const now = Date.now()
        const id = newInstanceId()
        const record: InstanceRecord = {
          id,
          name: name === undefined ? `${template.manifest.name}-${id.slice(2, 8)}` : count > 1 ? `${name}-${i + 1}` : name,
          templateId: template.id,
          owner,
          state: 'creating',
          driver: driver.name,
          handle: null,
          ports: await this.#assignPorts(template, []),
          resources: template.manifest.resources,
          error: null,
          createdAt: now,
          updatedAt: now,
        }
        this.#init.store.instances.insert(record)
        this.#init.onChange(id, record)
        out.push(record)
      }
      return out
    })
    return await Promise.all(records.map(async r => await this.#locks.run(r.id, async () => {
      if (snapshot === undefined) {
        await this.#startTask(r, template)
      } else {
        // The new instance starts from the snapshot's memory with its own copy of the snapshot's disk.
        await mkdir(join(this.#init.instancesDir, r.id), { recursive: true })
        await copyFile(join(this.snapshotDir(snapshot.id), 'disk.qcow2'), join(this.#init.instancesDir, r.id, 'disk.qcow2'))
        await this.#startTask(r, template, join(this.snapshotDir(snapshot.id), 'state'))
      }
      return this.view(r.id)
    })))
  }

  async control (id: string, action: ControlAction): Promise<InstanceView | undefined> {
    return await this.#locks.run(id, async () => {
      const r = this.#get(id)
      switch (action) {
        case 'start':
          this.#expect(r, ['stopped', 'exited', 'failed'], 'start')
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
            await this.#startTask(r, this.#template(r), this.#statePath(r))
            await rm(this.#statePath(r), { force: true })
          } else {
            await this.#driverFor(r.driver).resume(this.#handle(r))
            this.#set(id, { state: 'running' })
          }
          break
        case 'destroy':
          await this.#destroy(r)
          return undefined
      }
      return this.view(id)
    })
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

  /** Where a suspended instance's saved state lives. */
  #statePath (r: InstanceRecord): string {
    return join(this.#init.instancesDir, r.id, 'suspended.state')
  }

  async #startTask (r: InstanceRecord, template: Template, restoreFrom?: string): Promise<void> {
    const driver = this.#driverFor(r.driver)
    const ports = await this.#assignPorts(template, r.ports)
    this.#set(r.id, { state: 'creating', ports, error: null })
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
      })
      this.#set(r.id, { state: 'running', handle })
      this.#watch(r.id, driver, handle)
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
    const driver = this.#init.drivers.get(r.driver)
    if (driver !== undefined && r.handle !== null) {
      const live = this.#live.get(r.id)
      if (live !== undefined) live.stopping = true
      await this.#cleanup(driver, r.handle)
    }
    this.#live.delete(r.id)
    this.#health.delete(r.id)
    this.#milestones.delete(r.id)
    await rm(join(this.#init.instancesDir, r.id), { recursive: true, force: true })
    this.#init.store.instances.remove(r.id)
    this.#init.onChange(r.id, undefined)
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
    const tail = await driver.logTail(live.handle, LOG_TAIL_LINES).catch(() => '')
    await driver.destroy(live.handle).catch(() => {})
    const how = exit.signal !== null ? `killed by ${exit.signal}` : exit.code === null ? 'ended' : `exited with code ${exit.code}`
    const state: InstanceState = exit.code === 0 ? 'exited' : 'failed'
    this.#set(id, { state, error: state === 'exited' ? null : withTail(`the task ${how}`, tail) })
    this.#init.log.info({ instance: id, exit }, 'task ended')
  }

  async #assignPorts (template: Template, previous: InstanceRecord['ports']): Promise<InstanceRecord['ports']> {
    const taken = new Set(this.#init.store.instances.list().flatMap(r => r.ports.map(p => p.hostPort)))
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

  #expect (r: InstanceRecord, states: InstanceState[], action: string): void {
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
    return view
  }
}

function withTail (message: string, tail: string): string {
  return tail.trim() === '' ? message : `${message}; last output:\n${tail}`
}

function round (n: number): number {
  return Math.round(n * 1000) / 1000
}

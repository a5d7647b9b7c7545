import { randomBytes } from 'node:crypto'
import { mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import pino, { type Logger } from 'pino'
import { checkDataPath, parseDataUri, XenosError, type Driver, type Fingerprint, type InstanceView, type NameRecord, type Resources, type Template } from '../core/index.ts'
import { buildInputImage, DataRepository, type StagedFile } from '../data/index.ts'
import { detectCgroups, DEFAULT_TASK_UID, processDriver, qemuDriver } from '../hypervisor/index.ts'
import { BlobStore, NameRegistry, TemplateLibrary } from '../images/index.ts'
import { serveChunks, Tunnels } from '../transfer/index.ts'
import { loadOrCreateHostKey, Overlay } from '../overlay/index.ts'
import { openStore, type InstanceRecord, type RemoteDisk, type Store } from '../store/index.ts'
import { Cloud } from './cloud.ts'
import type { DeployInput } from './rpc-schemas.ts'
import { DataAccess } from './data-access.ts'
import { Outputs } from './outputs.ts'
import { Tasks } from './tasks.ts'
import { defaultAdvertiseAddress, defaultCapacity, defaultRunDir, hostOptionsSchema, incomingMigrationAddress, hostTag, type HostOptions, type HostOptionsInput } from './options.ts'
import { RequestVerifier } from './replay.ts'
import { Migrations } from './migration.ts'
import { ServiceProxy } from './service-proxy.ts'
import { InstanceSupervisor } from './supervisor.ts'

export const XENOS_VERSION = '0.1.0'
/** Gossip topic on which template name records travel. */
const NAMES_TOPIC = 'xenos/names/1'

/** What admission control lets instances hold: the host's capacity times its overcommit. */
function admitted (capacity: Resources, overcommit: Resources): Resources {
  return { cpu: capacity.cpu * overcommit.cpu, memory: Math.floor(capacity.memory * overcommit.memory) }
}

/**
 * One Xenos host, composed from the pieces in the other folders: state, overlay, template
 * library, drivers, the instance supervisor and the cloud router. `start` recovers instances
 * and joins the overlay; `stop` leaves it and closes the store, leaving instances running.
 */
export class Host {
  readonly options: HostOptions
  readonly log: Logger
  readonly store: Store
  readonly overlay: Overlay
  readonly library: TemplateLibrary
  readonly names: NameRegistry
  readonly drivers: ReadonlyMap<string, Driver>
  readonly blobs: BlobStore
  /** Drivers whose fingerprint was healthy at start: the ones this host advertises. */
  readonly fingerprints = new Map<string, Fingerprint>()
  readonly supervisor: InstanceSupervisor
  readonly cloud: Cloud
  readonly tunnels: Tunnels
  readonly migrations: Migrations
  readonly data: DataRepository
  readonly dataAccess: DataAccess
  readonly outputs: Outputs
  readonly tasks: Tasks
  /** Checks owners' signatures on requests, once each. */
  readonly verifier = new RequestVerifier()
  readonly services: ServiceProxy
  readonly capacity: Resources
  readonly advertiseAddress: string
  /** Set by the API once it listens. */
  apiUrl = ''
  #hostAdvertTimer: NodeJS.Timeout | undefined
  #started = false

  private constructor (base: Pick<Host, 'options' | 'log' | 'store' | 'overlay' | 'drivers' | 'blobs' | 'capacity' | 'advertiseAddress'>) {
    this.options = base.options
    this.blobs = base.blobs
    this.log = base.log
    this.store = base.store
    this.overlay = base.overlay
    this.drivers = base.drivers
    this.capacity = base.capacity
    this.advertiseAddress = base.advertiseAddress
    this.library = new TemplateLibrary(this.store, this.blobs)
    this.names = new NameRegistry(this.store)
    this.overlay.share(NAMES_TOPIC, {
      receive: record => {
        try {
          return this.names.accept(record).changed
        } catch (err) {
          this.log.debug({ err }, 'name record from a peer refused')
          return undefined
        }
      },
      digest: () => this.names.digest(),
      newerThan: have => this.names.newerThan(have),
    })
    this.tunnels = new Tunnels(this.overlay.node, this.log.child({ component: 'tunnels' }))
    const verifier = this.verifier
    // The supervisor reaches remote disks through the migrations, which need the supervisor.
    const remoteDisks = {
      attach: async (id: string, disk: RemoteDisk) => await this.migrations.attach(id, disk),
      detach: async (id: string) => { await this.migrations.detach(id) },
      release: async (id: string, disk: RemoteDisk) => { await this.migrations.release(id, disk) },
    }
    this.supervisor = new InstanceSupervisor({
      store: this.store,
      drivers: this.drivers,
      instancesDir: join(this.options.dataDir, 'instances'),
      hostId: this.overlay.peerId,
      advertiseAddress: this.advertiseAddress,
      capacity: this.capacity,
      stopTimeoutMs: this.options.stopTimeoutMs,
      log: this.log.child({ component: 'supervisor' }),
      remoteDisks,
      onChange: (id, record) => { this.#instanceChanged(id, record) },
    })
    this.cloud = new Cloud({
      overlay: this.overlay,
      library: this.library,
      names: this.names,
      supervisor: this.supervisor,
      blobs: this.blobs,
      store: this.store,
      verifier,
      stageInputs: async (owner, inputs) => await this.#stageInputs(owner, inputs),
      tasks: {
        recordFor: (instance, params) => this.tasks.recordFor(instance, params),
        announce: async id => { await this.tasks.announce(id) },
      },
      onTemplateAdded: t => { void this.#advertiseTemplate(t) },
      log: this.log.child({ component: 'cloud' }),
    })
    this.services = new ServiceProxy({
      overlay: this.overlay,
      supervisor: this.supervisor,
      forwardGraceMs: this.options.forwardGraceMs,
      store: this.store,
      log: this.log.child({ component: 'services' }),
    })
    this.migrations = new Migrations({
      overlay: this.overlay,
      onTakenOver: (id, to) => { this.services.moved(id, to) },
      onLeft: async (id, endpoints) => { await this.services.forward(id, endpoints) },
      onArrived: async id => { if (this.store.tasks.get(id) !== undefined) await this.tasks.announce(id) },
      onDraining: () => { void this.#advertiseHost() },
      tunnels: this.tunnels,
      supervisor: this.supervisor,
      fetcher: this.cloud.fetcher,
      verifier,
      runDir: join(this.options.runDir ?? defaultRunDir(this.options.dataDir), 'tunnels'),
      incomingAddress: this.options.directMigration ? incomingMigrationAddress(this.options.listen) : null,
      log: this.log.child({ component: 'migration' }),
    })
    this.data = new DataRepository({
      store: this.store,
      blobs: this.blobs,
      uploadsDir: join(this.options.dataDir, 'uploads'),
      quotaBytes: this.options.dataQuotaBytes,
      hostId: this.overlay.peerId,
      onStored: file => { void this.dataAccess.announce(file) },
    })
    this.dataAccess = new DataAccess({
      overlay: this.overlay,
      repository: this.data,
      fetcher: this.cloud.fetcher,
      blobs: this.blobs,
      log: this.log.child({ component: 'data' }),
    })
    this.outputs = new Outputs({
      overlay: this.overlay,
      supervisor: this.supervisor,
      repository: this.data,
      verifier,
      workDir: this.#stagingDir,
    })
    this.tasks = new Tasks({
      overlay: this.overlay,
      store: this.store,
      supervisor: this.supervisor,
      outputs: this.outputs,
      verifier,
      log: this.log.child({ component: 'tasks' }),
    })
  }

  static async create (input: HostOptionsInput, log?: Logger): Promise<Host> {
    const parsed = hostOptionsSchema.safeParse(input)
    if (!parsed.success) {
      const issue = parsed.error.issues[0]
      throw new XenosError('INVALID_ARGUMENT', `bad host option ${issue?.path.join('.') ?? ''}: ${issue?.message ?? ''}`)
    }
    const options = parsed.data
    const logger = log ?? pino({ level: options.logLevel, base: null })
    await mkdir(join(options.dataDir, 'instances'), { recursive: true, mode: 0o700 })
    const store = openStore(join(options.dataDir, 'state.db'))
    const overlay = await Overlay.create({
      privateKey: await loadOrCreateHostKey(join(options.dataDir, 'host.key')),
      listen: options.listen,
      bootstrap: options.bootstrap,
      mdns: options.mdns,
      advertTtlMs: options.advertTtlMs,
      log: logger.child({ component: 'overlay' }),
    })
    const blobs = new BlobStore(join(options.dataDir, 'blobs'))
    const cgroups = await detectCgroups(undefined, `xenos-${hostTag(options.dataDir)}`)
    const drivers = new Map<string, Driver>()
    if (options.drivers.includes('process')) {
      drivers.set('process', processDriver({ cgroups, uid: DEFAULT_TASK_UID, gid: DEFAULT_TASK_UID }))
    }
    if (options.drivers.includes('qemu')) {
      drivers.set('qemu', qemuDriver({ cgroups, blobPath: d => blobs.path(d), runDir: options.runDir ?? defaultRunDir(options.dataDir), qemu: 'qemu-system-x86_64', accel: options.accel }))
    }
    return new Host({
      options,
      log: logger,
      store,
      overlay,
      drivers,
      blobs,
      capacity: admitted(options.capacity ?? defaultCapacity(), options.overcommit),
      advertiseAddress: options.advertiseAddress ?? defaultAdvertiseAddress(options.listen),
    })
  }

  async start (): Promise<void> {
    for (const [name, driver] of this.drivers) {
      const fp = await driver.fingerprint()
      this.fingerprints.set(name, fp)
      if (!fp.healthy) this.log.warn({ driver: name, detail: fp.detail }, 'driver unavailable')
    }
    await this.tunnels.start()
    await this.services.start()
    await this.supervisor.recover()
    await this.data.recover()
    // Disks of inputs a deploy was building when the host stopped, and outputs being collected.
    await rm(this.#stagingDir, { recursive: true, force: true })
    await this.tasks.recover()
    this.migrations.reissue()
    this.supervisor.startHealthChecks()
    this.cloud.serve()
    this.migrations.serve()
    this.dataAccess.serve()
    this.outputs.serve()
    this.tasks.serve()
    await serveChunks(this.overlay.node, this.blobs, this.log.child({ component: 'transfer' }))
    await this.overlay.start()
    this.#started = true
    for (const t of this.library.list()) await this.#advertiseTemplate(t)
    for (const r of this.store.instances.list()) this.#instanceChanged(r.id, r)
    await this.#advertiseHost()
    void this.dataAccess.announceAll()
    void this.tasks.announceAll()
    this.log.info({ peerId: this.overlay.peerId, addrs: this.overlay.multiaddrs() }, 'host started')
  }

  /** Leaves the overlay and closes the store; instances keep running and are re-attached on the next start. */
  async stop (): Promise<void> {
    clearTimeout(this.#hostAdvertTimer)
    this.supervisor.stopHealthChecks()
    await this.services.stop()
    await this.overlay.stop()
    await this.blobs.close()
    this.store.close()
  }

  async importTemplate (manifest: Template['manifest']): Promise<Template> {
    const missing = await this.library.missingBlobs(manifest)
    if (missing.length > 0) {
      throw new XenosError('BAD_MANIFEST', `this host lacks ${missing.length} of the template's image files (${missing.join(', ')}): upload them first, as "xenos template build" does`)
    }
    await this.library.verifyImage(manifest)
    const t = this.library.add(manifest)
    await this.#advertiseTemplate(t)
    return t
  }

  /** Keeps a name record signed by its owner and spreads it to every host. */
  async publishName (record: unknown): Promise<{ record: NameRecord, changed: boolean }> {
    const accepted = this.names.accept(record)
    if (accepted.changed) await this.overlay.broadcast(NAMES_TOPIC, accepted.record)
    return accepted
  }

  /**
   * Builds the read-only disk of a deploy's inputs: each file, here or fetched from the host that
   * holds it, read with `owner`'s rights (the deploy's signer, who must have signed each input).
   */
  async #stageInputs (owner: string, inputs: DeployInput[]): Promise<string> {
    const files: StagedFile[] = []
    for (const input of inputs) {
      if (input.auth.owner !== owner) throw new XenosError('FORBIDDEN', `input ${input.uri} is signed by another key than the deploy: sign both with the same key`)
      const signed = parseDataUri(input.uri)
      // A file appears at /in/NAME; a directory's files at /in/DIR/… (NAME, DIR: the last segment).
      const name = signed.path.slice(signed.path.lastIndexOf('/') + 1)
      for (const relative of input.files ?? ['']) {
        const ref = relative === '' ? signed : { owner: signed.owner, path: checkDataPath(`${signed.path}/${relative}`) }
        const { file, blobPath } = await this.dataAccess.content(owner, input.auth, ref, signed)
        files.push({ name: relative === '' ? name : `${name}/${relative}`, path: blobPath, size: file.size })
      }
    }
    const image = join(this.#stagingDir, `${randomBytes(8).toString('hex')}.img`)
    await mkdir(this.#stagingDir, { recursive: true })
    await buildInputImage(files, image)
    return image
  }

  /** Where the disks of inputs are built, before instances link them. */
  get #stagingDir (): string {
    return join(this.options.dataDir, 'staging')
  }

  /** Removes a template no instance or snapshot here uses, and the image files only it needed. */
  async removeTemplate (id: string): Promise<{ id: string, blobsRemoved: number, bytesFreed: number }> {
    this.library.remove(id)
    await this.overlay.withdraw('template', id)
    const { removed, bytes } = await this.blobs.gc(new Set([...this.library.blobsInUse(), ...this.data.blobsInUse()]))
    this.log.info({ template: id, blobs: removed.length, bytes }, 'template removed')
    return { id, blobsRemoved: removed.length, bytesFreed: bytes }
  }

  info (): { id: string, name: string, addrs: string[], api: string, drivers: string[], capacity: Resources, free: Resources, instances: number, version: string } {
    return {
      id: this.overlay.peerId,
      name: this.options.name ?? this.overlay.peerId.slice(-8),
      addrs: this.overlay.multiaddrs(),
      api: this.apiUrl,
      drivers: [...this.fingerprints].filter(([, fp]) => fp.healthy).map(([name]) => name),
      capacity: this.capacity,
      free: this.supervisor.free(),
      instances: this.supervisor.list().length,
      version: XENOS_VERSION,
    }
  }

  async #advertiseHost (): Promise<void> {
    if (!this.#started) return
    const { name, addrs, api, drivers, capacity, free, instances, version } = this.info()
    await this.overlay.publish('host', this.overlay.peerId, { name, addrs, api: api === '' ? 'http://0.0.0.0/' : api, drivers, capacity, free, instances, version })
  }

  async #advertiseTemplate (t: Template): Promise<void> {
    if (!this.#started) return
    const m = t.manifest
    const body = {
      name: m.name,
      version: m.version,
      driver: m.driver,
      tags: m.tags,
      resources: m.resources,
      ports: m.ports.map(p => ({ name: p.name, protocol: p.protocol })),
      ...(m.description === undefined ? {} : { description: m.description }),
    }
    await this.overlay.publish('template', t.id, body)
  }

  #instanceChanged (id: string, record: InstanceRecord | undefined): void {
    if (!this.#started) return
    this.tasks.instanceChanged(id, record)
    if (record === undefined) {
      void this.overlay.withdraw('instance', id)
    } else {
      const view: InstanceView = this.supervisor.view(id)
      const tags = this.library.get(record.templateId)?.manifest.tags ?? {}
      void this.overlay.publish('instance', id, {
        name: view.name,
        template: view.template,
        templateName: view.templateName,
        owner: view.owner,
        state: view.state,
        endpoints: view.endpoints,
        services: view.services.filter(s => s.registered).map(s => ({ name: s.name, health: s.health })),
        tags,
        resources: view.resources,
        createdAt: view.createdAt,
      })
    }
    // Free capacity changed: tell the others soon, coalescing bursts of changes.
    clearTimeout(this.#hostAdvertTimer)
    this.#hostAdvertTimer = setTimeout(() => { void this.#advertiseHost() }, 50)
  }
}

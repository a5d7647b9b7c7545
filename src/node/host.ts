import { chmod, mkdir, rm, statfs } from 'node:fs/promises'
import { join } from 'node:path'
import pino, { type Logger } from 'pino'
import { canMigrate, XENOS_VERSION, XenosError, type Driver, type Fingerprint, type AdvertOf, type InstanceBody, type InstanceView, type NameRecord, type OwnerKey, type Placement, type Resources, type Template } from '../core/index.ts'
import { DataRepository } from '../data/index.ts'
import { detectCgroups, DEFAULT_TASK_UID, processDriver, qemuDriver, type Cgroups } from '../hypervisor/index.ts'
import { BlobStore, NameRegistry, TemplateFetcher, TemplateLibrary } from '../images/index.ts'
import { Auctioneer, Bank } from '../market/index.ts'
import { serveChunks, Tunnels } from '../transfer/index.ts'
import { loadOrCreateHostKey, Overlay } from '../overlay/index.ts'
import { loadOrCreateOwnerKey, openStore, type InstanceRecord, type Store } from '../store/index.ts'
import { TemplateCatalog } from './catalog.ts'
import { Deployer, InputStager, Replicas } from './deploy/index.ts'
import { Banking } from './banking.ts'
import { Bidder } from './bidder.ts'
import { Bidding } from './bidding.ts'
import { BlobTickets } from './blob-tickets.ts'
import { DataAccess } from './data-access.ts'
import { Outputs } from './outputs.ts'
import { Quotas } from './quotas.ts'
import { Tasks } from './tasks.ts'
import { Templates } from './templates.ts'
import { HostTrust } from './trust.ts'
import { defaultAdvertiseAddress, defaultCapacity, defaultRunDir, hostOptionsSchema, incomingMigrationAddress, hostTag, type HostOptions, type HostOptionsInput } from './options.ts'
import { RequestVerifier } from './replay.ts'
import { Checkpoints, Deployments, Places } from './deployments/index.ts'
import { InstanceSupervisor } from './instances/index.ts'
import { DiskExports, Draining, Migrations, RemoteDiskTunnels } from './migration/index.ts'
import { HostMetrics } from './metrics.ts'
import { InstanceRouter } from './router.ts'
import { ServiceProxy } from './service-proxy.ts'

/** Gossip topic on which template name records travel. */
const NAMES_TOPIC = 'xenos/names/1'
/** The operator's key, made with the data dir when no operator is named. */
export const OPERATOR_KEY_FILE = 'operator.pem'
/** Where a host that runs a bank keeps the bank's key. */
export const BANK_KEY_FILE = 'bank.pem'
/** The key of a host's escrow account, into which bids are paid and out of which their refunds and earnings go. */
export const ESCROW_KEY_FILE = 'escrow.pem'
/** The key of a host's bidder: owners name it in the allowances under which it spends their budgets. */
export const AGENT_KEY_FILE = 'agent.pem'
/** Share of the data dir's file system owners' data may take when no limit is set. */
const DEFAULT_HOST_QUOTA_SHARE = 0.8
/** How often what nothing needs (image files, template names) is looked for. */
const COLLECT_EVERY_MS = 10 * 60_000

/** What admission control lets instances hold: the host's capacity times its overcommit. */
function admitted (capacity: Resources, overcommit: Resources): Resources {
  return { cpu: capacity.cpu * overcommit.cpu, memory: Math.floor(capacity.memory * overcommit.memory) }
}

/** The keys that operate a host: those named, or the one kept in its data dir (made on first start). */
async function operatorsOf (options: HostOptions): Promise<Set<string>> {
  if (options.operators.length > 0) return new Set(options.operators)
  return new Set([(await loadOrCreateOwnerKey(join(options.dataDir, OPERATOR_KEY_FILE))).key.id])
}

interface HostBase extends Pick<Host, 'options' | 'log' | 'store' | 'overlay' | 'drivers' | 'blobs' | 'capacity' | 'advertiseAddress'> {
  operators: Set<string>
  hostQuotaBytes: number
  /** The key of the bank this host runs, if it runs one. */
  bankKey: OwnerKey | undefined
  escrowKey: OwnerKey
  agentKey: OwnerKey
  cgroups: Cgroups | undefined
  /** CPUs the host offers (before overcommit): the market sells shares of them. */
  offeredCpu: number
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
  readonly fetcher: TemplateFetcher
  readonly catalog: TemplateCatalog
  readonly router: InstanceRouter
  readonly deployer: Deployer
  readonly replicas: Replicas
  /** Instances other hosts' deployments place here. */
  readonly places: Places
  /** The deployments (descriptions) this host supervises. */
  readonly deployments: Deployments
  readonly templates: Templates
  readonly tunnels: Tunnels
  readonly migrations: Migrations
  readonly draining: Draining
  /** The disks this host serves to hosts its instances moved to. */
  readonly diskExports: DiskExports
  readonly data: DataRepository
  readonly dataAccess: DataAccess
  /** Builds the disks of inputs for deploys and for instances placed under deployments. */
  readonly #inputs: InputStager
  readonly checkpoints: Checkpoints
  /** Tickets this host gives to the hosts that may fetch a data file's or a checkpoint's blobs. */
  readonly #tickets = new BlobTickets()
  readonly outputs: Outputs
  readonly tasks: Tasks
  /** Checks signatures on requests (once each) and who may ask what. */
  readonly verifier: RequestVerifier
  /** The bank this host deals with: its own, or the one its operator accepts. */
  readonly banking: Banking
  /** The market here: bids, the shares they buy, and what ended bids pay out. */
  readonly bidding: Bidding
  readonly bidder: Bidder
  readonly trust = new HostTrust()
  readonly metrics = new HostMetrics()
  readonly services: ServiceProxy
  readonly capacity: Resources
  readonly advertiseAddress: string
  /** Set by the API once it listens. */
  apiUrl = ''
  #hostAdvertTimer: NodeJS.Timeout | undefined
  #collectTimer: NodeJS.Timeout | undefined
  #started = false

  private constructor (base: HostBase) {
    this.options = base.options
    this.blobs = base.blobs
    this.log = base.log
    this.store = base.store
    this.overlay = base.overlay
    this.drivers = base.drivers
    this.capacity = base.capacity
    this.advertiseAddress = base.advertiseAddress
    this.verifier = new RequestVerifier({ hostId: this.overlay.peerId, operators: base.operators, nonces: this.store.nonces })
    this.library = new TemplateLibrary(this.store, this.blobs)
    this.names = new NameRegistry(this.store, { known: id => this.#templateKnown(id) })
    this.overlay.share(NAMES_TOPIC, {
      receive: record => {
        try {
          return this.names.accept(record).changed
        } catch (err) {
          this.log.debug({ err }, 'name record from a peer refused')
          return undefined
        }
      },
      digest: (after, limit) => this.names.digest(after, limit),
      pick: (keys, maxBytes) => this.names.pick(keys, maxBytes),
      version: key => this.names.version(key),
      hasRoomFor: key => this.names.hasRoomFor(key),
    })
    const bank = base.bankKey === undefined
      ? undefined
      : new Bank({ ledger: this.store.ledger, key: base.bankKey, operators: [...base.operators], startingGrant: this.options.bankGrant, log: this.log.child({ component: 'bank' }) })
    const banks = [...this.options.acceptBanks, ...bank === undefined ? [] : [bank.id]]
    this.banking = new Banking({ overlay: this.overlay, bank, accepted: banks, verifier: this.verifier })
    this.bidding = new Bidding({
      overlay: this.overlay,
      auctioneer: new Auctioneer({ bids: this.store.bids, escrow: base.escrowKey.id, earnings: this.verifier.operators[0] ?? base.escrowKey.id, banks, floor: this.options.marketFloor, cpu: base.offeredCpu }),
      bids: this.store.bids,
      escrow: base.escrowKey,
      banking: this.banking,
      cgroups: base.cgroups,
      instances: () => this.store.instances.list(),
      verifier: this.verifier,
      marketOnly: this.options.marketOnly,
      onPriceChange: () => { this.#advertiseHostSoon() },
      log: this.log.child({ component: 'market' }),
    })
    this.bidder = new Bidder({
      key: base.agentKey,
      budgets: this.store.budgets,
      banking: this.banking,
      bidding: this.bidding,
      advertised: () => new Map((this.overlay.search({ kind: 'host' }) as Array<AdvertOf<'host'>>).map(h => [h.host, h.body.price ?? 0])),
      log: this.log.child({ component: 'bidder' }),
    })
    this.tunnels = new Tunnels(this.overlay.node, this.log.child({ component: 'tunnels' }))
    const verifier = this.verifier
    const runDir = this.options.runDir ?? defaultRunDir(this.options.dataDir)
    const remoteDisks = new RemoteDiskTunnels({ overlay: this.overlay, tunnels: this.tunnels, runDir: join(runDir, 'tunnels') })
    this.supervisor = new InstanceSupervisor({
      store: this.store,
      drivers: this.drivers,
      instancesDir: join(this.options.dataDir, 'instances'),
      snapshotsDir: join(this.options.dataDir, 'snapshots'),
      hostId: this.overlay.peerId,
      advertiseAddress: this.advertiseAddress,
      capacity: this.capacity,
      stopTimeoutMs: this.options.stopTimeoutMs,
      log: this.log.child({ component: 'supervisor' }),
      remoteDisks,
      links: { open: async r => await this.services.openLinks(r) },
      onChange: (id, record) => { this.#instanceChanged(id, record) },
      market: id => this.bidding.view(id),
    })
    this.fetcher = new TemplateFetcher({
      overlay: this.overlay,
      library: this.library,
      blobs: this.blobs,
      manifestFrom: async (host, id) => {
        await this.overlay.learnHost(host)
        return await this.overlay.rpc.call(host, 'template.get', { id })
      },
      onTemplateAdded: t => { void this.#advertiseTemplate(t) },
      log: this.log.child({ component: 'fetcher' }),
    })
    this.fetcher.on('done', t => { this.metrics.pulled(t.error, (Date.now() - t.startedAt) / 1000, t.size) })
    this.overlay.rpc.observe(o => { this.metrics.rpc(o) })
    this.catalog = new TemplateCatalog({ overlay: this.overlay, library: this.library, names: this.names })
    this.router = new InstanceRouter({
      overlay: this.overlay,
      library: this.library,
      catalog: this.catalog,
      supervisor: this.supervisor,
      blobs: this.blobs,
      store: this.store,
      verifier,
      onTemplateAdded: t => { void this.#advertiseTemplate(t) },
      log: this.log.child({ component: 'router' }),
    })
    const quotas = new Quotas({ store: this.store, perOwnerBytes: this.options.dataQuotaBytes, perHostBytes: base.hostQuotaBytes, hostId: this.overlay.peerId })
    this.data = new DataRepository({
      store: this.store,
      blobs: this.blobs,
      uploadsDir: join(this.options.dataDir, 'uploads'),
      quota: (owner, bytes, what) => { quotas.check(owner, bytes, what) },
      hostId: this.overlay.peerId,
      onStored: file => { void this.dataAccess.announce(file) },
      onRemoved: () => { void this.#collect() },
    })
    this.dataAccess = new DataAccess({
      overlay: this.overlay,
      repository: this.data,
      fetcher: this.fetcher,
      blobs: this.blobs,
      verifier,
      tickets: this.#tickets,
      collect: async () => { await this.#collect() },
      log: this.log.child({ component: 'data' }),
    })
    this.#inputs = new InputStager({ data: this.dataAccess, dir: this.#stagingDir })
    this.templates = new Templates({
      hostId: this.overlay.peerId,
      library: this.library,
      blobs: this.blobs,
      store: this.store,
      fetcher: this.fetcher,
      verifier,
      quotas,
      dataBlobs: () => new Set([...this.data.blobsInUse(), ...this.dataAccess.relayed(), ...this.fetcher.pulling(), ...this.checkpoints.held()]),
      advertise: async t => { await this.#advertiseTemplate(t) },
      withdraw: async id => { await this.overlay.withdraw('template', id) },
      log: this.log.child({ component: 'templates' }),
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
      repository: this.data,
      verifier,
      log: this.log.child({ component: 'tasks' }),
    })
    this.deployer = new Deployer({
      overlay: this.overlay,
      fetcher: this.fetcher,
      supervisor: this.supervisor,
      store: this.store,
      verifier,
      trust: this.trust,
      inputs: this.#inputs,
      tasks: this.tasks,
      market: this.bidding,
      onDeployed: (result, seconds) => { this.metrics.deployed(result, seconds) },
      log: this.log.child({ component: 'deploy' }),
    })
    this.services = new ServiceProxy({
      overlay: this.overlay,
      supervisor: this.supervisor,
      verifier,
      linksDir: join(runDir, 'links'),
      forwardGraceMs: this.options.forwardGraceMs,
      store: this.store,
      log: this.log.child({ component: 'services' }),
    })
    this.diskExports = new DiskExports({
      store: this.store,
      records: this.supervisor.moves.records,
      driver: [...this.drivers.values()].find(canMigrate),
      tunnels: this.tunnels,
    })
    this.migrations = new Migrations({
      overlay: this.overlay,
      onTakenOver: (id, to) => { this.services.moved(id, to) },
      onLeft: async (id, endpoints) => { await this.services.forward(id, endpoints) },
      onArrived: async id => { if (this.store.tasks.get(id) !== undefined) await this.tasks.announce(id) },
      onMoved: (result, seconds, downtimeSeconds) => { this.metrics.migrated(result, seconds, downtimeSeconds) },
      tunnels: this.tunnels,
      supervisor: this.supervisor,
      store: this.store,
      remoteDisks,
      exports: this.diskExports,
      fetcher: this.fetcher,
      verifier,
      runDir: join(runDir, 'tunnels'),
      incomingAddress: this.options.directMigration ? incomingMigrationAddress(this.options.listen) : null,
      log: this.log.child({ component: 'migration' }),
    })
    this.replicas = new Replicas({ overlay: this.overlay, verifier, supervisor: this.supervisor, deployer: this.deployer, migrations: this.migrations })
    this.places = new Places({ overlay: this.overlay, supervisor: this.supervisor, store: this.store, fetcher: this.fetcher, catalog: this.catalog, verifier, inputs: this.#inputs, tasks: this.tasks })
    this.checkpoints = new Checkpoints({
      overlay: this.overlay,
      places: this.places,
      snapshots: this.supervisor.snapshots,
      store: this.store,
      blobs: this.blobs,
      tickets: this.#tickets,
      fetcher: this.fetcher,
      catalog: this.catalog,
      log: this.log.child({ component: 'checkpoints' }),
    })
    this.deployments = new Deployments({
      overlay: this.overlay,
      store: this.store,
      supervisor: this.supervisor,
      places: this.places,
      checkpoints: this.checkpoints,
      catalog: this.catalog,
      deployer: this.deployer,
      verifier,
      log: this.log.child({ component: 'deployments' }),
    })
    this.draining = new Draining({
      overlay: this.overlay,
      supervisor: this.supervisor,
      migrations: this.migrations,
      verifier,
      onDraining: () => { void this.#advertiseHost() },
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
    // Whatever made the directory: only this host reads its keys, state, blobs and instances.
    await chmod(options.dataDir, 0o700)
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
    const offeredCpu = (options.capacity ?? defaultCapacity()).cpu
    // All instances together use at most what the host offers: shares are of that.
    await cgroups?.capAll(offeredCpu).catch((err: unknown) => { logger.warn({ err }, 'cannot cap the CPU all instances use together: shares are of the whole machine') })
    const runDir = options.runDir ?? defaultRunDir(options.dataDir)
    const drivers = new Map<string, Driver>()
    if (options.drivers.includes('process')) {
      drivers.set('process', processDriver({ cgroups, uid: DEFAULT_TASK_UID, gid: DEFAULT_TASK_UID, hidden: [options.dataDir, runDir] }))
    }
    if (options.drivers.includes('qemu')) {
      drivers.set('qemu', qemuDriver({ cgroups, blobPath: d => blobs.path(d), runDir, qemu: 'qemu-system-x86_64', accel: options.accel, guestOutbound: options.guestOutbound }))
    }
    const fs = await statfs(options.dataDir)
    return new Host({
      options,
      log: logger,
      store,
      overlay,
      drivers,
      blobs,
      operators: await operatorsOf(options),
      bankKey: options.bank ? (await loadOrCreateOwnerKey(join(options.dataDir, BANK_KEY_FILE))).key : undefined,
      escrowKey: (await loadOrCreateOwnerKey(join(options.dataDir, ESCROW_KEY_FILE))).key,
      agentKey: (await loadOrCreateOwnerKey(join(options.dataDir, AGENT_KEY_FILE))).key,
      cgroups,
      offeredCpu,
      hostQuotaBytes: options.hostQuotaBytes ?? Math.floor(fs.blocks * fs.bsize * DEFAULT_HOST_QUOTA_SHARE),
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
    const destroyed = await this.supervisor.recover()
    await this.diskExports.recover()
    await this.data.recover()
    // Disks of inputs a deploy was building when the host stopped, and outputs being collected.
    await rm(this.#stagingDir, { recursive: true, force: true })
    await this.tasks.recover()
    this.supervisor.health.start()
    this.catalog.serve(this.overlay.rpc)
    this.router.serve()
    this.deployer.serve()
    this.replicas.serve()
    this.places.serve()
    this.checkpoints.serve()
    this.deployments.serve()
    this.migrations.serve()
    this.dataAccess.serve()
    this.outputs.serve()
    this.tasks.serve()
    this.banking.serve()
    this.bidding.serve()
    await serveChunks(this.overlay.node, this.blobs, this.log.child({ component: 'transfer' }), {
      // Every host may fetch a template's files; a data file's or a checkpoint's only the host its holder gave a ticket.
      admit: (blob, peer, ticket) => this.library.blobsInUse().has(blob) || this.fetcher.isPulling(blob) || this.#tickets.admits(blob, peer, ticket),
    })
    await this.overlay.start()
    this.#started = true
    for (const t of this.library.list()) await this.#advertiseTemplate(t)
    for (const r of this.store.instances.list()) this.#instanceChanged(r.id, r)
    // Destroyed as the host stopped: copies of their adverts may live on in the DHT.
    for (const r of destroyed) if (r.placement !== null) await this.overlay.withdraw('instance', r.id, this.#instanceBody(r, r.placement))
    await this.#advertiseHost()
    // What deployments were doing when the host stopped goes on.
    this.deployments.recover()
    this.deployments.start()
    this.bidding.start()
    this.bidder.start()
    void this.dataAccess.announceAll()
    void this.tasks.announceAll()
    this.#collectTimer = setInterval(() => { void this.#sweep() }, COLLECT_EVERY_MS)
    this.#collectTimer.unref()
    this.log.info({ peerId: this.overlay.peerId, addrs: this.overlay.multiaddrs(), operators: this.verifier.operators }, 'host started')
  }

  /** Leaves the overlay and closes the store; instances keep running and are re-attached on the next start. */
  async stop (): Promise<void> {
    clearTimeout(this.#hostAdvertTimer)
    clearInterval(this.#collectTimer)
    this.supervisor.health.stop()
    this.bidding.stop()
    this.bidder.stop()
    this.deployments.stop()
    await this.services.stop()
    await this.overlay.stop()
    await this.blobs.close()
    this.store.close()
  }

  /** Removes image files nothing needs (and uploads of image files no template used in time). */
  async #collect (): Promise<void> {
    await this.templates.collect().catch((err: unknown) => { this.log.warn({ err }, 'could not remove image files nothing needs') })
  }

  /** What is kept only while something needs it: image files (see `#collect`) and template names whose templates no host holds. */
  async #sweep (): Promise<void> {
    const dropped = this.names.sweep()
    if (dropped > 0) this.log.info({ names: dropped }, 'dropped template names whose templates no host has held for a while')
    await this.#collect()
  }

  /** Keeps a name record signed by its owner and spreads it to every host. */
  async publishName (record: unknown): Promise<{ record: NameRecord, changed: boolean }> {
    const accepted = this.names.accept(record)
    if (accepted.changed) await this.overlay.broadcast(NAMES_TOPIC, accepted.record)
    return accepted
  }

  /** Whether template `id` is here or advertised by a live host: a name may only point at such. */
  #templateKnown (id: string): boolean {
    return this.library.get(id) !== undefined || this.overlay.cache.get('template', id) !== undefined
  }

  /** Where the disks of inputs are built, before instances link them. */
  get #stagingDir (): string {
    return join(this.options.dataDir, 'staging')
  }

  info (): { id: string, name: string, addrs: string[], api: string, drivers: string[], capacity: Resources, free: Resources, instances: number, version: string, operators: string[], tags: Record<string, string>, bank?: string, escrow: string, agent: string, price: number } {
    return {
      id: this.overlay.peerId,
      name: this.options.name ?? this.overlay.peerId.slice(-8),
      addrs: this.overlay.multiaddrs(),
      api: this.apiUrl,
      drivers: [...this.fingerprints].filter(([, fp]) => fp.healthy).map(([name]) => name),
      capacity: this.capacity,
      free: this.supervisor.admission.free(),
      instances: this.supervisor.list().length,
      version: XENOS_VERSION,
      operators: [...this.verifier.operators],
      tags: this.options.tags,
      ...this.banking.own === undefined ? {} : { bank: this.banking.own },
      escrow: this.bidding.escrow,
      agent: this.bidder.agent,
      price: this.bidding.price(),
    }
  }

  async #advertiseHost (): Promise<void> {
    if (!this.#started) return
    const { name, addrs, api, drivers, capacity, free, instances, version, operators, tags, bank, escrow, price } = this.info()
    await this.overlay.publish('host', this.overlay.peerId, { name, addrs, api: api === '' ? 'http://0.0.0.0/' : api, drivers, capacity, free, instances, version, operators, tags, ...bank === undefined ? {} : { bank }, escrow, price })
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

  /** What this host advertises of an instance: what its view shows anyone, and why it runs here. */
  #instanceBody (record: InstanceRecord, placement: Placement, view?: InstanceView): InstanceBody {
    const t = this.library.get(record.templateId)
    return {
      name: record.name,
      template: record.templateId,
      templateName: view?.templateName ?? (t === undefined ? '' : `${t.manifest.name}:${t.manifest.version}`),
      owner: record.owner,
      state: record.state,
      endpoints: view?.endpoints ?? [],
      services: view?.services.filter(s => s.registered).map(s => ({ name: s.name, health: s.health })) ?? [],
      tags: t?.manifest.tags ?? {},
      resources: record.resources,
      createdAt: record.createdAt,
      placement,
    }
  }

  #instanceChanged (id: string, record: InstanceRecord | undefined): void {
    this.services.instanceChanged(id, record)
    if (this.supervisor.arrivingFrom(id) === undefined) this.metrics.instanceChanged(id, record?.state)
    if (!this.#started) return
    this.tasks.instanceChanged(id, record)
    // An instance from before placements were signed cannot show why it runs here: it is not
    // advertised; nor one still arriving, which runs on the host it comes from until it takes over.
    if (record === undefined || record.placement === null) {
      void this.overlay.withdraw('instance', id)
    } else if (this.supervisor.arrivingFrom(id) === undefined) {
      void this.overlay.publish('instance', id, this.#instanceBody(record, record.placement, this.supervisor.view(id)))
    }
    this.bidding.changed(id, record)
    this.#advertiseHostSoon()
  }

  /** Free capacity or the price changed: tell the others soon, coalescing bursts of changes. */
  #advertiseHostSoon (): void {
    clearTimeout(this.#hostAdvertTimer)
    this.#hostAdvertTimer = setTimeout(() => { void this.#advertiseHost() }, 50)
  }
}

import type { Logger } from 'pino'
import { rm } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { z } from 'zod'
import {
  isTemplateUri, parseTemplateUri, verifyAction, XenosError,
  type AdvertOf, type ControlAction, type InstanceMetrics, type InstanceView, type RequestAuth, type Resources, type Template,
} from '../core/index.ts'
import { deriveDisk, tailoredManifest, type BlobStore, type NameRegistry, type TemplateLibrary } from '../images/index.ts'
import type { InstanceRecord, SnapshotRecord, Store, TaskRecord } from '../store/index.ts'
import type { Overlay } from '../overlay/index.ts'
import { TemplateFetcher } from './fetcher.ts'
import type { RequestVerifier } from './replay.ts'
import {
  instanceMetricsSchema, instanceViewSchema, rpcControlSchema, rpcDeploySchema, rpcInstanceSchema, rpcLogsSchema, rpcSnapshotSchema, rpcTemplateGetSchema,
  snapshotViewSchema, deployReplySchema, deployStatusSchema, rpcDeployStatusSchema, rpcDeriveSchema, templateSummarySchema,
  type DeployInput, type DeployParams, type DeployStatus, type DeployTiming, type DeriveParams,
} from './rpc-schemas.ts'
import { bootPhase, Rollout, untilHealthy, type HostRollout } from './rollout.ts'
import { checkTaskParams } from './tasks.ts'
import type { InstanceSupervisor } from './supervisor.ts'
import { callHost, hostOfInstance } from './remote.ts'

export interface CloudInit {
  overlay: Pick<Overlay, 'peerId' | 'rpc' | 'search' | 'lookup' | 'lookupName' | 'learnHost' | 'node' | 'provide' | 'findProviders'>
  library: TemplateLibrary
  names: NameRegistry
  blobs: BlobStore
  store: Pick<Store, 'snapshots' | 'tasks'>
  supervisor: InstanceSupervisor
  verifier: RequestVerifier
  /** Builds the read-only disk of a deploy's inputs for `owner`; returns its path, to remove once the instances link it. */
  stageInputs: (owner: string, inputs: DeployInput[]) => Promise<string>
  /** The task record of a new instance of a task deploy (kept with the instance's); told once the instance exists. */
  tasks: { recordFor: (instance: InstanceRecord, params: DeployParams) => TaskRecord | undefined, announce: (id: string) => Promise<void> }
  /** Called when a template arrives from a peer, so this host advertises it too. */
  onTemplateAdded: (t: Template) => void
  log: Logger
}

/** A template as search and resolution show it. */
export interface TemplateSummary {
  id: string
  name: string
  version: string
  driver: string
  tags: Record<string, string>
  resources: Resources
  /** Hosts that advertise holding it. */
  hosts: string[]
}

export interface DeployResult {
  instances: InstanceView[]
  failures: Array<{ host: string, code: string, message: string }>
  hosts: HostRollout[]
}

export interface DeployOptions {
  /** Wait until the instances boot and pass their health checks. */
  wait?: boolean
  waitMs?: number
  /** Sees every host's part as it changes: phase, and progress while fetching. */
  onProgress?: (parts: HostRollout[]) => void
}

/** A host's part of a deploy may include pulling a large template. */
const DEPLOY_TIMEOUT_MS = 30 * 60_000
const DEFAULT_WAIT_MS = 5 * 60_000
const CONTROL_TIMEOUT_MS = 60_000
/** How often a watched deploy asks each host where it is. */
const STATUS_EVERY_MS = 300

/**
 * The cloud as one host sees it: resolves templates, places deployments on hosts with room,
 * and sends every action on an instance to the host that runs it. The host that runs an
 * instance is the one that checks the owner's signature; this host only relays.
 */
export class Cloud {
  readonly #init: CloudInit
  readonly fetcher: TemplateFetcher
  /** This host's parts of deploys under way, by the owner and nonce that signed them. */
  readonly #deploying = new Map<string, { template: string, phase: NonNullable<DeployStatus['phase']> }>()

  constructor (init: CloudInit) {
    this.#init = init
    this.fetcher = new TemplateFetcher({
      overlay: init.overlay,
      library: init.library,
      blobs: init.blobs,
      manifestFrom: async (host, id) => await this.#call(host, 'template.get', { id }),
      onTemplateAdded: init.onTemplateAdded,
      log: init.log,
    })
  }

  get #self (): string {
    return this.#init.overlay.peerId
  }

  /** Registers the RPC methods through which other hosts reach this one. */
  serve (): void {
    const { rpc } = this.#init.overlay
    rpc.handle('template.get', rpcTemplateGetSchema, async ({ id }) => {
      const t = this.#init.library.get(id)
      if (t === undefined) throw new XenosError('TEMPLATE_NOT_FOUND', `host ${this.#self} does not hold template ${id}`)
      return t.manifest
    })
    rpc.handle('instance.deploy', rpcDeploySchema, async req => await this.deployHere(req.template, req.params, req.auth, req.count))
    rpc.handle('deploy.status', rpcDeployStatusSchema, async req => this.#deployStatus(req.owner, req.nonce))
    rpc.handle('instance.control', rpcControlSchema, async req => await this.#controlHere(req.id, req.action, req.auth) ?? null)
    rpc.handle('instance.get', rpcInstanceSchema, async ({ id }) => this.#init.supervisor.view(id))
    rpc.handle('instance.metrics', rpcInstanceSchema, async ({ id }) => await this.#init.supervisor.metrics(id))
    rpc.handle('instance.logs', rpcLogsSchema, async req => await this.#logsHere(req.id, req.lines, req.auth))
    rpc.handle('instance.snapshot', rpcSnapshotSchema, async req => await this.#snapshotHere(req.id, req.auth))
    rpc.handle('instance.derive', rpcDeriveSchema, async req => await this.derive(req.id, req.params, req.auth))
  }

  /**
   * Finds a template by `template://owner/name/tag`, id, id prefix, `name` or `name:version`:
   * locally, in the advert cache, then in the DHT.
   */
  async resolveTemplate (ref: string): Promise<TemplateSummary> {
    if (isTemplateUri(ref)) {
      const record = this.#init.names.resolve(parseTemplateUri(ref))
      if (record === undefined) throw new XenosError('TEMPLATE_NOT_FOUND', `no host has heard of ${ref}: its owner publishes it with "xenos template tag" or "xenos template alias"`)
      ref = record.template
    }
    const local = this.#init.library.resolve(ref)
    if (local !== undefined) return this.#summary(local.id)
    const [name = '', version] = ref.split(':')
    let advert: AdvertOf<'template'> | undefined
    if (/^sha256:[0-9a-f]{64}$/.test(ref)) {
      advert = await this.#init.overlay.lookup('template', ref)
    } else {
      advert = this.#templateAdverts().find(a => (a.id.startsWith(ref) && ref.length >= 19) || (a.body.name === name && (version === undefined || a.body.version === version)))
      if (advert === undefined && version === undefined) advert = await this.#init.overlay.lookupName('template', name)
    }
    if (advert === undefined) throw new XenosError('TEMPLATE_NOT_FOUND', `no template "${ref}" here or on the overlay: import it with "xenos template import FILE" or check "xenos search"`)
    return this.#summary(advert.id, advert)
  }

  #templateAdverts (): Array<AdvertOf<'template'>> {
    return this.#init.overlay.search({ kind: 'template' }) as Array<AdvertOf<'template'>>
  }

  /** What is known of template `id`: the local copy, cached adverts, or one found in the DHT. */
  #summary (id: string, found?: AdvertOf<'template'>): TemplateSummary {
    const adverts = this.#templateAdverts().filter(a => a.id === id)
    if (found !== undefined && !adverts.some(a => a.host === found.host)) adverts.push(found)
    const local = this.#init.library.get(id)
    const hosts = [...new Set([...(local === undefined ? [] : [this.#self]), ...adverts.map(a => a.host)])]
    if (local !== undefined) {
      const m = local.manifest
      return { id, name: m.name, version: m.version, driver: m.driver, tags: m.tags, resources: m.resources, hosts }
    }
    const a = adverts[0]
    if (a === undefined) throw new XenosError('TEMPLATE_NOT_FOUND', `template ${id} is no longer advertised`)
    return { id, name: a.body.name, version: a.body.version, driver: a.body.driver, tags: a.body.tags, resources: a.body.resources, hosts }
  }

  /**
   * Deploys template `id` on every host at once: `params.count` on each of `params.hosts`, or
   * `params.count` spread over the hosts with most room. Each host's part reports how long
   * fetching and creating took there; with `wait`, also how long until its instances booted and
   * passed their health checks.
   */
  async deploy (id: string, params: DeployParams, auth: RequestAuth, options: DeployOptions = {}): Promise<DeployResult> {
    // Fail fast on a bad signature; the hosts that run the instances check it again.
    verifyAction(auth, { action: 'deploy', target: id, params })
    checkTaskParams(params)
    const summary = await this.resolveTemplate(id)
    // A snapshot stays on the host that took it: a deploy from one runs here unless told otherwise.
    const hosts = params.hosts ?? (params.snapshot === undefined ? null : [this.#self])
    const placement = hosts === null ? this.#place(summary, params.count) : new Map(hosts.map(h => [h, params.count]))
    const rollout = new Rollout([...placement.keys()], options.onProgress)
    const result: DeployResult = { instances: [], failures: [], hosts: rollout.parts }
    await Promise.all([...placement].map(async ([host, count]) => {
      try {
        const here = await this.#watching(host, auth, rollout, async () => host === this.#self
          ? await this.deployHere(id, params, auth, count)
          : deployReplySchema.parse(await this.#call(host, 'instance.deploy', { template: id, params, count, auth }, DEPLOY_TIMEOUT_MS)))
        result.instances.push(...here.instances)
        rollout.update(host, { phase: options.wait === true ? 'booting' : 'done', fetching: null, instances: here.instances.map(v => v.id), ...here.timing })
        if (options.wait !== true) return
        const times = await untilHealthy(here.instances, here.timing.createMs, async i => await this.get(i), options.waitMs ?? DEFAULT_WAIT_MS, views => {
          if (rollout.part(host).phase !== bootPhase(views)) rollout.update(host, { phase: bootPhase(views) })
        })
        rollout.update(host, { phase: 'done', ...times })
      } catch (err) {
        const e = err instanceof XenosError ? err : new XenosError('PEER_PROTOCOL', `host ${host} answered the deploy with something malformed`)
        rollout.update(host, { phase: 'failed', fetching: null, error: { code: e.code, message: e.message } })
        if (rollout.part(host).instances.length === 0) result.failures.push({ host, code: e.code, message: e.message })
      }
    }))
    rollout.close()
    if (result.instances.length === 0 && result.failures.length === 1 && result.failures[0] !== undefined) {
      const f = result.failures[0]
      throw new XenosError(f.code as XenosError['code'], f.message)
    }
    return result
  }

  /**
   * Runs `work` (a host's part of a deploy); while it runs, and if someone watches the rollout,
   * asks the host every STATUS_EVERY_MS where it is. The status is only news: a lost answer is
   * asked again next time.
   */
  async #watching<T>(host: string, auth: RequestAuth, rollout: Rollout, work: () => Promise<T>): Promise<T> {
    if (!rollout.watched) return await work()
    const done = new AbortController()
    const watch = (async () => {
      while (!done.signal.aborted) {
        const status = await this.#statusOf(host, auth).catch(() => undefined)
        if (status?.phase != null && !done.signal.aborted) rollout.update(host, { phase: status.phase, fetching: status.fetching })
        await sleep(STATUS_EVERY_MS, undefined, { signal: done.signal }).catch(() => {})
      }
    })()
    try {
      return await work()
    } finally {
      done.abort()
      await watch
    }
  }

  async #statusOf (host: string, auth: RequestAuth): Promise<DeployStatus> {
    if (host === this.#self) return this.#deployStatus(auth.owner, auth.nonce)
    return deployStatusSchema.parse(await this.#call(host, 'deploy.status', { owner: auth.owner, nonce: auth.nonce }, STATUS_EVERY_MS * 10))
  }

  #deployStatus (owner: string, nonce: string): DeployStatus {
    const d = this.#deploying.get(`${owner}/${nonce}`)
    if (d === undefined) return { phase: null, fetching: null }
    return { phase: d.phase, fetching: d.phase === 'fetching' ? this.fetcher.progressOf(d.template) : null }
  }

  /** Runs `count` instances of a deploy on this host (the owner's signature is checked here). */
  async deployHere (id: string, params: DeployParams, auth: RequestAuth, count: number): Promise<{ instances: InstanceView[], timing: DeployTiming }> {
    this.#init.verifier.verify(auth, { action: 'deploy', target: id, params })
    if (params.hosts !== null && !params.hosts.includes(this.#self)) throw new XenosError('INVALID_ARGUMENT', `this deploy is addressed to ${params.hosts.join(', ')}, not to host ${this.#self}`)
    if (count > params.count) throw new XenosError('INVALID_ARGUMENT', `asked for ${count} instances of a deploy signed for ${params.count}`)
    checkTaskParams(params)
    const key = `${auth.owner}/${auth.nonce}`
    const status = { template: id, phase: 'fetching' as NonNullable<DeployStatus['phase']> }
    this.#deploying.set(key, status)
    try {
      return await this.#deployHere(id, params, auth, count, status)
    } finally {
      this.#deploying.delete(key)
    }
  }

  async #deployHere (id: string, params: DeployParams, auth: RequestAuth, count: number, status: { phase: NonNullable<DeployStatus['phase']> }): Promise<{ instances: InstanceView[], timing: DeployTiming }> {
    const t0 = performance.now()
    const { template, fetched } = await this.fetcher.ensure(id)
    const t1 = performance.now()
    let snapshot: SnapshotRecord | undefined
    if (params.snapshot !== undefined) {
      snapshot = this.#init.store.snapshots.get(params.snapshot)
      if (snapshot === undefined) throw new XenosError('SNAPSHOT_NOT_FOUND', `host ${this.#self} holds no snapshot ${params.snapshot}: deploy with --host set to the host that took it`)
      if (snapshot.owner !== auth.owner) throw new XenosError('FORBIDDEN', `snapshot ${snapshot.id} belongs to another owner`)
      if (snapshot.templateId !== id) throw new XenosError('INVALID_ARGUMENT', `snapshot ${snapshot.id} is of template ${snapshot.templateId}, not ${id}`)
    }
    if (params.inputs !== undefined && snapshot !== undefined) throw new XenosError('INVALID_ARGUMENT', 'instances started from a snapshot cannot have inputs staged: their memory was saved without them')
    if (params.inputs !== undefined) status.phase = 'staging'
    const inputs = params.inputs === undefined ? undefined : await this.#init.stageInputs(auth.owner, params.inputs)
    status.phase = 'creating'
    let instances: InstanceView[]
    try {
      instances = await this.#init.supervisor.create(template, auth.owner, params.name ?? undefined, count, {
        snapshot,
        inputs,
        outputBytes: params.outputBytes,
        alongside: r => {
          const task = this.#init.tasks.recordFor(r, params)
          if (task !== undefined) this.#init.store.tasks.insert(task)
        },
      })
    } finally {
      if (inputs !== undefined) await rm(inputs, { force: true })
    }
    if (params.task !== undefined) for (const i of instances) void this.#init.tasks.announce(i.id)
    return { instances, timing: { fetchMs: Math.round(t1 - t0), fetchedBytes: fetched, createMs: Math.round(performance.now() - t1) } }
  }

  /** Takes a snapshot of an instance (on the host that runs it, signed by its owner). */
  async snapshot (id: string, auth: RequestAuth): Promise<SnapshotRecord> {
    if (this.#init.supervisor.has(id)) return await this.#snapshotHere(id, auth)
    return snapshotViewSchema.parse(await this.#call(await this.#locate(id), 'instance.snapshot', { id, auth }, CONTROL_TIMEOUT_MS))
  }

  /**
   * Makes a tailored template from a stopped or suspended VM: its template with the changes on its
   * disk, as a small overlay on the template's base disk (signed by the instance's owner).
   */
  async derive (id: string, params: DeriveParams, auth: RequestAuth): Promise<TemplateSummary> {
    if (!this.#init.supervisor.has(id)) return templateSummarySchema.parse(await this.#call(await this.#locate(id), 'instance.derive', { id, params, auth }, CONTROL_TIMEOUT_MS))
    this.#init.verifier.verify(auth, { action: 'derive', target: id, params })
    const owner = this.#init.supervisor.view(id).owner
    if (owner !== auth.owner) throw new XenosError('FORBIDDEN', `instance ${id} belongs to another owner; only its owner may derive a template from it`)
    const manifest = await this.#init.supervisor.withResting(id, async (disk, template) => {
      const image = template.manifest.image
      if (image === undefined) throw new XenosError('INVALID_STATE', `instance ${id} does not run in a VM`)
      const base = image.base ?? image.disk
      const derived = await deriveDisk({ base: this.#init.blobs.path(base), baseId: base, from: disk })
      try {
        return tailoredManifest(template.manifest, await this.#init.blobs.putFile(derived.path), params.name, params.version)
      } finally {
        await derived.cleanup()
      }
    })
    await this.#init.library.verifyImage(manifest)
    const t = this.#init.library.add(manifest)
    this.#init.onTemplateAdded(t)
    return this.#summary(t.id)
  }

  /** Deletes a snapshot held by this host (signed by its owner). */
  async deleteSnapshot (id: string, auth: RequestAuth): Promise<void> {
    this.#init.verifier.verify(auth, { action: 'snapshot.delete', target: id, params: {} })
    const snapshot = this.#init.store.snapshots.get(id)
    if (snapshot === undefined) throw new XenosError('SNAPSHOT_NOT_FOUND', `host ${this.#self} holds no snapshot ${id}`)
    if (snapshot.owner !== auth.owner) throw new XenosError('FORBIDDEN', `snapshot ${id} belongs to another owner; only its owner may delete it`)
    await this.#init.supervisor.deleteSnapshot(id)
  }

  async #snapshotHere (id: string, auth: RequestAuth): Promise<SnapshotRecord> {
    this.#authorise(id, 'snapshot', auth)
    return await this.#init.supervisor.snapshot(id)
  }

  /** Returns the local template, fetching it from the hosts that hold it if needed. */
  async ensureTemplate (id: string): Promise<Template> {
    return (await this.fetcher.ensure(id)).template
  }

  /** Spreads `count` instances over the advertised hosts with the most free room. */
  #place (t: TemplateSummary, count: number): Map<string, number> {
    const hosts = (this.#init.overlay.search({ kind: 'host' }) as Array<AdvertOf<'host'>>)
      .filter(h => h.body.drivers.includes(t.driver))
      // This host's own room is known exactly; others' comes from their latest advert.
      .map(h => ({ id: h.host, free: h.host === this.#self ? this.#init.supervisor.free() : { ...h.body.free } }))
    const out = new Map<string, number>()
    for (let i = 0; i < count; i++) {
      const fits = hosts.filter(h => h.free.cpu + 1e-9 >= t.resources.cpu && h.free.memory >= t.resources.memory)
      fits.sort((a, b) => b.free.memory / Math.max(1, t.resources.memory) + b.free.cpu - (a.free.memory / Math.max(1, t.resources.memory) + a.free.cpu))
      const best = fits[0]
      if (best === undefined) {
        throw new XenosError('NO_HOST_AVAILABLE', `no advertised host with the "${t.driver}" driver has room for ${count - i} more instance(s) of ${t.name} (${t.resources.cpu} CPU, ${t.resources.memory} MiB each)`)
      }
      best.free.cpu -= t.resources.cpu
      best.free.memory -= t.resources.memory
      out.set(best.id, (out.get(best.id) ?? 0) + 1)
    }
    return out
  }

  async control (id: string, action: ControlAction, auth: RequestAuth): Promise<InstanceView | undefined> {
    if (this.#init.supervisor.has(id)) return await this.#controlHere(id, action, auth)
    const host = await this.#locate(id)
    const reply = await this.#call(host, 'instance.control', { id, action, auth }, CONTROL_TIMEOUT_MS)
    return reply === null ? undefined : instanceViewSchema.parse(reply)
  }

  async #controlHere (id: string, action: ControlAction, auth: RequestAuth): Promise<InstanceView | undefined> {
    this.#authorise(id, action, auth)
    return await this.#init.supervisor.control(id, action)
  }

  #authorise (id: string, action: string, auth: RequestAuth): void {
    this.#init.verifier.verify(auth, { action, target: id, params: {} })
    const owner = this.#init.supervisor.view(id).owner
    if (owner !== auth.owner) throw new XenosError('FORBIDDEN', `instance ${id} belongs to another owner; only its owner may ${action} it`)
  }

  async get (id: string): Promise<InstanceView> {
    if (this.#init.supervisor.has(id)) return this.#init.supervisor.view(id)
    const host = await this.#locate(id)
    try {
      return instanceViewSchema.parse(await this.#call(host, 'instance.get', { id }))
    } catch (err) {
      const advert = await this.#init.overlay.lookup('instance', id)
      if (advert === undefined) throw err
      return viewFromAdvert(advert)
    }
  }

  async metrics (id: string): Promise<InstanceMetrics> {
    if (this.#init.supervisor.has(id)) return await this.#init.supervisor.metrics(id)
    return instanceMetricsSchema.parse(await this.#call(await this.#locate(id), 'instance.metrics', { id }))
  }

  async logs (id: string, lines: number, auth: RequestAuth): Promise<string> {
    if (this.#init.supervisor.has(id)) return await this.#logsHere(id, lines, auth)
    return z.string().parse(await this.#call(await this.#locate(id), 'instance.logs', { id, lines, auth }))
  }

  async #logsHere (id: string, lines: number, auth: RequestAuth): Promise<string> {
    this.#authorise(id, 'logs', auth)
    return await this.#init.supervisor.logs(id, lines)
  }

  /** Instances this host runs plus those advertised by others. */
  list (filter: { owner?: string, host?: string } = {}): InstanceView[] {
    const local = this.#init.supervisor.list()
    const ids = new Set(local.map(v => v.id))
    const remote = (this.#init.overlay.search({ kind: 'instance' }) as Array<AdvertOf<'instance'>>)
      .filter(a => !ids.has(a.id))
      .map(viewFromAdvert)
    return [...local, ...remote]
      .filter(v => (filter.owner === undefined || v.owner === filter.owner) && (filter.host === undefined || v.host === filter.host))
      .sort((a, b) => a.createdAt - b.createdAt)
  }

  async #locate (id: string): Promise<string> {
    return await hostOfInstance(this.#init.overlay, id)
  }

  async #call (host: string, method: string, params: unknown, timeoutMs?: number): Promise<unknown> {
    return await callHost(this.#init.overlay, host, method, params, timeoutMs)
  }
}

export function viewFromAdvert (a: AdvertOf<'instance'>): InstanceView {
  return {
    id: a.id,
    name: a.body.name,
    template: a.body.template,
    templateName: a.body.templateName,
    host: a.host,
    state: a.body.state,
    owner: a.body.owner,
    endpoints: a.body.endpoints,
    services: a.body.services.map(s => ({
      name: s.name,
      url: a.body.endpoints.find(e => e.name === s.name)?.url ?? '',
      registered: true,
      health: s.health,
      checkedAt: a.issuedAt,
    })),
    resources: a.body.resources,
    createdAt: a.body.createdAt,
    updatedAt: a.issuedAt,
  }
}

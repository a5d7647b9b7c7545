import type { Logger } from 'pino'
import {
  COMPONENT_EVENTS_KEPT, instanceIdOfPlace, instanceViewSchema, placeBytes, supervisedBytes, taskViewSchema, XenosError,
  type AdvertOf, type DeploymentView, type GrantPlace, type InstanceView, type PlaceRequest, type SupervisedAction, type SupervisedRequest, type TaskView, type TemplateSummary,
} from '../../core/index.ts'
import { isRuntime, type Description, type RuntimeRef, type Workload } from '../../deploy/index.ts'
import type { Overlay } from '../../overlay/index.ts'
import { waitingComponent, type ComponentRecord, type DeploymentRecord, type DeploymentTable, type PlacedInstance } from '../../store/index.ts'
import type { Deployer } from '../deploy/index.ts'
import { callHost } from '../remote.ts'
import type { Liveness } from './liveness.ts'
import { instanceName, workloadAt, type Places } from './places.ts'
import { placedUnder } from './updates.ts'

export interface ComponentOpsInit {
  overlay: Pick<Overlay, 'peerId' | 'rpc' | 'search' | 'sign' | 'learnHost'>
  store: { deployments: Pick<DeploymentTable, 'get' | 'update'> }
  places: Pick<Places, 'place' | 'placeTask' | 'taskStatus' | 'act'>
  deployer: Pick<Deployer, 'plan'>
  /** Told of each instance its host answered is healthy. */
  liveness: Pick<Liveness, 'healthy' | 'hostAlive'>
  log: Logger
}

/** A placed instance boots and passes its checks before its host answers. */
const PLACE_TIMEOUT_MS = 10 * 60_000

/**
 * What a supervisor does to the components of the deployments it supervises: chooses hosts,
 * places instances and tells their hosts to restart or end them (signed as a supervisor the
 * grant names), fills in run-time values, and writes down every change.
 */
export class ComponentOps {
  readonly #init: ComponentOpsInit

  constructor (init: ComponentOpsInit) {
    this.#init = init
  }

  get #self (): string {
    return this.#init.overlay.peerId
  }

  /** The place of instance `index` of workload `w` in its `generation`-th making, to be on `host`. */
  placed (record: DeploymentRecord, w: Workload, index: number, generation: number, host: string): PlacedInstance {
    return { index, generation, id: instanceIdOfPlace({ grant: record.grant, component: w.path, index, generation }), host }
  }

  /** `action` on instance `i`, signed by this host as a supervisor of the deployment, under the grant `i` was placed under. */
  async signed (record: DeploymentRecord, i: PlacedInstance, action: SupervisedAction): Promise<SupervisedRequest> {
    const at = Date.now()
    return { id: i.id, action, by: this.#self, at, sig: await this.#init.overlay.sign(supervisedBytes(action, i.id, placedUnder(record, i).grant.sig, this.#self, at)) }
  }

  /** Has instance `i`'s host do `action` to it, signed by this host as a supervisor of the deployment. */
  async tell (record: DeploymentRecord, i: PlacedInstance, action: SupervisedAction): Promise<void> {
    const req = await this.signed(record, i, action)
    if (i.host === this.#self) return await this.#init.places.act(req)
    await callHost(this.#init.overlay, i.host, 'instance.supervised', req)
  }

  /**
   * Ends instance `i` of component `path`; if its host cannot be reached, the instance is written
   * down as an orphan of the component, to be ended when its host is heard of again (a host
   * that is gone may come back, with what it ran).
   */
  async release (record: DeploymentRecord, path: string, i: PlacedInstance): Promise<void> {
    if (!this.#init.liveness.hostAlive(i.host)) {
      this.abandon(record, path, i)
      return
    }
    await this.tell(record, i, 'release').catch((err: unknown) => {
      this.#init.log.warn({ err, instance: i.id, host: i.host }, 'could not end an instance of a deployment: it is ended when its host is back')
      this.abandon(record, path, i)
    })
  }

  /** Writes down instance `i` of component `path`, on a host that is gone, to be ended when the host is back. */
  abandon (record: DeploymentRecord, path: string, i: PlacedInstance): void {
    const c = this.get(record.owner, record.name).components[path]
    if (c?.orphans?.some(o => o.id === i.id) === true) return
    this.setComponent(record.owner, record.name, path, { orphans: [...c?.orphans ?? [], i] })
  }

  /** Ends the orphans of deployment `record` whose hosts are heard of again (`alive`), each once it is ended or found gone. */
  async endOrphans (record: DeploymentRecord, alive: (host: string) => boolean): Promise<void> {
    for (const [path, c] of Object.entries(record.components)) {
      for (const i of (c.orphans ?? []).filter(o => alive(o.host))) {
        try {
          await this.tell(record, i, 'release')
        } catch (err) {
          this.#init.log.debug({ err, instance: i.id }, 'could not end an orphan yet')
          continue
        }
        this.#init.log.info({ deployment: record.name, instance: i.id, host: i.host }, 'ended an instance of a deployment its host ran on after it was replaced')
        const now = this.get(record.owner, record.name).components[path]
        this.setComponent(record.owner, record.name, path, { orphans: (now?.orphans ?? []).filter(o => o.id !== i.id), event: `ended ${i.id}, which its host ${i.host.slice(-8)} ran on when it came back` })
      }
    }
  }

  /**
   * Places instance `i` of workload `w` where it says, signed by this host (resuming from
   * checkpoint `snapshot`, kept by that host, if given), and waits until its host answers that
   * it is healthy.
   */
  async place (record: DeploymentRecord, description: Description, w: Workload, template: string, i: PlacedInstance, snapshot?: string): Promise<InstanceView> {
    const req = await this.#placeRequest(record, description, w, template, i, snapshot === undefined ? {} : { snapshot })
    const view = i.host === this.#self ? await this.#init.places.place(req) : instanceViewSchema.parse(await callHost(this.#init.overlay, i.host, 'instance.place', req, PLACE_TIMEOUT_MS))
    this.#init.liveness.healthy(i.id)
    return view
  }

  /** Places task `i` of workload `w` (given the files of its inputs that are directories, as far as they are known), and answers how it is once it runs. */
  async placeTask (record: DeploymentRecord, description: Description, w: Workload, template: string, i: PlacedInstance, inputs: PlaceRequest['inputs']): Promise<TaskView> {
    const req = await this.#placeRequest(record, description, w, template, i, inputs === undefined || inputs.length === 0 ? {} : { inputs })
    if (i.host === this.#self) return await this.#init.places.placeTask(req)
    return taskViewSchema.parse(await callHost(this.#init.overlay, i.host, 'task.place', req, PLACE_TIMEOUT_MS))
  }

  /** How task `i` is, asked of its host. */
  async taskStatus (record: DeploymentRecord, i: PlacedInstance): Promise<TaskView> {
    const req = await this.signed(record, i, 'status')
    if (i.host === this.#self) return await this.#init.places.taskStatus(req)
    return taskViewSchema.parse(await callHost(this.#init.overlay, i.host, 'task.status', req))
  }

  /** The request that places instance `i` of workload `w` on its host, signed by this host, with the run-time values it is given. */
  async #placeRequest (record: DeploymentRecord, description: Description, w: Workload, template: string, i: PlacedInstance, extra: Pick<PlaceRequest, 'snapshot' | 'inputs'>): Promise<PlaceRequest> {
    const { env, links } = this.runtimeOf(w, description, this.get(record.owner, record.name))
    const unsigned: Omit<GrantPlace, 'sig'> = { grant: record.grant, component: w.path, index: i.index, generation: i.generation, template, host: i.host, by: this.#self, at: Date.now() }
    const place = { ...unsigned, sig: await this.#init.overlay.sign(placeBytes(unsigned)) }
    return { text: record.text, place, env, links, ...extra }
  }

  /**
   * The hosts `count` instances of a workload go to: the one its placement names, one each
   * (spread), or those with most room, among the advertised hosts that have its driver and its
   * tags and are not in `avoid` (the hosts of instances that died).
   */
  choose (w: Workload, template: TemplateSummary, count: number, avoid: ReadonlySet<string> = new Set()): string[] {
    const want = { name: template.name, driver: template.driver, resources: w.resources ?? template.resources }
    const hosts = (this.#init.overlay.search({ kind: 'host' }) as Array<AdvertOf<'host'>>).filter(h => h.withdrawn !== true && h.body.drivers.includes(template.driver) && !avoid.has(h.host))
    const named = w.placement.host
    if (named !== undefined) {
      const host = hosts.find(h => h.host === named || h.body.name === named || (named.length >= 6 && h.host.endsWith(named)))
      if (host === undefined) throw new XenosError('NO_HOST_AVAILABLE', `component ${w.path} is to run on host ${named}, which is not advertised with the ${template.driver} driver (or is gone)`)
      return Array.from({ length: count }, () => host.host)
    }
    const tags = Object.entries(w.placement.tags ?? {})
    const fit = hosts.filter(h => tags.every(([k, v]) => h.body.tags[k] === v))
    if (tags.length > 0 && fit.length === 0) throw new XenosError('NO_HOST_AVAILABLE', `no advertised host has the tags component ${w.path} asks for (${tags.map(([k, v]) => `${k}=${v}`).join(', ')})`)
    if (w.placement.spread === true || avoid.size > 0 || tags.length > 0) {
      const byRoom = fit.filter(h => h.body.free.cpu + 1e-9 >= want.resources.cpu && h.body.free.memory >= want.resources.memory).sort((a, b) => b.body.free.memory - a.body.free.memory)
      const needed = w.placement.spread === true ? count : Math.min(count, 1)
      if (byRoom.length < needed) throw new XenosError('NO_HOST_AVAILABLE', `component ${w.path} needs ${needed} host(s) with room for an instance, and ${byRoom.length} have it`)
      return Array.from({ length: count }, (_, i) => (byRoom[w.placement.spread === true ? i : 0] as AdvertOf<'host'>).host)
    }
    return this.#init.deployer.plan(want, count).hosts.flatMap(p => Array.from({ length: p.count }, () => p.host))
  }

  /**
   * The environment and links of a workload's instances, its run-time values filled in: an
   * endpoint becomes a link to the component (by its instances' name, so that it follows a
   * replacement) and the link's address; a host or an id, what the component's instance has now.
   */
  runtimeOf (w: Workload, description: Description, record: DeploymentRecord): Pick<PlaceRequest, 'env' | 'links'> {
    const env: Record<string, string> = {}
    const links = new Map<string, PlaceRequest['links'][number]>()
    for (const [key, value] of Object.entries(w.env)) {
      if (!isRuntime(value)) {
        env[key] = value
        continue
      }
      env[key] = value.runtime.map(part => {
        if (typeof part === 'string') return part
        const target = workloadAt(description, part.component)
        const placed = record.components[part.component]?.instances[0]
        if (target === undefined || placed === undefined) throw new XenosError('INVALID_STATE', `component ${part.component} does not run yet`)
        if (part.attribute === 'id') return placed.id
        if (part.attribute === 'host') return placed.host
        const link = linkName(part)
        links.set(link, { name: link, target: instanceName(record.name, target, 0), ...part.endpoint === undefined ? {} : { endpoint: part.endpoint } })
        return `\${XENOS_LINK_${link.toUpperCase()}}`
      }).join('')
    }
    return { env, links: [...links.values()] }
  }

  /** Writes down a change to a component of a deployment, and tells `onChange`. */
  setComponent (owner: string, name: string, path: string, change: Partial<ComponentRecord>, onChange: (v: DeploymentView) => void = () => {}): void {
    const d = this.get(owner, name)
    const current = d.components[path] ?? waitingComponent(0)
    const now = Date.now()
    const events = typeof change.event === 'string' && change.event !== current.event ? [...current.events ?? [], { at: now, event: change.event }].slice(-COMPONENT_EVENTS_KEPT) : current.events
    const updated = this.#init.store.deployments.update(owner, name, { components: { ...d.components, [path]: { ...current, ...change, events, updatedAt: now } } })
    if (updated !== undefined) onChange(this.view(updated))
  }

  get (owner: string, name: string): DeploymentRecord {
    const d = this.#init.store.deployments.get(owner, name)
    if (d === undefined) throw new XenosError('DEPLOYMENT_NOT_FOUND', `host ${this.#self} supervises no deployment ${name} of yours`)
    return d
  }

  view (d: DeploymentRecord): DeploymentView {
    return {
      name: d.name,
      owner: d.owner,
      supervisor: d.acting,
      supervisors: d.grant.supervisors,
      state: d.state,
      error: d.error,
      components: Object.entries(d.components).map(([path, c]) => ({
        path,
        state: c.state,
        instances: c.instances.map(({ grant: _grant, ...i }) => i),
        checkpoints: (c.checkpoints ?? []).map(({ grant: _grant, ...cp }) => cp),
        event: c.event,
        events: c.events ?? [],
        termination: c.termination ?? null,
        updatedAt: c.updatedAt,
      })),
      termination: deploymentTermination(d),
      createdAt: d.createdAt,
      updatedAt: d.updatedAt,
    }
  }
}

/** How deployment `d` ended, up its tree: as its first component that ended abnormally (when it was not its owner's wish), or normally. */
function deploymentTermination (d: DeploymentRecord): DeploymentView['termination'] {
  if (d.state === 'terminated' && d.error === null) return { kind: 'normal', cause: 'terminated by its owner', at: d.updatedAt }
  if (d.state !== 'failed' && d.state !== 'terminated') return null
  const [path, c] = Object.entries(d.components).find(([, x]) => x.termination?.kind === 'abnormal') ?? []
  if (path === undefined || c?.termination === undefined) return { kind: 'abnormal', cause: d.error ?? 'failed', at: d.updatedAt }
  return { ...c.termination, cause: `component ${path}: ${c.termination.cause}`, component: path }
}

/** The name of the link through which an instance reaches a component's endpoint: `master_http`. */
function linkName (ref: RuntimeRef): string {
  const base = `${ref.component}${ref.endpoint === undefined ? '' : `_${ref.endpoint}`}`.toLowerCase().replace(/[^a-z0-9_]/g, '_')
  return (/^[a-z]/.test(base) ? base : `c_${base}`).slice(0, 31)
}

import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import {
  deploymentGrantValid, instanceIdOfPlace, instanceViewSchema, placeBytes, releaseBytes, REQUEST_MAX_SKEW_MS, sha256Hex, XenosError,
  type AdvertOf, type ApplyRequest, type DeploymentView, type GrantPlace, type InstanceView, type PlaceRequest,
} from '../../core/index.ts'
import { isRuntime, resolveDescription, type Component, type Description, type RuntimeRef, type Workload } from '../../deploy/index.ts'
import type { Overlay } from '../../overlay/index.ts'
import type { ComponentRecord, DeploymentRecord, PlacedInstance, Store } from '../../store/index.ts'
import type { TemplateCatalog } from '../catalog.ts'
import type { Deployer } from '../deploy/index.ts'
import type { RequestVerifier } from '../replay.ts'
import { instanceName, workloadAt, type Places } from './places.ts'

export interface DeploymentsInit {
  overlay: Pick<Overlay, 'peerId' | 'rpc' | 'search' | 'sign' | 'learnHost'>
  store: Pick<Store, 'deployments'>
  places: Pick<Places, 'place' | 'release'>
  catalog: Pick<TemplateCatalog, 'resolve'>
  deployer: Pick<Deployer, 'plan'>
  verifier: RequestVerifier
  log: Logger
}

/** How long a restarted supervisor waits to hear of the hosts its deployments use before it carries on. */
const RECOVER_WAIT_MS = 30_000
/** A placed instance boots and passes its checks before its host answers. */
const PLACE_TIMEOUT_MS = 10 * 60_000

/**
 * The deployments this host supervises: each description its owner applied here, brought up
 * component by component in dependency order, each instance placed on a host by this host
 * under the owner's grant (which names this host), and terminated in reverse order. Every step
 * is written down before the next, so a restarted host carries on where it was.
 */
export class Deployments {
  readonly #init: DeploymentsInit
  /** Deployments being worked on now, so that two requests do not work on one at once. */
  readonly #busy = new Map<string, Promise<unknown>>()

  constructor (init: DeploymentsInit) {
    this.#init = init
  }

  get #self (): string {
    return this.#init.overlay.peerId
  }

  /** Runs the description `req` carries, signed by its owner, and answers once every component runs (or one failed). */
  async apply (req: ApplyRequest, onChange: (v: DeploymentView) => void = () => {}): Promise<DeploymentView> {
    const { grant, text } = req
    if (!deploymentGrantValid(grant)) throw new XenosError('UNAUTHENTICATED', `deployment ${grant.name} is not signed by the owner it names`)
    if (sha256Hex(text) !== grant.description) throw new XenosError('UNAUTHENTICATED', `the description sent is not the one its owner signed for deployment ${grant.name}`)
    if (!grant.supervisors.includes(this.#self)) throw new XenosError('FORBIDDEN', `deployment ${grant.name} does not let host ${this.#self} act for its owner: apply it on a host it names`)
    if (Math.abs(Date.now() - grant.issuedAt) > REQUEST_MAX_SKEW_MS) throw new XenosError('UNAUTHENTICATED', 'this deployment was signed too long ago, or by a clock far from this host\'s: sign it again')
    const description = resolveDescription(text, `${grant.name}.yaml`)
    if (description.name !== grant.name) throw new XenosError('INVALID_ARGUMENT', `the description is named ${description.name}, its grant ${grant.name}`)
    const unrun = workloadsOf(description).find(({ workload }) => workload.task !== undefined || workload.storage !== undefined)
    if (unrun !== undefined) throw new XenosError('INVALID_ARGUMENT', `component ${unrun.workload.path} has ${unrun.workload.task === undefined ? 'storage' : 'a task'}, which deployments do not run yet: deploy it with "xenos run" or "xenos deploy --in"`)
    const existing = this.#init.store.deployments.get(grant.owner, grant.name)
    if (existing !== undefined && existing.state !== 'terminated') {
      if (existing.grant.description !== grant.description) throw new XenosError('INVALID_STATE', `deployment ${grant.name} runs another description: terminate it first ("xenos terminate ${grant.name}")`)
      // The same description again: what failed is tried anew, what runs stays.
      if (existing.state !== 'failed') return this.#view(existing)
      this.#init.verifier.claimOnce(grant.owner, grant.sig, grant.issuedAt)
      this.#init.store.deployments.update(grant.owner, grant.name, { state: 'applying', error: null })
      return await this.#exclusive(grant.owner, grant.name, async () => await this.#bringUp(grant.owner, grant.name, onChange))
    }
    this.#init.verifier.claimOnce(grant.owner, grant.sig, grant.issuedAt)
    const now = Date.now()
    if (existing !== undefined) this.#init.store.deployments.remove(grant.owner, grant.name)
    this.#init.store.deployments.insert({
      owner: grant.owner,
      name: grant.name,
      text,
      grant,
      state: 'applying',
      components: Object.fromEntries(workloadsOf(description).map(({ workload }) => [workload.path, { state: 'waiting', instances: [], generation: 0, event: null, updatedAt: now }])),
      error: null,
      createdAt: now,
      updatedAt: now,
    })
    return await this.#exclusive(grant.owner, grant.name, async () => await this.#bringUp(grant.owner, grant.name, onChange))
  }

  /** Deployment `name` of `owner`, as its owner sees it. */
  show (owner: string, name: string): DeploymentView {
    return this.#view(this.#get(owner, name))
  }

  list (owner: string): DeploymentView[] {
    return this.#init.store.deployments.list(owner).map(d => this.#view(d))
  }

  /** Ends every instance of deployment `name`, in the reverse of the order they started in. */
  async terminate (owner: string, name: string, onChange: (v: DeploymentView) => void = () => {}): Promise<DeploymentView> {
    this.#get(owner, name)
    return await this.#exclusive(owner, name, async () => {
      this.#init.store.deployments.update(owner, name, { state: 'terminating' })
      const record = this.#get(owner, name)
      const order = workloadsOf(resolveDescription(record.text, `${name}.yaml`)).map(w => w.workload.path)
      for (const path of order.reverse()) {
        const c = this.#get(owner, name).components[path]
        if (c === undefined || c.state === 'terminated') continue
        this.#setComponent(owner, name, path, { state: 'terminating', event: 'terminating' }, onChange)
        for (const i of c.instances) await this.#release(record, i)
        this.#setComponent(owner, name, path, { state: 'terminated', instances: [], event: 'terminated' }, onChange)
      }
      return this.#view(this.#init.store.deployments.update(owner, name, { state: 'terminated' }) ?? this.#get(owner, name))
    })
  }

  /**
   * After a restart: carries on with what was under way (bringing up, or terminating), once the
   * hosts its instances were placed on are heard of again.
   */
  recover (): void {
    for (const d of this.#init.store.deployments.list()) {
      if (d.state === 'terminating') {
        void this.#known(d).then(async () => await this.terminate(d.owner, d.name)).catch((err: unknown) => { this.#init.log.warn({ err, deployment: d.name }, 'could not go on terminating a deployment') })
      } else if (d.state === 'applying') {
        void this.#known(d).then(async () => await this.#exclusive(d.owner, d.name, async () => await this.#bringUp(d.owner, d.name, () => {})))
          .catch((err: unknown) => { this.#init.log.warn({ err, deployment: d.name }, 'could not go on bringing up a deployment') })
      }
    }
  }

  /** Resolves once every host deployment `d` placed instances on is advertised (or after a while: those that are gone stay gone). */
  async #known (d: DeploymentRecord): Promise<void> {
    const wanted = new Set(Object.values(d.components).flatMap(c => c.instances.map(i => i.host)).filter(h => h !== this.#self))
    const deadline = Date.now() + RECOVER_WAIT_MS
    while (Date.now() < deadline) {
      const heard = new Set(this.#init.overlay.search({ kind: 'host' }).map(a => a.host))
      if ([...wanted].every(h => heard.has(h))) return
      await sleep(500)
    }
  }

  /** Brings up every component whose dependencies run, wave after wave, until all run or one fails. */
  async #bringUp (owner: string, name: string, onChange: (v: DeploymentView) => void): Promise<DeploymentView> {
    const record = this.#get(owner, name)
    const description = resolveDescription(record.text, `${name}.yaml`)
    const all = workloadsOf(description)
    for (;;) {
      const state = this.#get(owner, name).components
      const ready = all.filter(({ workload, after }) => state[workload.path]?.state !== 'running' && [...after].every(p => state[p]?.state === 'running'))
      if (ready.length === 0) break
      const results = await Promise.allSettled(ready.map(async ({ workload }) => { await this.#bringUpWorkload(record, description, workload, onChange) }))
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
      if (failed !== undefined) {
        const error = (failed.reason as Error).message
        return this.#view(this.#init.store.deployments.update(owner, name, { state: 'failed', error }) ?? record)
      }
    }
    const done = this.#init.store.deployments.update(owner, name, { state: 'running', error: null }) ?? record
    onChange(this.#view(done))
    return this.#view(done)
  }

  /** Places every instance of a workload, each on the host chosen for it, and waits until each is healthy. */
  async #bringUpWorkload (record: DeploymentRecord, description: Description, w: Workload, onChange: (v: DeploymentView) => void): Promise<void> {
    const { owner, name } = record
    const template = await this.#init.catalog.resolve(w.template)
    const before = this.#get(owner, name).components[w.path]
    // Instances that failed make way for new ones (the next generation), placed anew.
    if (before?.state === 'failed') {
      for (const i of before.instances) await this.#release(record, i)
      this.#setComponent(owner, name, w.path, { state: 'waiting', instances: [], event: 'trying again', generation: before.generation + 1 }, onChange)
    }
    const generation = this.#get(owner, name).components[w.path]?.generation ?? 0
    const placed = this.#get(owner, name).components[w.path]?.instances ?? []
    const hosts = placed.length === w.count ? placed.map(i => i.host) : this.#choose(w, template)
    const instances: PlacedInstance[] = hosts.map((host, index) => placed.find(i => i.index === index) ?? { index, generation, id: instanceIdOfPlace({ grant: record.grant, component: w.path, index, generation }), host })
    // Where each goes is written before it is asked for: after a restart it is asked of the same host, and made once.
    this.#setComponent(owner, name, w.path, { state: 'deploying', instances, event: `placing ${w.count} instance(s) on ${[...new Set(hosts)].length} host(s)` }, onChange)
    try {
      const { env, links } = this.#runtimeOf(w, description, this.#get(owner, name))
      await Promise.all(instances.map(async i => {
        const unsigned: Omit<GrantPlace, 'sig'> = { grant: record.grant, component: w.path, index: i.index, generation: i.generation, template: template.id, host: i.host, by: this.#self, at: Date.now() }
        const place = { ...unsigned, sig: await this.#init.overlay.sign(placeBytes(unsigned)) }
        const req: PlaceRequest = { text: record.text, place, env, links }
        return await this.#placeOn(i.host, req)
      }))
    } catch (err) {
      this.#setComponent(owner, name, w.path, { state: 'failed', event: (err as Error).message }, onChange)
      throw err
    }
    this.#setComponent(owner, name, w.path, { state: 'running', event: 'running and healthy' }, onChange)
  }

  async #placeOn (host: string, req: PlaceRequest): Promise<InstanceView> {
    if (host === this.#self) return await this.#init.places.place(req)
    await this.#init.overlay.learnHost(host)
    return instanceViewSchema.parse(await this.#init.overlay.rpc.call(host, 'instance.place', req, { timeoutMs: PLACE_TIMEOUT_MS }))
  }

  /**
   * The hosts a workload's instances go to: the one its placement names, one each (spread), or
   * those with most room, among the advertised hosts that have its driver.
   */
  #choose (w: Workload, template: { name: string, driver: string, resources: { cpu: number, memory: number } }): string[] {
    const want = { name: template.name, driver: template.driver, resources: w.resources ?? template.resources }
    const hosts = (this.#init.overlay.search({ kind: 'host' }) as Array<AdvertOf<'host'>>).filter(h => h.withdrawn !== true && h.body.drivers.includes(template.driver))
    const named = w.placement.host
    if (named !== undefined) {
      const host = hosts.find(h => h.host === named || h.body.name === named || (named.length >= 6 && h.host.endsWith(named)))
      if (host === undefined) throw new XenosError('NO_HOST_AVAILABLE', `component ${w.path} is to run on host ${named}, which is not advertised with the ${template.driver} driver`)
      return Array.from({ length: w.count }, () => host.host)
    }
    const tags = Object.entries(w.placement.tags ?? {})
    const fit = hosts.filter(h => tags.every(([k, v]) => h.body.tags?.[k] === v))
    if (tags.length > 0 && fit.length === 0) throw new XenosError('NO_HOST_AVAILABLE', `no advertised host has the tags component ${w.path} asks for (${tags.map(([k, v]) => `${k}=${v}`).join(', ')})`)
    if (w.placement.spread === true) {
      const byRoom = fit.filter(h => h.body.free.cpu + 1e-9 >= want.resources.cpu && h.body.free.memory >= want.resources.memory).sort((a, b) => b.body.free.memory - a.body.free.memory)
      if (byRoom.length < w.count) throw new XenosError('NO_HOST_AVAILABLE', `component ${w.path} spreads ${w.count} instances, and only ${byRoom.length} host(s) have room for one`)
      return byRoom.slice(0, w.count).map(h => h.host)
    }
    return this.#init.deployer.plan(want, w.count).hosts.flatMap(p => Array.from({ length: p.count }, () => p.host))
  }

  /**
   * The environment and links of a workload's instances, its run-time values filled in: an
   * endpoint becomes a link to the component (by its instances' name, so that it follows a
   * replacement) and the link's address; a host or an id, what the component's instance has now.
   */
  #runtimeOf (w: Workload, description: Description, record: DeploymentRecord): Pick<PlaceRequest, 'env' | 'links'> {
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

  async #release (record: DeploymentRecord, i: PlacedInstance): Promise<void> {
    const at = Date.now()
    const req = { id: i.id, by: this.#self, at, sig: await this.#init.overlay.sign(releaseBytes(i.id, record.grant.sig, this.#self, at)) }
    try {
      if (i.host === this.#self) {
        await this.#init.places.release(req)
      } else {
        await this.#init.overlay.learnHost(i.host)
        await this.#init.overlay.rpc.call(i.host, 'instance.release', req)
      }
    } catch (err) {
      // A host that is gone took its instances with it; anything else is worth a line.
      this.#init.log.warn({ err, instance: i.id, host: i.host }, 'could not end an instance of a deployment')
    }
  }

  #setComponent (owner: string, name: string, path: string, change: Partial<ComponentRecord>, onChange: (v: DeploymentView) => void): void {
    const d = this.#get(owner, name)
    const current = d.components[path] ?? { state: 'waiting', instances: [], generation: 0, event: null, updatedAt: 0 }
    const updated = this.#init.store.deployments.update(owner, name, { components: { ...d.components, [path]: { ...current, ...change, updatedAt: Date.now() } } })
    if (updated !== undefined) onChange(this.#view(updated))
  }

  #get (owner: string, name: string): DeploymentRecord {
    const d = this.#init.store.deployments.get(owner, name)
    if (d === undefined) throw new XenosError('DEPLOYMENT_NOT_FOUND', `host ${this.#self} supervises no deployment ${name} of yours`)
    return d
  }

  async #exclusive<T> (owner: string, name: string, fn: () => Promise<T>): Promise<T> {
    const key = `${owner}/${name}`
    if (this.#busy.has(key)) throw new XenosError('INVALID_STATE', `deployment ${name} is being worked on: wait for it ("xenos deployment show ${name}")`)
    const work = fn()
    this.#busy.set(key, work)
    try {
      return await work
    } finally {
      this.#busy.delete(key)
    }
  }

  #view (d: DeploymentRecord): DeploymentView {
    return {
      name: d.name,
      owner: d.owner,
      supervisor: this.#self,
      state: d.state,
      error: d.error,
      components: Object.entries(d.components).map(([path, c]) => ({ path, state: c.state, instances: c.instances, event: c.event, updatedAt: c.updatedAt })),
      createdAt: d.createdAt,
      updatedAt: d.updatedAt,
    }
  }
}

/**
 * Every workload of a description in an order that starts each after what it waits for, with
 * all it waits for: its `dependsOn` and its compounds', a sequence's earlier children, each
 * compound named standing for all the workloads in it.
 */
export function workloadsOf (d: Description): Array<{ workload: Workload, after: Set<string> }> {
  const byPath = new Map<string, Component>()
  const index = (components: Record<string, Component>): void => {
    for (const c of Object.values(components)) {
      byPath.set(c.path, c)
      if (c.kind !== 'workload') index(c.components)
    }
  }
  index(d.components)
  const expand = (path: string): string[] => {
    const c = byPath.get(path)
    if (c === undefined) return []
    return c.kind === 'workload' ? [c.path] : Object.values(c.components).flatMap(child => expand(child.path))
  }
  const out: Array<{ workload: Workload, after: Set<string> }> = []
  const walk = (components: Record<string, Component>, inherited: string[], sequence: boolean): void => {
    let previous: string | undefined
    for (const c of Object.values(components)) {
      const waits = [...inherited, ...c.dependsOn, ...sequence && previous !== undefined ? [previous] : []]
      if (c.kind === 'workload') out.push({ workload: c, after: new Set(waits.flatMap(expand)) })
      else walk(c.components, waits, c.kind === 'sequence')
      previous = c.path
    }
  }
  walk(d.components, [], false)
  // In an order where each comes after what it waits for (the description has no cycles).
  const ordered: typeof out = []
  const placed = new Set<string>()
  while (ordered.length < out.length) {
    const next = out.find(o => !placed.has(o.workload.path) && [...o.after].every(p => placed.has(p)))
    if (next === undefined) break
    ordered.push(next)
    placed.add(next.workload.path)
  }
  return ordered
}

/** The name of the link through which an instance reaches a component's endpoint: `master_http`. */
function linkName (ref: RuntimeRef): string {
  const base = `${ref.component}${ref.endpoint === undefined ? '' : `_${ref.endpoint}`}`.toLowerCase().replace(/[^a-z0-9_]/g, '_')
  return (/^[a-z]/.test(base) ? base : `c_${base}`).slice(0, 31)
}

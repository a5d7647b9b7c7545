import { setTimeout as sleep } from 'node:timers/promises'
import { deploymentGrantValid, REQUEST_MAX_SKEW_MS, sha256Hex, XenosError, type ApplyRequest, type DeploymentView, type Termination } from '../../core/index.ts'
import { resolveDescription, type Description, type Workload } from '../../deploy/index.ts'
import { waitingComponent, type ComponentRecord, type DeploymentRecord, type PlacedInstance, type Store } from '../../store/index.ts'
import type { TemplateCatalog } from '../catalog.ts'
import type { RequestVerifier } from '../replay.ts'
import { Checkpointer } from './checkpointer.ts'
import type { Checkpoints } from './checkpoints.ts'
import { ComponentOps, type ComponentOpsInit } from './components.ts'
import { DeploymentCopies } from './copies.ts'
import { DeploymentDirectory, type DeploymentDirectoryInit } from './directory.ts'
import { Liveness, type LivenessInit, type Seen } from './liveness.ts'
import { workloadsOf } from './order.ts'
import { workloadAt } from './places.ts'
import { FailurePolicies } from './policies.ts'
import { RollingUpdates } from './rolling.ts'
import { TaskFailed, TaskRuns } from './task-runs.ts'
import { stillUsed, updatedTo } from './updates.ts'

export interface DeploymentsInit extends Omit<ComponentOpsInit, 'store' | 'liveness'>, LivenessInit {
  overlay: ComponentOpsInit['overlay'] & LivenessInit['overlay'] & DeploymentDirectoryInit['overlay']
  store: Pick<Store, 'deployments'>
  catalog: Pick<TemplateCatalog, 'resolve'>
  verifier: RequestVerifier
  /** This host's side of checkpoints. */
  checkpoints: Pick<Checkpoints, 'take' | 'keep' | 'drop'>
}

/** How often bringing a deployment up tries again when a host or template it needs is away for now, and how long apart. */
const BRING_UP_RETRIES = 10
const BRING_UP_BACKOFF_MS = 3000
/** Errors that pass: what is missing may be back soon. */
const PASSING = new Set(['PEER_UNREACHABLE', 'TEMPLATE_NOT_FOUND', 'NO_HOST_AVAILABLE', 'HOST_NOT_FOUND'])

function isPassing (err: unknown): boolean {
  return err instanceof XenosError && PASSING.has(err.code)
}

/**
 * Whether component `c` runs as workload `w` says: healthy, of the description the deployment
 * runs, as many instances as it asks for; a task, once it has completed (or failed, when its
 * policy is to let it be).
 */
function isSettled (w: Workload, c: ComponentRecord | undefined): boolean {
  if (c === undefined || c.outdated === true) return false
  if (w.task !== undefined) return c.state === 'completed' || (c.state === 'failed' && w.onFailure === 'ignore' && c.termination !== undefined)
  return c.state === 'running' && c.instances.length === w.count
}

/** Throws unless every component of `d` is one a deployment runs. */
function checkRunnable (d: Description): void {
  for (const { workload: w } of workloadsOf(d)) {
    if (w.storage?.snapshot !== undefined) {
      // A snapshot stays on the host that took it.
      if (w.placement.host === undefined) throw new XenosError('INVALID_ARGUMENT', `component ${w.path} starts from snapshot ${w.storage.snapshot}, which stays on the host that took it: name that host in its placement ("placement: { host: NAME }")`)
      if (w.storage.inputs !== undefined || w.task !== undefined) throw new XenosError('INVALID_ARGUMENT', `component ${w.path} starts from a snapshot, whose memory was saved without inputs staged: it can be no task and have no inputs`)
    }
    if (w.task === undefined) continue
    if (w.count !== 1) throw new XenosError('INVALID_ARGUMENT', `component ${w.path} is a task, which runs one instance: give it count 1 (or make several tasks, each with its own outputs)`)
    if (w.checkpointMs !== undefined) throw new XenosError('INVALID_ARGUMENT', `component ${w.path} is a task, which runs afresh: it takes no checkpoints`)
  }
}

/** Whether component `c` ran before an update and comes to run as the update says by a rolling update (else it is brought up afresh). */
function isRolled (c: ComponentRecord | undefined): boolean {
  if (c === undefined || c.state === 'failed') return false
  return c.state === 'running' || c.outdated === true || (c.retiring?.length ?? 0) > 0 || c.instances.some(i => i.grant !== undefined)
}

/** How long a standby supervisor waits, once the acting one's adverts are gone, before it takes over (Consul's lock-delay). */
const TAKEOVER_DELAY_MS = 2000
/** How often the supervisor looks at the liveness of what it supervises (each component at its own `liveness.every`). */
const WATCH_EVERY_MS = 500

/** How long a restarted supervisor waits to hear of the hosts its deployments use before it carries on. */
const RECOVER_WAIT_MS = 30_000

/**
 * The deployments this host supervises: each description its owner applied here, brought up
 * component by component in dependency order, each instance placed on a host by this host
 * under the owner's grant (which names this host), and terminated in reverse order. Every step
 * is written down before the next, so a restarted host carries on where it was.
 */
export class Deployments {
  readonly #init: DeploymentsInit
  readonly #ops: ComponentOps
  readonly #copies: DeploymentCopies
  readonly #store: { deployments: DeploymentCopies['table'] }
  /** When each deployment's acting supervisor was last heard of, as seen by this standby. */
  readonly #heardOf = new Map<string, number>()
  /** Deployments being worked on now, so that two requests do not work on one at once. */
  readonly #busy = new Map<string, Promise<unknown>>()
  /** Deployments whose orphans are being ended now. */
  readonly #orphaning = new Set<string>()
  readonly #liveness: Liveness
  readonly #policies: FailurePolicies
  readonly #checkpointer: Checkpointer
  readonly #rolling: RollingUpdates
  readonly #tasks: TaskRuns
  /** Where deployments are supervised, seen from any host, and requests relayed there. */
  readonly directory: DeploymentDirectory
  /** Resolved descriptions, by their text's digest. */
  readonly #resolved = new Map<string, Description>()
  #watching: NodeJS.Timeout | undefined

  constructor (init: DeploymentsInit) {
    this.#init = init
    this.#copies = new DeploymentCopies({ ...init, release: async (record, path, i) => { await this.#ops.release(record, path, i) } })
    // Every write goes through the copies: the other supervisors keep what this one does.
    this.#store = { deployments: this.#copies.table }
    this.#liveness = new Liveness(init)
    this.#ops = new ComponentOps({ ...init, store: this.#store, liveness: this.#liveness })
    this.#policies = new FailurePolicies({ ...init, store: this.#store, ops: this.#ops, liveness: this.#liveness })
    this.#checkpointer = new Checkpointer({ ...init, ops: this.#ops, liveness: this.#liveness })
    this.#rolling = new RollingUpdates({ ...init, ops: this.#ops, checkpointer: this.#checkpointer })
    this.#tasks = new TaskRuns({ ...init, ops: this.#ops, liveness: this.#liveness })
    this.directory = new DeploymentDirectory({
      ...init,
      here: { apply: async (req, onChange) => await this.apply(req, onChange), show: (owner, name) => this.show(owner, name), terminate: async (owner, name, onChange) => await this.terminate(owner, name, onChange) },
    })
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
    checkRunnable(description)
    const existing = this.#store.deployments.get(grant.owner, grant.name)
    if (existing !== undefined && existing.state !== 'terminated') {
      if (existing.grant.description !== grant.description) return await this.#update(existing, req, description, onChange)
      // The same description again: what failed is tried anew, what runs stays.
      if (existing.state !== 'failed') return this.#ops.view(existing)
      this.#init.verifier.claimOnce(grant.owner, grant.sig, grant.issuedAt)
      this.#store.deployments.update(grant.owner, grant.name, { state: 'applying', error: null })
      return await this.#exclusive(grant.owner, grant.name, async () => await this.#bringUp(grant.owner, grant.name, onChange))
    }
    this.#init.verifier.claimOnce(grant.owner, grant.sig, grant.issuedAt)
    const now = Date.now()
    if (existing !== undefined) this.#store.deployments.remove(grant.owner, grant.name)
    this.#store.deployments.insert({
      owner: grant.owner,
      name: grant.name,
      text,
      grant,
      earlier: [],
      state: 'applying',
      components: Object.fromEntries(workloadsOf(description).map(({ workload }) => [workload.path, waitingComponent(now)])),
      error: null,
      acting: this.#self,
      term: 0,
      createdAt: now,
      updatedAt: now,
    })
    return await this.#exclusive(grant.owner, grant.name, async () => await this.#bringUp(grant.owner, grant.name, onChange))
  }

  /**
   * Updates running deployment `existing` to the description `req` carries (resolved:
   * `after`): new components are brought up, dropped ones ended, and those whose instances must
   * be made anew are rolled one instance at a time.
   */
  async #update (existing: DeploymentRecord, req: ApplyRequest, after: Description, onChange: (v: DeploymentView) => void): Promise<DeploymentView> {
    const { grant, text } = req
    const { owner, name } = existing
    if (existing.acting !== this.#self) throw new XenosError('INVALID_STATE', `deployment ${name} is supervised by host ${existing.acting} now: apply it there`)
    if (existing.state === 'terminating') throw new XenosError('INVALID_STATE', `deployment ${name} is being terminated: apply it again once it has ended`)
    const was = new Set(existing.grant.supervisors)
    if (grant.supervisors.length !== was.size || !grant.supervisors.every(h => was.has(h))) {
      throw new XenosError('INVALID_ARGUMENT', `deployment ${name} is supervised by ${existing.grant.supervisors.join(', ')}: an update keeps them (terminate it to choose others)`)
    }
    if (grant.issuedAt <= existing.grant.issuedAt) throw new XenosError('INVALID_STATE', `this description of ${name} was signed before the one it runs: sign it again`)
    if (this.#busy.has(`${owner}/${name}`)) throw new XenosError('INVALID_STATE', `deployment ${name} is being worked on: wait for it ("xenos deployment show ${name}")`)
    this.#init.verifier.claimOnce(owner, grant.sig, grant.issuedAt)
    this.#store.deployments.update(owner, name, { ...updatedTo(existing, this.#described(existing), text, grant, after), state: 'applying', error: null })
    return await this.#exclusive(owner, name, async () => await this.#bringUp(owner, name, onChange))
  }

  /** Deployment `name` of `owner`, as its owner sees it. */
  show (owner: string, name: string): DeploymentView {
    return this.#ops.view(this.#ops.get(owner, name))
  }

  list (owner: string): DeploymentView[] {
    return this.#store.deployments.list(owner).map(d => this.#ops.view(d))
  }

  /** Ends every instance of deployment `name`, in the reverse of the order they started in. */
  async terminate (owner: string, name: string, onChange: (v: DeploymentView) => void = () => {}): Promise<DeploymentView> {
    const d = this.#ops.get(owner, name)
    if (d.acting !== this.#self) throw new XenosError('INVALID_STATE', `deployment ${name} is supervised by host ${d.acting} now: terminate it there`)
    // What is under way (a replacement, a bring-up) ends first: terminating is never refused for it.
    while (this.#busy.has(`${owner}/${name}`)) await this.#busy.get(`${owner}/${name}`)?.catch(() => {})
    return await this.#exclusive(owner, name, async () => await this.#terminateHere(owner, name, onChange))
  }

  /** Starts watching the liveness of every running deployment, and acting on deaths as their policies say. */
  start (): void {
    this.#watching = setInterval(() => { this.#watch() }, WATCH_EVERY_MS)
    this.#watching.unref()
  }

  stop (): void {
    clearInterval(this.#watching)
  }

  #watch (): void {
    for (const d of this.#store.deployments.list()) {
      void this.directory.announce(d.owner, d.name)
      if (d.acting !== this.#self) {
        this.#standBy(d)
        continue
      }
      if (d.grant.supervisors.length > 1 && d.state !== 'terminated') this.#copies.keepFresh(d)
      this.#endOrphans(d)
      if (d.state !== 'running' || this.#busy.has(`${d.owner}/${d.name}`)) continue
      const description = this.#described(d)
      this.#checkpointer.tick(d, description)
      for (const { workload: w } of workloadsOf(description)) {
        const c = d.components[w.path]
        // A task ends by itself: its supervisor learns how from its host, not from its liveness.
        if (w.task !== undefined || c?.state !== 'running' || !this.#liveness.due(`${d.owner}/${d.name}/${w.path}`, w.liveness.everyMs)) continue
        // A VM paused for its checkpoint fails a health check or two: that is not a death.
        const seen = (i: PlacedInstance): Seen => {
          const s = this.#liveness.check(i)
          return !s.alive && s.health === true && this.#checkpointer.settling(i.id) ? { alive: true } : s
        }
        const dead = c.instances.map(i => ({ i, seen: seen(i) })).find(({ i, seen }) => this.#liveness.observe(i.id, seen.alive) >= w.liveness.failAfter)
        if (dead === undefined || dead.seen.alive) continue
        this.#liveness.forget(dead.i.id)
        const why = dead.seen.why
        void this.#exclusive(d.owner, d.name, async () => {
          await this.#policies.onDeath(d, description, w, dead.i, why, async cause => { await this.#terminateHere(d.owner, d.name, () => {}, { path: w.path, cause }) })
        }).catch((err: unknown) => { this.#init.log.warn({ err, deployment: d.name }, 'could not act on a death in a deployment') })
        // One death at a time per deployment: the next look sees what came of it.
        break
      }
    }
  }

  /** Ends the instances deployment `d` replaced or ended while their hosts were gone, on those that are back. */
  #endOrphans (d: DeploymentRecord): void {
    const key = `${d.owner}/${d.name}`
    const back = Object.values(d.components).some(c => c.orphans?.some(o => this.#liveness.hostAlive(o.host)) === true)
    if (!back || this.#orphaning.has(key)) return
    this.#orphaning.add(key)
    void this.#ops.endOrphans(d, host => this.#liveness.hostAlive(host))
      .catch((err: unknown) => { this.#init.log.warn({ err, deployment: d.name }, 'could not end the orphans of a deployment') })
      .finally(() => {
        this.#orphaning.delete(key)
        // An earlier description only orphans were left of is forgotten with them.
        const now = this.#store.deployments.get(d.owner, d.name)
        if (now !== undefined && now.acting === this.#self && !this.#busy.has(key) && stillUsed(now).length < now.earlier.length) this.#store.deployments.update(d.owner, d.name, { earlier: stillUsed(now) })
      })
  }

  #described (d: DeploymentRecord): Description {
    const known = this.#resolved.get(d.grant.description)
    if (known !== undefined) return known
    const description = resolveDescription(d.text, `${d.name}.yaml`)
    this.#resolved.set(d.grant.description, description)
    return description
  }

  /**
   * Ends every instance of a deployment, the last started first; `failed` names the component
   * whose death ended it, when it was not its owner's wish. Each component's termination record
   * says how it ended.
   */
  async #terminateHere (owner: string, name: string, onChange: (v: DeploymentView) => void, failed?: { path: string, cause: string }): Promise<DeploymentView> {
    this.#store.deployments.update(owner, name, { state: 'terminating', error: failed === undefined ? null : `component ${failed.path}: ${failed.cause}` })
    const record = this.#ops.get(owner, name)
    const workloads = workloadsOf(this.#described(record))
    const at = Date.now()
    // What waits for the component that died, and what waits for those, lost a dependency.
    const lost = new Set<string>()
    for (const { workload, after } of workloads) if (failed !== undefined && [...after].some(p => p === failed.path || lost.has(p))) lost.add(workload.path)
    const terminationOf = (path: string): Termination => {
      const own = record.components[path]?.termination
      if (own?.kind === 'abnormal') return own
      if (failed === undefined) return { kind: 'normal', cause: 'terminated by its owner', at }
      if (path === failed.path) return { kind: 'abnormal', cause: failed.cause, at }
      if (lost.has(path)) return { kind: 'dependency lost', cause: `component ${failed.path}, which it waits for, died: ${failed.cause}`, at }
      return { kind: 'normal', cause: `ended with its deployment, which the death of component ${failed.path} terminated`, at }
    }
    const order = workloads.map(w => w.workload.path)
    // Those an update dropped and has not ended yet go first: nothing the description has depends on them.
    for (const path of [...Object.keys(record.components).filter(p => !order.includes(p)), ...order.reverse()]) await this.#endComponent(owner, name, path, terminationOf(path), onChange)
    return this.#ops.view(this.#store.deployments.update(owner, name, { state: 'terminated', earlier: [] }) ?? this.#ops.get(owner, name))
  }

  /** Ends every instance of component `path` (those a rolling update is replacing too) and drops its checkpoints. */
  async #endComponent (owner: string, name: string, path: string, termination: Termination, onChange: (v: DeploymentView) => void): Promise<void> {
    const record = this.#ops.get(owner, name)
    const c = record.components[path]
    if (c === undefined || c.state === 'terminated') return
    this.#ops.setComponent(owner, name, path, { state: 'terminating', event: 'terminating' }, onChange)
    for (const i of [...c.instances, ...c.retiring ?? []]) await this.#ops.release(record, path, i)
    await this.#checkpointer.dropAll(record, path)
    this.#ops.setComponent(owner, name, path, { state: 'terminated', instances: [], retiring: [], termination, event: `terminated (${termination.kind})` }, onChange)
  }

  /**
   * After a restart: carries on with what was under way (bringing up, or terminating), once the
   * hosts its instances were placed on are heard of again.
   */
  recover (): void {
    for (const d of this.#store.deployments.list()) {
      if (d.acting !== this.#self || (d.state !== 'terminating' && d.state !== 'applying' && d.grant.supervisors.length === 1)) continue
      // Another supervisor may have taken over meanwhile: its copies (at least every 30 s) make this one step down.
      void this.#known(d)
        .then(async () => { await this.#carryOn(d) })
        .catch((err: unknown) => { this.#init.log.warn({ err, deployment: d.name }, 'could not carry on with a deployment') })
    }
  }

  /** Goes on with what deployment `d` was doing: bringing it up, or terminating it. */
  async #carryOn (d: DeploymentRecord): Promise<void> {
    if (d.state === 'terminating') await this.terminate(d.owner, d.name)
    else if (d.state === 'applying') await this.#exclusive(d.owner, d.name, async () => await this.#bringUp(d.owner, d.name, () => {}))
  }

  /** Registers the RPC methods through which the supervisors of a deployment keep each other's copies. */
  serve (): void {
    this.#copies.serve()
    this.directory.serve()
  }

  /**
   * A standby supervisor's look at a deployment another acts for: once that one's host has been
   * gone for TAKEOVER_DELAY_MS beyond its adverts' lifetime, the first live supervisor the grant
   * names after it takes over (the next term), and carries on.
   */
  #standBy (d: DeploymentRecord, now = Date.now()): void {
    const key = `${d.owner}/${d.name}`
    if (d.state === 'terminated' || !d.grant.supervisors.includes(this.#self) || this.#busy.has(key)) return
    if (this.#liveness.hostAlive(d.acting) || !this.#heardOf.has(key)) {
      this.#heardOf.set(key, now)
      return
    }
    if (now - (this.#heardOf.get(key) ?? now) < TAKEOVER_DELAY_MS) return
    if (d.grant.supervisors.find(h => h !== d.acting && this.#liveness.hostAlive(h)) !== this.#self) return
    this.#heardOf.delete(key)
    const taken = this.#store.deployments.update(d.owner, d.name, { acting: this.#self, term: d.term + 1 })
    this.#init.log.warn({ deployment: d.name, from: d.acting, term: d.term + 1 }, 'the supervisor of a deployment is gone: this host takes over')
    if (taken !== undefined) void this.#carryOn(taken).catch((err: unknown) => { this.#init.log.warn({ err, deployment: d.name }, 'could not carry on with a deployment taken over') })
  }

  /** Resolves once every host deployment `d` placed instances on, and each of its supervisors, is advertised (or after a while: those that are gone stay gone). */
  async #known (d: DeploymentRecord): Promise<void> {
    // Its other supervisors too: their copies are asked for first, once they are heard of.
    const wanted = new Set([...d.grant.supervisors, ...Object.values(d.components).flatMap(c => c.instances.map(i => i.host))].filter(h => h !== this.#self))
    const deadline = Date.now() + RECOVER_WAIT_MS
    while (Date.now() < deadline) {
      const heard = new Set(this.#init.overlay.search({ kind: 'host' }).map(a => a.host))
      if ([...wanted].every(h => heard.has(h))) return
      await sleep(500)
    }
  }

  /**
   * Brings up every component whose dependencies run as the description says, wave after wave,
   * until all do or one fails: new ones are placed, running ones an update changed are rolled,
   * and those it dropped are ended first.
   */
  async #bringUp (owner: string, name: string, onChange: (v: DeploymentView) => void): Promise<DeploymentView> {
    const record = this.#ops.get(owner, name)
    const description = this.#described(record)
    const all = workloadsOf(description)
    for (const path of Object.keys(record.components).filter(p => workloadAt(description, p) === undefined)) await this.#endDropped(owner, name, path, onChange)
    let retries = 0
    for (;;) {
      const state = this.#ops.get(owner, name).components
      const settled = (w: Workload): boolean => isSettled(w, state[w.path])
      const ready = all.filter(({ workload, after }) => !settled(workload) && [...after].every(p => { const w = workloadAt(description, p); return w !== undefined && settled(w) }))
      if (ready.length === 0) break
      const results = await Promise.allSettled(ready.map(async ({ workload }) => {
        try {
          if (workload.task !== undefined) await this.#tasks.run(this.#ops.get(owner, name), description, workload, onChange)
          else if (isRolled(state[workload.path])) await this.#rolling.roll(record, description, workload, onChange)
          else await this.#bringUpWorkload(record, description, workload, onChange)
        } catch (err) {
          if (!(err instanceof TaskFailed)) this.#failing(owner, name, workload.path, err, retries < BRING_UP_RETRIES, onChange)
          throw err
        }
      }))
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
      if (failed === undefined) continue
      if (retries < BRING_UP_RETRIES && isPassing(failed.reason)) {
        // A host or template that is away for now (a supervisor that died held the only copy): try again soon.
        await sleep(BRING_UP_BACKOFF_MS)
        retries++
        continue
      }
      const error = (failed.reason as Error).message
      // A task whose policy is to end the deployment when it fails does.
      if (failed.reason instanceof TaskFailed && workloadAt(description, failed.reason.path)?.onFailure === 'terminate') {
        return await this.#terminateHere(owner, name, onChange, { path: failed.reason.path, cause: failed.reason.why })
      }
      return this.#ops.view(this.#store.deployments.update(owner, name, { state: 'failed', error }) ?? record)
    }
    const done = this.#store.deployments.update(owner, name, { state: 'running', error: null, earlier: stillUsed(this.#ops.get(owner, name)) }) ?? record
    onChange(this.#ops.view(done))
    return this.#ops.view(done)
  }

  /** Ends component `path`, which an update dropped from the description: once no orphan of it is left to end, it is forgotten. */
  async #endDropped (owner: string, name: string, path: string, onChange: (v: DeploymentView) => void): Promise<void> {
    await this.#endComponent(owner, name, path, { kind: 'normal', cause: 'the description it was updated to has it no more', at: Date.now() }, onChange)
    const d = this.#ops.get(owner, name)
    if ((d.components[path]?.orphans?.length ?? 0) > 0) return
    const { [path]: _dropped, ...components } = d.components
    this.#store.deployments.update(owner, name, { components })
  }

  /** What came of a component that could not be brought up: what is away for now leaves it to be asked for again; anything else fails it. */
  #failing (owner: string, name: string, path: string, err: unknown, mayRetry: boolean, onChange: (v: DeploymentView) => void): void {
    const why = (err as Error).message
    if (mayRetry && isPassing(err)) this.#ops.setComponent(owner, name, path, { event: `trying again soon: ${why}` }, onChange)
    else this.#ops.setComponent(owner, name, path, { state: 'failed', termination: { kind: 'abnormal', cause: why, at: Date.now() }, event: why }, onChange)
  }

  /** Places every instance of a workload, each on the host chosen for it, and waits until each is healthy. */
  async #bringUpWorkload (record: DeploymentRecord, description: Description, w: Workload, onChange: (v: DeploymentView) => void): Promise<void> {
    const { owner, name } = record
    const ops = this.#ops
    const template = await this.#init.catalog.resolve(w.template)
    if (w.checkpointMs !== undefined && template.driver !== 'qemu') throw new XenosError('INVALID_ARGUMENT', `component ${w.path} asks for checkpoints, which only VMs take (the qemu driver): its template ${w.template} runs on the ${template.driver} driver`)
    const before = ops.get(owner, name).components[w.path]
    // Instances that failed make way for new ones (the next generation), placed anew.
    if (before?.state === 'failed') {
      for (const i of [...before.instances, ...before.retiring ?? []]) await ops.release(record, w.path, i)
      ops.setComponent(owner, name, w.path, { state: 'waiting', instances: [], retiring: [], outdated: false, termination: undefined, event: 'trying again', generation: before.generation + 1 }, onChange)
    }
    const generation = ops.get(owner, name).components[w.path]?.generation ?? 0
    const placed = ops.get(owner, name).components[w.path]?.instances ?? []
    const hosts = placed.length === w.count ? placed.map(i => i.host) : ops.choose(w, template, w.count)
    const instances = hosts.map((host, index) => placed.find(i => i.index === index) ?? ops.placed(record, w, index, generation, host))
    // Where each goes is written before it is asked for: after a restart it is asked of the same host, and made once.
    ops.setComponent(owner, name, w.path, { state: 'deploying', instances, event: `placing ${w.count} instance(s) on ${new Set(hosts).size} host(s)` }, onChange)
    await Promise.all(instances.map(async i => await ops.place(record, description, w, template.id, i)))
    ops.setComponent(owner, name, w.path, { state: 'running', event: 'running and healthy' }, onChange)
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

}

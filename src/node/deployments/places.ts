import { rm } from 'node:fs/promises'
import {
  checkDataPath, deploymentGrantValid, ENDED_STATES, formatDataUri, instanceIdOfPlace, parseDataUri, placeBytes, placeRequestSchema, REQUEST_MAX_SKEW_MS, sha256Hex, supervisedBytes, supervisedRequestSchema, XenosError,
  type DataRef, type DeploymentGrant, type GrantPlace, type InstanceView, type PlacedRead, type PlaceRequest, type SupervisedRequest, type TaskView,
} from '../../core/index.ts'
import { resolveDescription, type Component, type Description, type Workload } from '../../deploy/index.ts'
import type { TemplateFetcher } from '../../images/index.ts'
import { verifyHostSignature, type Overlay } from '../../overlay/index.ts'
import type { SnapshotRecord, Store } from '../../store/index.ts'
import type { TemplateCatalog } from '../catalog.ts'
import type { CreateOptions, InstanceSupervisor } from '../instances/index.ts'
import type { Tasks } from '../tasks.ts'
import type { RequestVerifier } from '../replay.ts'
import { untilHealthy, type InputStager } from '../deploy/index.ts'

/** How long a placed instance has to boot and pass its checks. */
const HEALTHY_WITHIN_MS = 5 * 60_000

export interface PlacesInit {
  overlay: Pick<Overlay, 'peerId' | 'rpc'>
  supervisor: Pick<InstanceSupervisor, 'create' | 'has' | 'view' | 'control' | 'placementOf'>
  store: Pick<Store, 'snapshots' | 'tasks'>
  fetcher: Pick<TemplateFetcher, 'ensure'>
  catalog: Pick<TemplateCatalog, 'resolve'>
  verifier: RequestVerifier
  /** Builds the disk of an instance's inputs, read in its owner's stead under its place. */
  inputs: Pick<InputStager, 'stage'>
  tasks: Pick<Tasks, 'recordFor' | 'view' | 'dropOutputs' | 'announce'>
}

/** How large the disk a task writes its outputs on is, unless its `storage.size` says. */
const TASK_OUTPUTS_MIB = 1024

/** What a place is checked to be: the instance it makes, of which workload. */
interface Admitted {
  id: string
  workload: Workload
}

/**
 * This host's side of the deployments other hosts supervise: it makes an instance a supervisor
 * placed here, and ends one at a supervisor's word, only under its owner's signed grant, only
 * for a supervisor the grant names, and only what the signed description says.
 */
export class Places {
  readonly #init: PlacesInit

  constructor (init: PlacesInit) {
    this.#init = init
  }

  get #self (): string {
    return this.#init.overlay.peerId
  }

  serve (): void {
    const { rpc } = this.#init.overlay
    // Each request comes from the host that signed it: no host relays another's.
    const placer = (req: PlaceRequest, from: { toString: () => string }): void => {
      if (from.toString() !== req.place.by) throw new XenosError('FORBIDDEN', `host ${from.toString()} asks for a place host ${req.place.by} gave`)
    }
    const signer = (req: SupervisedRequest, from: { toString: () => string }): void => {
      if (from.toString() !== req.by) throw new XenosError('FORBIDDEN', `host ${from.toString()} asks for an action in the name of host ${req.by}`)
    }
    rpc.handle('instance.place', placeRequestSchema, async (req, from) => { placer(req, from); return await this.place(req) })
    rpc.handle('task.place', placeRequestSchema, async (req, from) => { placer(req, from); return await this.placeTask(req) })
    rpc.handle('instance.supervised', supervisedRequestSchema, async (req, from) => {
      signer(req, from)
      await this.act(req)
      return null
    })
    rpc.handle('task.status', supervisedRequestSchema, async (req, from) => { signer(req, from); return await this.taskStatus(req) })
  }

  /**
   * Makes the instance `req` places on this host (or finds it made: a retry makes nothing twice),
   * and answers once it has booted and passed its health checks.
   */
  async place (req: PlaceRequest): Promise<InstanceView> {
    const admitted = await this.#admit(req)
    if (admitted.workload.task !== undefined) throw new XenosError('INVALID_ARGUMENT', `component ${req.place.component} is a task: place it as one`)
    // Asked again for one that failed before it ever came up (this host stopped while making it,
    // say): its supervisor still wants it, so it is made afresh, once the place is checked.
    const afresh = this.#neverCameUp(admitted.id)
    if (afresh || !this.#init.supervisor.has(admitted.id)) await this.#make(req, admitted, {}, afresh)
    return await this.#healthy(admitted.id)
  }

  #neverCameUp (id: string): boolean {
    if (!this.#init.supervisor.has(id)) return false
    const view = this.#init.supervisor.view(id)
    return view.state === 'failed' && view.healthyAt === undefined
  }

  /**
   * Makes the task `req` places on this host (or finds it made, or run already: a retry runs
   * nothing twice), and answers how it is once it runs; its supervisor asks again until it ends.
   */
  async placeTask (req: PlaceRequest): Promise<TaskView> {
    const admitted = await this.#admit(req)
    const { task } = admitted.workload
    if (task === undefined) throw new XenosError('INVALID_ARGUMENT', `component ${req.place.component} is not a task`)
    if (this.#init.store.tasks.get(admitted.id) === undefined) {
      const spec = { task: { outputs: checkDataPath(task.outputs), keep: task.keep }, inputs: inputsOf(admitted.workload, req.place.grant.owner).map(uri => ({ uri })) }
      const placed = { place: req.place, dropOutputs: admitted.workload.storage?.keep !== 'outputs' }
      await this.#make(req, admitted, {
        outputBytes: (admitted.workload.storage?.size ?? TASK_OUTPUTS_MIB) * 2 ** 20,
        alongside: r => {
          const record = this.#init.tasks.recordFor(r, spec, placed)
          if (record !== undefined) this.#init.store.tasks.insert(record)
        },
      })
      void this.#init.tasks.announce(admitted.id).catch(() => {})
    }
    return this.#init.tasks.view(admitted.id)
  }

  /** Checks place `req` against its grant and the description its owner signed: what it makes. */
  async #admit (req: PlaceRequest): Promise<Admitted> {
    const { place, text } = req
    const { sig, ...unsigned } = place
    const { grant } = place
    const id = instanceIdOfPlace(place)
    if (place.host !== this.#self) throw new XenosError('UNAUTHENTICATED', `this place is on host ${place.host}, not on host ${this.#self}`)
    checkActingFor(grant, place.by)
    if (!await verifyHostSignature(place.by, placeBytes(unsigned), sig)) throw new XenosError('UNAUTHENTICATED', `host ${place.by} did not sign this place`)
    const workload = signedWorkload(text, grant, place.component)
    if (workload === undefined) throw new XenosError('INVALID_ARGUMENT', `deployment ${grant.name} has no component ${place.component} with a template`)
    if (place.index >= workload.count) throw new XenosError('INVALID_ARGUMENT', `component ${place.component} has ${workload.count} instance(s), not ${place.index + 1}`)
    const unknown = Object.keys(req.env).filter(k => !(k in workload.env))
    if (unknown.length > 0) throw new XenosError('INVALID_ARGUMENT', `component ${place.component} sets no ${unknown.join(', ')} in its description`)
    const named = inputsOf(workload, grant.owner)
    if ((req.inputs ?? []).some(i => !named.includes(i.uri))) throw new XenosError('INVALID_ARGUMENT', `component ${place.component} names no such input in its description`)
    return { id, workload }
  }

  /**
   * Makes the instance `admitted`, its inputs staged, once the place is checked to be fresh and
   * used once; `afresh`: in place of the one of that id here, which never came up.
   */
  async #make (req: PlaceRequest, admitted: Admitted, options: Pick<CreateOptions, 'outputBytes' | 'alongside'> = {}, afresh = false): Promise<void> {
    const { place } = req
    const { grant } = place
    const { id, workload } = admitted
    if (Math.abs(Date.now() - place.at) > REQUEST_MAX_SKEW_MS) throw new XenosError('UNAUTHENTICATED', 'this place was given too long ago, or by a clock far from this host\'s')
    const named = await this.#init.catalog.resolve(workload.template)
    if (named.id !== place.template) throw new XenosError('FORBIDDEN', `component ${place.component} runs ${workload.template} (${named.id}), not ${place.template}`)
    const snapshot = req.snapshot !== undefined
      ? this.#checkpoint(req.snapshot, place, workload)
      : workload.storage?.snapshot === undefined ? undefined : this.#ownersSnapshot(workload.storage.snapshot, place)
    this.#init.verifier.claimOnce(grant.owner, place.sig, place.at)
    if (afresh) await this.#init.supervisor.control(id, 'destroy')
    // Read in the owner's stead: each holder checks the place and that the description names the input.
    const inputs = inputsOf(workload, grant.owner).map(uri => ({ uri, ...req.inputs?.find(i => i.uri === uri), authority: { placed: { text: req.text, place } } }))
    const staging = inputs.length === 0 ? undefined : this.#init.inputs.stage(grant.owner, inputs)
    staging?.catch(() => {})
    let image: string | undefined
    try {
      const { template } = await this.#init.fetcher.ensure(place.template)
      image = await staging
      await this.#init.supervisor.create(template, grant.owner, [{
        id,
        name: instanceName(grant.name, workload, place.index),
        placement: { root: place, drains: [] },
        links: req.links,
        env: req.env,
        resources: workload.resources,
      }], { snapshot, inputs: image, ...options })
    } finally {
      if (image !== undefined) await rm(image, { force: true })
      else if (staging !== undefined) await staging.then(async path => { await rm(path, { force: true }) }, () => {})
    }
  }

  /** The checkpoint held here that a place resumes from: one of an earlier making of the same instance of the same deployment. */
  #checkpoint (id: string, place: GrantPlace, workload: Workload): SnapshotRecord {
    const snapshot = this.#init.store.snapshots.get(id)
    if (snapshot === undefined) throw new XenosError('SNAPSHOT_NOT_FOUND', `host ${this.#self} keeps no checkpoint ${id}`)
    if (workload.checkpointMs === undefined) throw new XenosError('FORBIDDEN', `component ${place.component} of deployment ${place.grant.name} takes no checkpoints to resume from`)
    if (snapshot.templateId !== place.template || !isEarlierMaking(snapshot.instanceId, place)) throw new XenosError('FORBIDDEN', `snapshot ${id} is not a checkpoint of instance ${place.index} of component ${place.component} of deployment ${place.grant.name}`)
    return snapshot
  }

  /** The snapshot held here that a component's `storage.snapshot` starts it from: one its owner took, of its template. */
  #ownersSnapshot (id: string, place: GrantPlace): SnapshotRecord {
    const snapshot = this.#init.store.snapshots.get(id)
    if (snapshot === undefined) throw new XenosError('SNAPSHOT_NOT_FOUND', `host ${this.#self} holds no snapshot ${id}: name the host that took it in the placement of component ${place.component}`)
    if (snapshot.owner !== place.grant.owner) throw new XenosError('FORBIDDEN', `snapshot ${id} belongs to another owner`)
    if (snapshot.templateId !== place.template) throw new XenosError('INVALID_ARGUMENT', `snapshot ${id} is of template ${snapshot.templateId}, not of ${place.template}, which component ${place.component} runs`)
    return snapshot
  }

  async #healthy (id: string): Promise<InstanceView> {
    const view = this.#init.supervisor.view(id)
    await untilHealthy([view], 0, async i => this.#init.supervisor.view(i), HEALTHY_WITHIN_MS)
    return this.#init.supervisor.view(id)
  }

  /**
   * Ends an instance placed here under a deployment (and the outputs of a task whose description
   * keeps none), or starts it again, at the word of a supervisor its grant names.
   */
  async act (req: SupervisedRequest): Promise<void> {
    const ran = (this.#init.store.tasks.get(req.id)?.placed ?? null) !== null
    if (!this.#init.supervisor.has(req.id) && !ran && req.action === 'release') return
    await this.authorised(req)
    if (req.action === 'release') {
      if (this.#init.supervisor.has(req.id)) await this.#init.supervisor.control(req.id, 'destroy')
      if (ran) this.#init.tasks.dropOutputs(req.id)
      return
    }
    if (req.action !== 'restart') throw new XenosError('INVALID_ARGUMENT', `a ${req.action} is asked for on its own`)
    // Started again where it is: a task that ended starts; one that runs, hung, is stopped first.
    if (!ENDED_STATES.includes(this.#init.supervisor.view(req.id).state)) await this.#init.supervisor.control(req.id, 'stop')
    await this.#init.supervisor.control(req.id, 'start')
  }

  /** How the task a supervisor placed here is, at its signed word (its outputs' names are its owner's to see). */
  async taskStatus (req: SupervisedRequest): Promise<TaskView> {
    if (req.action !== 'status') throw new XenosError('INVALID_ARGUMENT', `a ${req.action} is not asked for this way`)
    await this.authorised(req)
    return this.#init.tasks.view(req.id)
  }

  /**
   * The place of the instance `req` acts on, once it is checked that the instance was placed here
   * under a deployment (or ran here, as a task, under one) and that a supervisor its grant names
   * signed `req` just now (once).
   */
  async authorised (req: SupervisedRequest): Promise<GrantPlace> {
    const ran = this.#init.store.tasks.get(req.id)?.placed?.place
    if (!this.#init.supervisor.has(req.id) && ran === undefined) throw new XenosError('INSTANCE_NOT_FOUND', `host ${this.#self} has no instance ${req.id}`)
    const root = this.#init.supervisor.has(req.id) ? this.#init.supervisor.placementOf(req.id)?.root : ran
    if (root === undefined || !('grant' in root)) throw new XenosError('FORBIDDEN', `instance ${req.id} was not placed under a deployment`)
    if (!root.grant.supervisors.includes(req.by)) throw new XenosError('FORBIDDEN', `host ${req.by} may not act for deployment ${root.grant.name}`)
    if (Math.abs(Date.now() - req.at) > REQUEST_MAX_SKEW_MS) throw new XenosError('UNAUTHENTICATED', `this ${req.action} was signed too long ago, or by a clock far from this host's`)
    if (!await verifyHostSignature(req.by, supervisedBytes(req.action, req.id, root.grant.sig, req.by, req.at), req.sig)) throw new XenosError('UNAUTHENTICATED', `host ${req.by} did not sign this ${req.action}`)
    this.#init.verifier.claimOnce(root.grant.owner, req.sig, req.at)
    return root
  }
}

/** Throws unless `grant` is signed by the owner it names and names host `by` among its supervisors. */
export function checkActingFor (grant: DeploymentGrant, by: string): void {
  if (!deploymentGrantValid(grant)) throw new XenosError('UNAUTHENTICATED', `deployment ${grant.name} is not signed by the owner it names`)
  if (!grant.supervisors.includes(by)) throw new XenosError('FORBIDDEN', `host ${by} may not act for deployment ${grant.name}: its owner named ${grant.supervisors.join(', ')}`)
}

/** The workload at `component` of description `text`, once it is checked to be the text the owner signed in `grant`. */
export function signedWorkload (text: string, grant: DeploymentGrant, component: string): Workload | undefined {
  if (sha256Hex(text) !== grant.description) throw new XenosError('UNAUTHENTICATED', `the description sent is not the one the owner of deployment ${grant.name} signed`)
  return workloadAt(resolveDescription(text, `${grant.name}.yaml`), component)
}

/** How long after it was given a place lets its host read the inputs it names: they are read while the instance is made, one file after another. */
const PLACED_READ_WITHIN_MS = 30 * 60_000

/**
 * The owner in whose stead host `peer` reads `signed` (a file, or a directory holding the file
 * read): the one whose grant `placed` carries, once it is checked that a supervisor the grant
 * names placed an instance on `peer` lately, of a component whose description, as the owner
 * signed it, names `signed` among its inputs.
 */
export async function placedReaderOf (placed: PlacedRead, peer: string, signed: DataRef): Promise<string> {
  const { text, place } = placed
  const { sig, ...unsigned } = place
  if (place.host !== peer) throw new XenosError('FORBIDDEN', `this place is on host ${place.host}, not on host ${peer}, which asks`)
  checkActingFor(place.grant, place.by)
  if (Math.abs(Date.now() - place.at) > PLACED_READ_WITHIN_MS) throw new XenosError('UNAUTHENTICATED', 'this place was given too long ago to read its inputs with')
  if (!await verifyHostSignature(place.by, placeBytes(unsigned), sig)) throw new XenosError('UNAUTHENTICATED', `host ${place.by} did not sign this place`)
  const named = inputsOf(signedWorkload(text, place.grant, place.component), place.grant.owner)
  if (!named.includes(formatDataUri(signed))) throw new XenosError('FORBIDDEN', `component ${place.component} of deployment ${place.grant.name} names no input ${formatDataUri(signed)}`)
  return place.grant.owner
}

/** The inputs workload `w` names (`data://me/…` is its owner's), as full data:// names. */
export function inputsOf (w: Workload | undefined, owner: string): string[] {
  return (w?.storage?.inputs ?? []).map(uri => formatDataUri(parseDataUri(uri, owner)))
}

/** How many makings back a checkpoint may be of: a checkpoint is taken of every making that runs long enough. */
const CHECKPOINT_GENERATIONS = 100

/** Whether instance `id` filled place `place` in one of its recent earlier makings (generations). */
export function isEarlierMaking (id: string, place: Pick<GrantPlace, 'grant' | 'component' | 'index' | 'generation'>): boolean {
  for (let g = place.generation - 1; g >= Math.max(0, place.generation - CHECKPOINT_GENERATIONS); g--) {
    if (instanceIdOfPlace({ ...place, generation: g }) === id) return true
  }
  return false
}

/** The workload at component path `path` (`cluster.db`) of a description. */
export function workloadAt (d: Description, path: string): Workload | undefined {
  let components: Record<string, Component> = d.components
  let found: Component | undefined
  for (const name of path.split('.')) {
    found = components[name]
    if (found === undefined) return undefined
    if (found.kind !== 'workload') components = found.components
  }
  return found?.kind === 'workload' ? found : undefined
}

/** The name of instance `index` of a workload: the deployment's and the component's, so that links by name follow replacements. */
export function instanceName (deployment: string, w: Workload, index: number): string {
  const base = `${deployment}-${w.path.replaceAll('.', '-')}`
  return w.count > 1 ? `${base}-${index + 1}` : base
}


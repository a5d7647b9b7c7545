import type { Logger } from 'pino'
import { z } from 'zod'
import { checkDataPath, ENDED_STATES, formatDataUri, instanceIdSchema, requestAuthSchema, taskViewSchema, XenosError, type DeploySpec, type RequestAuth, type TaskView } from '../core/index.ts'
import type { DataRepository } from '../data/index.ts'
import type { Overlay } from '../overlay/index.ts'
import type { InstanceRecord, Store, TaskRecord } from '../store/index.ts'
import type { Outputs } from './outputs.ts'
import { callHost } from './remote.ts'
import type { RequestVerifier } from './replay.ts'
import type { InstanceSupervisor } from './instances/index.ts'

export interface TasksInit {
  overlay: Pick<Overlay, 'peerId' | 'rpc' | 'provide' | 'findProviders' | 'learnHost'>
  store: Pick<Store, 'tasks' | 'instances'>
  supervisor: Pick<InstanceSupervisor, 'control'>
  outputs: Pick<Outputs, 'store'>
  repository: Pick<DataRepository, 'remove'>
  verifier: RequestVerifier
  log: Logger
}

/** How long a search for the host that ran a task waits on the DHT. */
const FIND_RUNNER_MS = 5000
/** Runners of other hosts' tasks remembered at most. */
const MAX_KNOWN_RUNNERS = 1000
const getRequestSchema = z.strictObject({ id: instanceIdSchema, auth: requestAuthSchema })
const hasRequestSchema = z.strictObject({ id: instanceIdSchema })

/** The DHT key under which a host announces a task it ran (hashed into a CID). */
function runnerKey (id: string): string {
  return `xenos-task:${id}`
}

/** Whether a task's end has yet to be fully recorded (the store's `unfinished()`). */
function isUnfinished (t: TaskRecord): boolean {
  return t.state === 'running' || t.state === 'collecting'
}

/** Throws unless a deploy's `task` part is one a host can run: one instance (`count` in all), with an outputs disk. */
export function checkTaskSpec (spec: DeploySpec, count: number): void {
  if (spec.task === undefined) return
  if (count !== 1) throw new XenosError('INVALID_ARGUMENT', 'a task runs one instance: deploy it with count 1 on one host')
  if (spec.outputBytes === undefined) throw new XenosError('INVALID_ARGUMENT', 'a task needs an outputs disk: give outputBytes')
  if (spec.snapshot !== undefined) throw new XenosError('INVALID_ARGUMENT', 'a task boots afresh: it cannot start from a snapshot')
  checkDataPath(spec.task.outputs)
}

/**
 * Tasks: instances run to their end whose outputs go to the owner's repository. The host that
 * runs one keeps its record (written with the instance's, in one transaction) and drives it
 * from instance changes: once the VM ends, its outputs are stored, the record says how it ended,
 * and the instance is destroyed unless kept. Each step is recorded before the next, so a host
 * that stops anywhere picks the task up where it was.
 */
export class Tasks {
  readonly #init: TasksInit
  /** Tasks whose end is being handled now. */
  readonly #finishing = new Set<string>()
  /** Hosts that ran tasks asked for here lately, by task. */
  readonly #runners = new Map<string, string>()

  constructor (init: TasksInit) {
    this.#init = init
  }

  serve (): void {
    this.#init.overlay.rpc.handle('task.get', getRequestSchema, async req => this.#getHere(req.id, req.auth))
    this.#init.overlay.rpc.handle('task.has', hasRequestSchema, async req => this.#init.store.tasks.get(req.id) !== undefined)
  }

  /** The record to write with a new instance of a task deploy (or of a task a deployment's supervisor `placed` here). */
  recordFor (instance: InstanceRecord, spec: Pick<DeploySpec, 'task' | 'inputs'>, placed: TaskRecord['placed'] = null): TaskRecord | undefined {
    if (spec.task === undefined) return undefined
    return {
      id: instance.id,
      owner: instance.owner,
      templateId: instance.templateId,
      inputs: (spec.inputs ?? []).map(i => i.uri),
      outputsPrefix: spec.task.outputs,
      keep: spec.task.keep,
      state: 'running',
      exitCode: null,
      error: null,
      outputs: [],
      refused: [],
      placed,
      createdAt: instance.createdAt,
      collectingAt: null,
      endedAt: null,
    }
  }

  /** After a start: finishes what the host stopped in the middle of, and announces its tasks. */
  async recover (): Promise<void> {
    for (const t of this.#init.store.tasks.unfinished()) this.#instanceChanged(t.id, this.#init.store.instances.get(t.id))
    for (const r of this.#init.store.instances.list()) {
      const t = this.#init.store.tasks.get(r.id)
      if (t !== undefined && !isUnfinished(t) && !t.keep) await this.#destroy(t.id)
    }
  }

  async announceAll (): Promise<void> {
    for (const id of this.#init.store.tasks.ids()) await this.announce(id)
  }

  async announce (id: string): Promise<void> {
    await this.#init.overlay.provide(runnerKey(id))
  }

  /** Drives a task from its instance's changes (`record` undefined: the instance is gone). */
  instanceChanged (id: string, record: InstanceRecord | undefined): void {
    if (this.#init.store.tasks.get(id) === undefined) return
    this.#instanceChanged(id, record)
  }

  #instanceChanged (id: string, record: InstanceRecord | undefined): void {
    if (record !== undefined && !ENDED_STATES.includes(record.state)) return
    if (this.#finishing.has(id)) return
    this.#finishing.add(id)
    void this.#finish(id, record).catch((err: unknown) => { this.#init.log.error({ err, task: id }, 'could not finish a task') })
      .finally(() => this.#finishing.delete(id))
  }

  async #finish (id: string, record: InstanceRecord | undefined): Promise<void> {
    const t = this.#init.store.tasks.get(id)
    if (t === undefined || !isUnfinished(t)) return
    if (record === undefined) {
      this.#init.store.tasks.update(id, { state: 'failed', error: 'its instance was destroyed before the task ended', endedAt: Date.now() })
      return
    }
    this.#init.store.tasks.update(id, { state: 'collecting', collectingAt: t.collectingAt ?? Date.now() })
    const errors: string[] = []
    if (record.state === 'stopped') errors.push('its instance was stopped before the task ended')
    else if (record.error !== null) errors.push(record.error)
    let collected: Awaited<ReturnType<Outputs['store']>> = { files: [], refused: [] }
    try {
      collected = await this.#init.outputs.store(id, t.outputsPrefix)
    } catch (err) {
      errors.push(`its outputs could not be stored: ${(err as Error).message}`)
    }
    const succeeded = record.state === 'exited' && errors.length === 0
    this.#init.store.tasks.update(id, {
      state: succeeded ? 'succeeded' : 'failed',
      exitCode: record.exitCode,
      error: errors.length === 0 ? null : errors.join('; '),
      outputs: collected.files,
      refused: collected.refused,
      endedAt: Date.now(),
    })
    this.#init.log.info({ task: id, succeeded, outputs: collected.files.length }, 'task ended')
    if (!t.keep) await this.#destroy(id)
  }

  async #destroy (id: string): Promise<void> {
    await this.#init.supervisor.control(id, 'destroy').catch((err: unknown) => { this.#init.log.warn({ err, task: id }, 'could not destroy the instance of an ended task') })
  }

  /** A task of the owner's (signed `task.get` for the host that runs or ran it), asked of that host. */
  async get (id: string, auth: RequestAuth): Promise<TaskView> {
    if (auth.host === this.#init.overlay.peerId) return this.#getHere(id, auth)
    return taskViewSchema.parse(await callHost(this.#init.overlay, auth.host, 'task.get', { id, auth }))
  }

  /** The host that runs or ran task `id`: this one, or one that announced it on the DHT and still knows it. */
  async runnerOf (id: string): Promise<string> {
    if (this.#init.store.tasks.get(id) !== undefined) return this.#init.overlay.peerId
    // A task watched through this host is asked for every second: remember where it runs.
    const known = this.#runners.get(id)
    const runners = known !== undefined ? [known] : (await this.#init.overlay.findProviders(runnerKey(id), FIND_RUNNER_MS)).filter(h => h !== this.#init.overlay.peerId)
    for (const host of runners) {
      try {
        if (z.boolean().parse(await callHost(this.#init.overlay, host, 'task.has', { id }))) {
          this.#remember(id, host)
          return host
        }
      } catch (err) {
        this.#init.log.debug({ err, host, task: id }, 'a host announcing a task could not be asked')
      }
      // A host that announced it may have moved it on with its instance since.
      this.#runners.delete(id)
    }
    if (known !== undefined) return await this.runnerOf(id)
    throw new XenosError('TASK_NOT_FOUND', `no host knows task ${id}: check the id with "xenos task ls" on the host that ran it`)
  }

  #remember (id: string, host: string): void {
    this.#runners.delete(id)
    this.#runners.set(id, host)
    // The oldest first: a Map iterates in insertion order.
    for (const old of this.#runners.keys()) {
      if (this.#runners.size <= MAX_KNOWN_RUNNERS) break
      this.#runners.delete(old)
    }
  }

  /** The owner's tasks on this host, newest first (signed `task.list`). */
  list (auth: RequestAuth, limit: number): TaskView[] {
    this.#init.verifier.verify(auth, { action: 'task.list', target: 'tasks', params: {} })
    return this.#init.store.tasks.listOf(auth.owner, limit).map(t => this.#view(t))
  }

  #getHere (id: string, auth: RequestAuth): TaskView {
    this.#init.verifier.verify(auth, { action: 'task.get', target: id, params: {} })
    const t = this.#init.store.tasks.get(id)
    if (t === undefined) throw new XenosError('TASK_NOT_FOUND', `this host ran no task ${id}`)
    if (t.owner !== auth.owner) throw new XenosError('FORBIDDEN', `task ${id} belongs to another owner`)
    return this.#view(t)
  }

  /** Task `id` as it is on this host (its asker is checked already). */
  view (id: string): TaskView {
    const t = this.#init.store.tasks.get(id)
    if (t === undefined) throw new XenosError('TASK_NOT_FOUND', `this host ran no task ${id}`)
    return this.#view(t)
  }

  /** Removes from the repository the outputs task `id` stored, when the deployment that placed it keeps none (it is ended). */
  dropOutputs (id: string): void {
    const t = this.#init.store.tasks.get(id)
    if (t?.placed?.dropOutputs !== true || t.outputs.length === 0) return
    for (const f of t.outputs) {
      try {
        this.#init.repository.remove(t.owner, t.owner, f.path)
      } catch (err) {
        // Removed by its owner already, or overwritten since: nothing of this task's is left there.
        this.#init.log.debug({ err, task: id, path: f.path }, 'an output of an ended task was gone already')
      }
    }
    this.#init.store.tasks.update(id, { outputs: [] })
    this.#init.log.info({ task: id, files: t.outputs.length }, 'removed the outputs of a task its deployment keeps nothing of')
  }

  #view (t: TaskRecord): TaskView {
    return {
      id: t.id,
      host: this.#init.overlay.peerId,
      owner: t.owner,
      template: t.templateId,
      inputs: t.inputs,
      outputs: formatDataUri({ owner: t.owner, path: t.outputsPrefix }),
      keep: t.keep,
      state: t.state,
      instanceState: this.#init.store.instances.get(t.id)?.state ?? null,
      exitCode: t.exitCode,
      error: t.error,
      files: t.outputs,
      refused: t.refused,
      createdAt: t.createdAt,
      collectingAt: t.collectingAt,
      endedAt: t.endedAt,
    }
  }
}

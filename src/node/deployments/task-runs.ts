import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import { parseDataUri, XenosError, type DeploymentView, type PlaceRequest, type TaskView } from '../../core/index.ts'
import type { Description, Workload } from '../../deploy/index.ts'
import type { DeploymentRecord, PlacedInstance } from '../../store/index.ts'
import type { TemplateCatalog } from '../catalog.ts'
import type { ComponentOps } from './components.ts'
import type { Liveness } from './liveness.ts'
import { inputsOf, workloadAt } from './places.ts'

export interface TaskRunsInit {
  ops: ComponentOps
  catalog: Pick<TemplateCatalog, 'resolve'>
  liveness: Pick<Liveness, 'hostAlive'>
  log: Logger
}

/** How often a supervisor asks the host of a task it placed how the task is. */
const ASK_EVERY_MS = 1000
/** What a host that is away, for now or for good, answers: asked again until it is known to be gone. */
const AWAY = new Set(['PEER_UNREACHABLE', 'HOST_NOT_FOUND', 'TIMEOUT'])

/** A task that failed for good: its component's policy says what follows. */
export class TaskFailed extends XenosError {
  readonly path: string
  readonly why: string

  constructor (path: string, why: string) {
    super('INVALID_STATE', `task ${path} failed: ${why}`)
    this.path = path
    this.why = why
  }
}

/**
 * Task components: each runs to its end on the host chosen for it (like `xenos run`), its
 * inputs staged in the owner's stead under its place, its /out stored in the owner's repository
 * at its `outputs`; the supervisor asks its host how it is until it has ended. One that fails
 * runs again (`restart`: where it can, `replace`: elsewhere) up to `restarts.attempts` times;
 * then, or at once for `terminate`, it fails for good; `ignore` lets it be failed.
 */
export class TaskRuns {
  readonly #init: TaskRunsInit

  constructor (init: TaskRunsInit) {
    this.#init = init
  }

  /** Runs task component `w` of deployment `record` until it has completed, or fails for good (throws TaskFailed). */
  async run (record: DeploymentRecord, description: Description, w: Workload, onChange: (v: DeploymentView) => void): Promise<void> {
    const { ops } = this.#init
    const { owner, name } = record
    const template = await this.#init.catalog.resolve(w.template)
    let avoid = new Set<string>()
    for (;;) {
      const c = ops.get(owner, name).components[w.path]
      let i = c?.instances[0]
      // A run that ended (failed, or of an earlier description) makes way for the next: its outputs go with it unless they are kept.
      if (i !== undefined && (i.grant !== undefined || c?.state === 'failed' || c?.state === 'completed')) {
        await ops.release(ops.get(owner, name), w.path, i)
        i = ops.placed(record, w, 0, i.generation + 1, this.#host(w, template, avoid))
        ops.setComponent(owner, name, w.path, { state: 'deploying', instances: [i], outdated: false, outputs: [], termination: undefined, event: `running task ${i.id} on ${i.host.slice(-8)}` }, onChange)
      } else if (i === undefined) {
        i = ops.placed(record, w, 0, c?.generation ?? 0, this.#host(w, template, avoid))
        ops.setComponent(owner, name, w.path, { state: 'deploying', instances: [i], event: `running task ${i.id} on ${i.host.slice(-8)}` }, onChange)
      }
      // Asked again after a restart: its host finds it made, or run, and says how it is.
      const started = await ops.placeTask(ops.get(owner, name), description, w, template.id, i, this.#inputsFor(ops.get(owner, name), description, w))
      ops.setComponent(owner, name, w.path, { state: 'running', event: `task ${i.id} runs on ${i.host.slice(-8)}` }, onChange)
      const ended = await this.#ended(record, w, i, started)
      if (ended.state === 'succeeded') {
        ops.setComponent(owner, name, w.path, { state: 'completed', restarts: 0, outputs: ended.files.map(f => f.path), event: `completed: ${ended.files.length} file(s) stored at ${ended.outputs}` }, onChange)
        return
      }
      const why = ended.error ?? `it ended with code ${ended.exitCode ?? '?'}`
      const tries = ops.get(owner, name).components[w.path]?.restarts ?? 0
      if ((w.onFailure === 'restart' || w.onFailure === 'replace') && tries < w.restarts.attempts) {
        ops.setComponent(owner, name, w.path, { state: 'failed', restarts: tries + 1, event: `task ${i.id} failed (${why}): running it again (${tries + 1} of ${w.restarts.attempts})` }, onChange)
        avoid = w.onFailure === 'replace' || !this.#init.liveness.hostAlive(i.host) ? new Set([i.host]) : new Set()
        await sleep(w.restarts.backoffMs)
        continue
      }
      const termination = { kind: 'abnormal' as const, cause: `task ${i.id} failed: ${why}`, at: Date.now() }
      if (w.onFailure === 'ignore') {
        ops.setComponent(owner, name, w.path, { state: 'failed', termination, event: `task ${i.id} failed (${why}); its policy is to let it be` }, onChange)
        return
      }
      ops.setComponent(owner, name, w.path, { state: 'failed', termination, event: `task ${i.id} failed (${why})` }, onChange)
      throw new TaskFailed(w.path, `${i.id} ${why}`)
    }
  }

  #host (w: Workload, template: Awaited<ReturnType<TemplateCatalog['resolve']>>, avoid: ReadonlySet<string>): string {
    return this.#init.ops.choose(w, template, 1, avoid)[0] ?? ''
  }

  /** How task `i` ended, asked of its host until it has; a host that is gone for the component's liveness window failed it. */
  async #ended (record: DeploymentRecord, w: Workload, i: PlacedInstance, view: TaskView): Promise<TaskView> {
    let heard = Date.now()
    while (view.state === 'running' || view.state === 'collecting') {
      await sleep(ASK_EVERY_MS)
      try {
        view = await this.#init.ops.taskStatus(this.#init.ops.get(record.owner, record.name), i)
        heard = Date.now()
      } catch (err) {
        // Its host away for a while is asked again; an answer that it cannot say is the end of this run.
        if (!(err instanceof XenosError) || !AWAY.has(err.code)) return { ...view, state: 'failed', error: `its host could not say how it is: ${(err as Error).message}` }
        this.#init.log.debug({ err, task: i.id }, 'could not ask how a task is')
        if (!this.#init.liveness.hostAlive(i.host) && Date.now() - heard > w.liveness.everyMs * w.liveness.failAfter) {
          return { ...view, state: 'failed', error: `its host ${i.host.slice(-8)} is gone` }
        }
      }
    }
    return view
  }

  /**
   * The inputs of task `w` that are directories a task of the deployment stored, each with the
   * files under it that task left (the others are read as files: their holders know them).
   */
  #inputsFor (record: DeploymentRecord, description: Description, w: Workload): PlaceRequest['inputs'] {
    const stored = Object.entries(record.components).filter(([path]) => workloadAt(description, path)?.task !== undefined).flatMap(([, c]) => c.outputs ?? [])
    return inputsOf(w, record.owner).flatMap(uri => {
      const { path } = parseDataUri(uri)
      const files = stored.filter(f => f.startsWith(`${path}/`)).map(f => f.slice(path.length + 1))
      return files.length === 0 ? [] : [{ uri, files }]
    })
  }
}

import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import { type TemplateSummary, XenosError } from '../../core/index.ts'
import type { Description, Workload } from '../../deploy/index.ts'
import type { DeploymentRecord, DeploymentTable, PlacedInstance } from '../../store/index.ts'
import type { TemplateCatalog } from '../catalog.ts'
import type { ComponentOps } from './components.ts'
import type { Liveness } from './liveness.ts'
import { workloadsOf } from './order.ts'
import { holdsHostOrId } from './updates.ts'

export interface FailurePoliciesInit {
  ops: ComponentOps
  liveness: Pick<Liveness, 'hostAlive'>
  store: { deployments: Pick<DeploymentTable, 'update'> }
  catalog: Pick<TemplateCatalog, 'resolve'>
  log: Logger
}

/** Replacements of one component within this window that make it a component that keeps failing. */
const REPLACE_WINDOW_MS = 30 * 60_000
const MAX_REPLACEMENTS = 3

/**
 * What a supervisor does when an instance of a deployment dies, as its component's `onFailure`
 * says: starts it again where it is (up to `restarts.attempts` times, `restarts.backoff` apart,
 * while its host lives), then makes it anew on another host (`replace`, Nomad's reschedule); or
 * ends the deployment (`terminate`), or lets it be (`ignore`). A component replaced more than
 * MAX_REPLACEMENTS times within REPLACE_WINDOW_MS fails the deployment: no endless loop.
 */
export class FailurePolicies {
  readonly #init: FailurePoliciesInit

  constructor (init: FailurePoliciesInit) {
    this.#init = init
  }

  async onDeath (record: DeploymentRecord, description: Description, w: Workload, i: PlacedInstance, why: string, terminate: (cause: string) => Promise<void>): Promise<void> {
    const { ops } = this.#init
    const { owner, name } = record
    const died = `${i.id} died (${why})`
    this.#init.log.info({ deployment: name, component: w.path, instance: i.id, why, policy: w.onFailure }, 'an instance of a deployment died')
    if (w.onFailure === 'ignore') {
      ops.setComponent(owner, name, w.path, { state: 'failed', termination: { kind: 'abnormal', cause: died, at: Date.now() }, event: `${died}; its policy is to let it be` })
      return
    }
    if (w.onFailure === 'terminate') {
      ops.setComponent(owner, name, w.path, { state: 'failed', event: `${died}: terminating the deployment, as its policy says` })
      await terminate(died)
      return
    }
    const tries = ops.get(owner, name).components[w.path]?.restarts ?? 0
    if (w.onFailure === 'restart' && tries < w.restarts.attempts && this.#init.liveness.hostAlive(i.host)) {
      await sleep(w.restarts.backoffMs)
      ops.setComponent(owner, name, w.path, { restarts: tries + 1, event: `${died}: starting it again where it is (${tries + 1} of ${w.restarts.attempts})` })
      try {
        await ops.tell(record, i, 'restart')
        return
      } catch (err) {
        this.#init.log.warn({ err, instance: i.id }, 'could not start an instance of a deployment again: replacing it')
      }
    }
    await this.#replace(record, description, w, i, died)
  }

  /** Makes instance `i` anew (its next generation) on another host, the original ended if its host answers. */
  async #replace (record: DeploymentRecord, description: Description, w: Workload, i: PlacedInstance, died: string): Promise<void> {
    const { ops } = this.#init
    const { owner, name } = record
    const c = ops.get(owner, name).components[w.path]
    const now = Date.now()
    const recent = (c?.replacedAt ?? []).filter(t => now - t < REPLACE_WINDOW_MS)
    if (recent.length >= MAX_REPLACEMENTS) {
      this.#fail(record, w, `${died}; it keeps failing: made anew ${recent.length} times in ${REPLACE_WINDOW_MS / 60_000} min, and no more`)
      return
    }
    // Never two copies: the original is ended first if its host answers, else as soon as its host is back.
    await ops.release(record, w.path, i)
    try {
      const template = await this.#init.catalog.resolve(w.template)
      const others = (c?.instances ?? []).filter(x => x.index !== i.index).map(x => x.host)
      const avoid = new Set([i.host, ...w.placement.spread === true ? others : []])
      // From its latest checkpoint, where it is kept, if that host lives (and it is of this description's making: a place resumes only its own); else from its template.
      const checkpoint = c?.checkpoints?.find(cp => cp.index === i.index && cp.grant === undefined && !avoid.has(cp.host) && this.#init.liveness.hostAlive(cp.host))
      const chosen = checkpoint === undefined ? this.#anotherHost(w, template, i.host, avoid) : { host: checkpoint.host, crowded: false }
      const host = chosen.host
      const next = ops.placed(record, w, i.index, i.generation + 1, host)
      const from = (checkpoint === undefined ? 'from its template' : `from its checkpoint of ${new Date(checkpoint.at).toISOString()}`) +
        (chosen.crowded ? ', beside a sibling: no other host has room' : '')
      ops.setComponent(owner, name, w.path, {
        state: 'deploying',
        instances: (c?.instances ?? []).map(x => x.index === i.index ? next : x),
        restarts: 0,
        replacedAt: [...recent, now],
        event: `${died}: making it anew on ${host.slice(-8)} ${from}`,
      })
      await ops.place(record, description, w, template.id, next, checkpoint?.snapshot)
      ops.setComponent(owner, name, w.path, { state: 'running', event: `${died}; ${next.id} on ${host.slice(-8)} took its place` })
    } catch (err) {
      this.#fail(record, w, `${died}; could not make it anew: ${(err as Error).message}`)
      return
    }
    if (i.index === 0) await this.#renewDependents(record, description, w)
  }

  /**
   * A host for a replacement, not `diedOn` nor (for `spread`) one of its siblings'; when every
   * host with room has a sibling, one beside a sibling (`crowded`): a component that runs on
   * fewer hosts than it asked for serves, a failed one does not (Kubernetes' `ScheduleAnyway`).
   */
  #anotherHost (w: Workload, template: TemplateSummary, diedOn: string, avoid: ReadonlySet<string>): { host: string, crowded: boolean } {
    const { ops } = this.#init
    try {
      return { host: ops.choose(w, template, 1, avoid)[0] ?? '', crowded: false }
    } catch (err) {
      if (w.placement.spread !== true || !(err instanceof XenosError && err.code === 'NO_HOST_AVAILABLE')) throw err
      return { host: ops.choose({ ...w, placement: { ...w.placement, spread: undefined } }, template, 1, new Set([diedOn]))[0] ?? '', crowded: true }
    }
  }

  /**
   * Makes anew, each where it is (elsewhere if its host is gone), the instances of the components
   * whose environment holds the host or id of `w`'s first instance, which has just changed: an
   * instance's environment is fixed when it is made. (An endpoint needs nothing: its link
   * follows the new instance.)
   */
  async #renewDependents (record: DeploymentRecord, description: Description, w: Workload): Promise<void> {
    const { ops } = this.#init
    const { owner, name } = record
    for (const { workload: d } of workloadsOf(description).filter(({ workload }) => holdsHostOrId(workload, w.path))) {
      const c = ops.get(owner, name).components[d.path]
      if (c === undefined || c.state !== 'running') continue
      const because = `component ${w.path} runs anew, with another id`
      try {
        const template = await this.#init.catalog.resolve(d.template)
        // Each where it is; one whose host is gone too, on another.
        const next = c.instances.map(x => ops.placed(record, d, x.index, x.generation + 1, this.#init.liveness.hostAlive(x.host) ? x.host : ops.choose(d, template, 1, new Set([x.host]))[0] ?? x.host))
        for (const x of c.instances) await ops.release(record, d.path, x)
        ops.setComponent(owner, name, d.path, { state: 'deploying', instances: next, event: `${because}: making its instances anew with the new values` })
        await Promise.all(next.map(async x => await ops.place(record, description, d, template.id, x)))
        ops.setComponent(owner, name, d.path, { state: 'running', event: `made anew with the new values of component ${w.path}` })
      } catch (err) {
        this.#fail(record, d, `${because}; could not make its instances anew: ${(err as Error).message}`)
      }
    }
  }

  /** Fails component `w`, and with it the deployment, for `why`. */
  #fail (record: DeploymentRecord, w: Workload, why: string): void {
    this.#init.ops.setComponent(record.owner, record.name, w.path, { state: 'failed', termination: { kind: 'abnormal', cause: why, at: Date.now() }, event: why })
    this.#init.store.deployments.update(record.owner, record.name, { state: 'failed', error: `component ${w.path}: ${why}` })
  }
}

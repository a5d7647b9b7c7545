import type { DeploymentView } from '../../core/index.ts'
import type { Description, Workload } from '../../deploy/index.ts'
import { waitingComponent, type ComponentRecord, type DeploymentRecord, type PlacedInstance } from '../../store/index.ts'
import type { TemplateCatalog } from '../catalog.ts'
import type { Checkpointer } from './checkpointer.ts'
import type { ComponentOps } from './components.ts'

export interface RollingUpdatesInit {
  ops: ComponentOps
  catalog: Pick<TemplateCatalog, 'resolve'>
  checkpointer: Pick<Checkpointer, 'dropAll'>
}

/**
 * How a running component comes to run as an updated description says: one instance at a time
 * (Nomad's `max_parallel = 1`, with a new instance healthy before the one it replaces ends, as
 * Kubernetes' `maxSurge = 1`), those beyond its new count ended and those it now lacks added.
 * Every step is written down before it is taken: a supervisor restarted (or one taking over) in
 * the middle finds the instance it placed and the one it retires, and carries on.
 */
export class RollingUpdates {
  readonly #init: RollingUpdatesInit

  constructor (init: RollingUpdatesInit) {
    this.#init = init
  }

  async roll (record: DeploymentRecord, description: Description, w: Workload, onChange: (v: DeploymentView) => void): Promise<void> {
    const { ops } = this.#init
    const { owner, name } = record
    const component = (): ComponentRecord => ops.get(owner, name).components[w.path] ?? waitingComponent(0)
    const template = await this.#init.catalog.resolve(w.template)
    // Beyond its new count: ended, the last first.
    for (const i of component().instances.filter(x => x.index >= w.count).reverse()) {
      await ops.release(record, w.path, i)
      ops.setComponent(owner, name, w.path, { instances: component().instances.filter(x => x.id !== i.id), event: `ended ${i.id}: the component has ${w.count} instance(s) now` }, onChange)
    }
    let made = 0
    for (let index = 0; index < w.count; index++) {
      const c = component()
      const old = c.instances.find(x => x.index === index)
      let next = old
      if (old === undefined || (c.outdated === true && old.grant !== undefined)) {
        const others = c.instances.filter(x => x.index !== index).map(x => x.host)
        const [host = ''] = ops.choose(w, template, 1, new Set(w.placement.spread === true ? others : []))
        next = ops.placed(record, w, index, old === undefined ? c.generation : old.generation + 1, host)
        const what = old === undefined ? `adding instance ${index + 1} of ${w.count}` : `updating instance ${index + 1} of ${w.count}: ${next.id} replaces ${old.id}`
        ops.setComponent(owner, name, w.path, {
          state: 'deploying',
          instances: [...c.instances.filter(x => x.index !== index), next].sort((a, b) => a.index - b.index),
          ...old === undefined ? {} : { retiring: [...c.retiring ?? [], old] },
          event: `${what} on ${host.slice(-8)}`,
        }, onChange)
      }
      const retiring = component().retiring?.filter(x => x.index === index) ?? []
      if (next === undefined || (next === old && retiring.length === 0)) continue
      // Asked again after a restart: its host finds it made, and answers once it is healthy.
      await ops.place(ops.get(owner, name), description, w, template.id, next)
      made++
      for (const r of retiring) await this.#retire(record, w, r, onChange)
    }
    await this.#init.checkpointer.dropAll(ops.get(owner, name), w.path, cp => cp.grant !== undefined)
    ops.setComponent(owner, name, w.path, { state: 'running', outdated: false, event: made === 0 ? 'running as the description says' : `updated: ${made} instance(s) made, one at a time` }, onChange)
  }

  /** Ends instance `i`, which a new one has replaced, and writes down that it is gone. */
  async #retire (record: DeploymentRecord, w: Workload, i: PlacedInstance, onChange: (v: DeploymentView) => void): Promise<void> {
    const { ops } = this.#init
    await ops.release(ops.get(record.owner, record.name), w.path, i)
    ops.setComponent(record.owner, record.name, w.path, { retiring: ops.get(record.owner, record.name).components[w.path]?.retiring?.filter(x => x.id !== i.id) ?? [], event: `ended ${i.id}, which ${w.path} runs no more` }, onChange)
  }
}

import type { Logger } from 'pino'
import { z } from 'zod'
import { checkpointOfferSchema, newSnapshotId, snapshotIdSchema, type Checkpoint, type CheckpointDrop, type CheckpointKeep, type CheckpointTake } from '../../core/index.ts'
import type { Description, Workload } from '../../deploy/index.ts'
import type { Overlay } from '../../overlay/index.ts'
import type { DeploymentRecord, PlacedInstance } from '../../store/index.ts'
import type { TemplateCatalog } from '../catalog.ts'
import { callHost } from '../remote.ts'
import type { Checkpoints } from './checkpoints.ts'
import type { ComponentOps } from './components.ts'
import type { Liveness } from './liveness.ts'
import { workloadsOf } from './order.ts'
import { placedUnder } from './updates.ts'

export interface CheckpointerInit {
  overlay: Pick<Overlay, 'peerId' | 'rpc' | 'learnHost'>
  ops: ComponentOps
  /** This host's side, for an instance that runs here or a checkpoint kept here. */
  checkpoints: Pick<Checkpoints, 'take' | 'keep' | 'drop'>
  liveness: Pick<Liveness, 'hostAlive'>
  catalog: Pick<TemplateCatalog, 'resolve'>
  log: Logger
}

/** A snapshot of a VM under TCG takes seconds; fetching it, as long as its memory takes to cross. */
const TAKE_TIMEOUT_MS = 5 * 60_000
const KEEP_TIMEOUT_MS = 10 * 60_000
/** How long after a checkpoint its instance's failing health checks are put down to it: two of its host's checks. */
const SETTLE_MS = 8000
const keptSchema = z.strictObject({ snapshot: snapshotIdSchema, at: z.number().int() })

/**
 * A supervisor's checkpoints of the components that ask for them (`checkpoint: INTERVAL`): every
 * interval, each instance's host snapshots it and another host (its keeper: the same while it
 * lives) fetches the snapshot and keeps it in place of the one before. The latest of each
 * instance is written down with the deployment, so any supervisor can resume a replacement
 * from it (see FailurePolicies).
 */
export class Checkpointer {
  readonly #init: CheckpointerInit
  /** Instances being checkpointed now. */
  readonly #taking = new Set<string>()
  /** When this supervisor last tried to checkpoint each instance, or first saw it running (the first checkpoint comes an interval later). */
  readonly #tried = new Map<string, number>()
  /** When the latest checkpoint of each instance ended. */
  readonly #tookAt = new Map<string, number>()

  constructor (init: CheckpointerInit) {
    this.#init = init
  }

  get #self (): string {
    return this.#init.overlay.peerId
  }

  /**
   * Whether instance `id` is being checkpointed, or was a moment ago: its VM stops while its
   * memory is written, and a health check made meanwhile fails until its host checks again.
   */
  settling (id: string, now = Date.now()): boolean {
    return this.#taking.has(id) || now - (this.#tookAt.get(id) ?? -Infinity) < SETTLE_MS
  }

  /** Starts the checkpoints of deployment `record` that are due. */
  tick (record: DeploymentRecord, description: Description, now = Date.now()): void {
    for (const { workload: w } of workloadsOf(description)) {
      const c = record.components[w.path]
      if (w.checkpointMs === undefined || c?.state !== 'running') continue
      for (const i of c.instances) {
        const tried = this.#tried.get(i.id)
        if (tried === undefined) this.#tried.set(i.id, now)
        // An interval after the latest checkpoint, and after the latest try (one that failed waits an interval too).
        const last = Math.max(c.checkpoints?.find(cp => cp.instance === i.id)?.at ?? 0, tried ?? now)
        if (now - last < w.checkpointMs || this.#taking.has(i.id)) continue
        this.#taking.add(i.id)
        this.#tried.set(i.id, now)
        void this.#checkpoint(record, w, i)
          .catch((err: unknown) => {
            this.#init.log.warn({ err, deployment: record.name, instance: i.id }, 'could not checkpoint an instance of a deployment')
            this.#init.ops.setComponent(record.owner, record.name, w.path, { event: `could not checkpoint ${i.id}: ${(err as Error).message}` })
          })
          .finally(() => {
            this.#taking.delete(i.id)
            this.#tookAt.set(i.id, Date.now())
          })
      }
    }
  }

  /** Checkpoints instance `i` of `w` onto its keeper, and writes down where the checkpoint is. */
  async #checkpoint (record: DeploymentRecord, w: Workload, i: PlacedInstance): Promise<void> {
    const { ops } = this.#init
    const { owner, name } = record
    const previous = ops.get(owner, name).components[w.path]?.checkpoints?.find(cp => cp.index === i.index)
    const keeper = previous !== undefined && previous.host !== i.host && this.#init.liveness.hostAlive(previous.host)
      ? previous.host
      // Any host with room for it but its own: a placement that names a host names where it runs, not where its checkpoints go.
      : ops.choose({ ...w, placement: { ...w.placement, host: undefined, spread: undefined } }, await this.#init.catalog.resolve(w.template), 1, new Set([i.host]))[0] ?? ''
    const under = placedUnder(record, i)
    const take: CheckpointTake = { request: await ops.signed(record, i, 'checkpoint'), text: under.text, keeper }
    const offer = await this.#call(i.host, 'checkpoint.take', take, TAKE_TIMEOUT_MS, async () => await this.#init.checkpoints.take(take), checkpointOfferSchema)
    const keep: CheckpointKeep = {
      ...under,
      component: w.path,
      index: i.index,
      generation: i.generation,
      from: i.host,
      snapshot: newSnapshotId(),
      offer,
      ...previous?.host === keeper ? { replaces: previous.snapshot } : {},
    }
    const kept = await this.#call(keeper, 'checkpoint.keep', keep, KEEP_TIMEOUT_MS, async () => await this.#init.checkpoints.keep(keep, this.#self), keptSchema)
    const checkpoint: Checkpoint = { index: i.index, instance: i.id, generation: i.generation, host: keeper, snapshot: kept.snapshot, at: kept.at, ...i.grant === undefined ? {} : { grant: i.grant } }
    const c = ops.get(owner, name).components[w.path]
    // Made anew meanwhile: this checkpoint is of what is gone (a replacement from it is already under way, or not wanted).
    if (c?.instances.find(x => x.index === i.index)?.id !== i.id) {
      this.#tried.delete(i.id)
      await this.drop(record, w.path, checkpoint)
      return
    }
    ops.setComponent(owner, name, w.path, { checkpoints: [...(c.checkpoints ?? []).filter(cp => cp.index !== i.index), checkpoint] })
    if (previous !== undefined && previous.host !== keeper) await this.drop(record, w.path, previous)
  }

  /** Drops the checkpoints of component `path` that `which` picks: all of them (it ends), or those of an earlier description (it was updated). */
  async dropAll (record: DeploymentRecord, path: string, which: (cp: Checkpoint) => boolean = () => true): Promise<void> {
    const checkpoints = (this.#init.ops.get(record.owner, record.name).components[path]?.checkpoints ?? []).filter(which)
    for (const cp of checkpoints) {
      this.#tried.delete(cp.instance)
      await this.drop(record, path, cp)
    }
    const dropped = new Set(checkpoints.map(cp => cp.snapshot))
    const left = (this.#init.ops.get(record.owner, record.name).components[path]?.checkpoints ?? []).filter(cp => !dropped.has(cp.snapshot))
    if (checkpoints.length > 0) this.#init.ops.setComponent(record.owner, record.name, path, { checkpoints: left })
  }

  /** Has the keeper of `cp` drop it, if it can be reached: a keeper that is gone took it along. */
  async drop (record: DeploymentRecord, path: string, cp: Checkpoint): Promise<void> {
    const req: CheckpointDrop = { grant: placedUnder(record, cp).grant, component: path, index: cp.index, generation: cp.generation, snapshot: cp.snapshot }
    await this.#call(cp.host, 'checkpoint.drop', req, TAKE_TIMEOUT_MS, async () => { await this.#init.checkpoints.drop(req, this.#self) }, z.null())
      .catch((err: unknown) => { this.#init.log.warn({ err, snapshot: cp.snapshot, host: cp.host }, 'could not drop a checkpoint') })
  }

  /** `method` on `host`, or `here` when it is this host. */
  async #call<T> (host: string, method: string, req: unknown, timeoutMs: number, here: () => Promise<unknown>, schema: z.ZodType<T>): Promise<T> {
    return schema.parse((host === this.#self ? await here() : await callHost(this.#init.overlay, host, method, req, timeoutMs)) ?? null)
  }
}

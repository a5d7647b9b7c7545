import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { XenosError, type InstanceView, type TaskSpec, type Template } from '../../core/index.ts'
import { createEmptyImage } from '../../data/index.ts'
import type { RemoteDisk, Store, TaskRecord } from '../../store/index.ts'
import { INCOMING_MARKER, stagedImageFile, type IncomingInstance, type InstanceMoves } from '../instances/index.ts'

/** The disk of an instance arriving by migration. */
export type ArrivingDisk =
  /** Served by another host (the one it comes from, or where it first ran). */
  | { servedBy: RemoteDisk }
  /** A disk of its own here, into which the source copies the disk first, with images as large as its staged disks. */
  | { copied: true, staged?: Array<{ serial: string, bytes: number }> }
  /** Its own disk, which this host kept serving while it ran elsewhere: it comes back. */
  | { home: true }

/** What moves with an instance that runs a task: the parts of its task record that are not the instance's. */
export type MovingTask = Pick<TaskRecord, 'inputs' | 'outputsPrefix' | 'keep' | 'createdAt'>

export interface ArrivalsInit {
  moves: InstanceMoves
  store: Pick<Store, 'diskExports' | 'tasks' | 'transaction'>
}

/** The destination's side of a live migration: a paused VM waiting for the memory, then taking over or giving up. */
export class Arrivals {
  readonly #init: ArrivalsInit
  /** The tasks of arriving instances, recorded once they take over. */
  readonly #tasks = new Map<string, MovingTask>()

  constructor (init: ArrivalsInit) {
    this.#init = init
  }

  /**
   * Prepares instance `arriving` of `template` to arrive by migration from host `from`:
   * admission, ports, and a paused VM that waits as `incoming` says, on the disk `disk` says;
   * `task`, the task it runs, is recorded when it takes over. Returns the port the VM waits on.
   */
  async receive (template: Template, arriving: IncomingInstance, from: string, disk: ArrivingDisk, incoming: NonNullable<TaskSpec['incoming']>, task?: MovingTask): Promise<number> {
    const { moves, store } = this.#init
    let diskServer: Record<string, unknown> | undefined
    if ('home' in disk) {
      const served = store.diskExports.forInstance(arriving.id).find(e => e.peer === from)
      if (served?.owner !== arriving.owner) throw new XenosError('FORBIDDEN', `this host serves no disk of instance ${arriving.id} to host ${from} for owner ${arriving.owner}`)
      diskServer = served.server
    }
    const record = await moves.admitArrival(template, arriving, from, 'servedBy' in disk ? disk.servedBy : null)
    if (task !== undefined) this.#tasks.set(record.id, task)
    return await moves.locked(record.id, async () => {
      try {
        // Empty images, into which the source copies the staged disks with the disk.
        for (const s of 'copied' in disk ? disk.staged ?? [] : []) await createEmptyImage(join(moves.records.dir(record.id), stagedImageFile(s.serial)), s.bytes)
        return moves.migrator(record).incomingPort(await moves.start(record, template, { incoming, diskServer }))
      } catch (err) {
        this.#tasks.delete(record.id)
        await moves.destroy(moves.records.get(record.id))
        throw err
      }
    })
  }

  /**
   * Runs an instance that has arrived: from here on this host owns it. One that came back to
   * its disk here stops being served to others: returns the tickets of those exports.
   */
  async takeOver (id: string): Promise<{ view: InstanceView, endedExports: string[] }> {
    const { moves, store } = this.#init
    const { records } = moves
    return await moves.locked(id, async () => {
      const r = records.get(id)
      if (!records.isArriving(id)) throw new XenosError('INVALID_STATE', `instance ${id} is not arriving here`)
      await moves.migrator(r).takeOver(records.handle(r))
      await rm(join(records.dir(id), INCOMING_MARKER))
      const exports = store.diskExports.forInstance(id)
      const task = this.#tasks.get(id)
      store.transaction(() => {
        store.diskExports.remove(id)
        if (task !== undefined) {
          store.tasks.insert({
            ...task, id, owner: r.owner, templateId: r.templateId, state: 'running', exitCode: null, error: null, outputs: [], refused: [], placed: null, collectingAt: null, endedAt: null,
          })
        }
        records.set(id, { state: 'running' })
      })
      this.#tasks.delete(id)
      return { view: moves.view(id), endedExports: exports.map(e => e.token) }
    })
  }

  /** Gives up an instance that was arriving: nothing of it stays. */
  async abandon (id: string): Promise<void> {
    const { moves } = this.#init
    await moves.locked(id, async () => {
      this.#tasks.delete(id)
      const r = moves.records.find(id)
      if (r === undefined || !moves.records.isArriving(id)) return
      await moves.destroy(r)
    })
  }
}

import { copyFile, link, mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { newSnapshotId, XenosError } from '../../core/index.ts'
import type { SnapshotRecord, Store } from '../../store/index.ts'
import type { KeyedLock } from './locks.ts'
import type { InstanceRecords } from './records.ts'
import { stagedDisksOf } from './staged-disks.ts'

export interface SnapshotsInit {
  store: Pick<Store, 'snapshots'>
  records: InstanceRecords
  /** The supervisor's locks: a snapshot is taken holding its instance's. */
  locks: KeyedLock
  /** Where snapshots' saved memory and disks live. */
  dir: string
}

/** Snapshots of running VMs, memory and disk, which new instances start from instead of booting. */
export class Snapshots {
  readonly #init: SnapshotsInit

  constructor (init: SnapshotsInit) {
    this.#init = init
  }

  /** Saves a running or paused VM's memory and disk as a snapshot new instances can start from (named `snapshotId`, if given). */
  async take (id: string, snapshotId = newSnapshotId()): Promise<SnapshotRecord> {
    if (this.#init.store.snapshots.get(snapshotId) !== undefined) throw new XenosError('INVALID_ARGUMENT', `snapshot ${snapshotId} exists already: name another`)
    const { records } = this.#init
    return await this.#init.locks.run(id, async () => {
      const r = records.get(id)
      records.expect(r, ['running', 'paused'], 'snapshot')
      // A snapshot holds an instance's memory and own disk, not its staged ones.
      if (stagedDisksOf(r, records.dir(id)).length > 0) throw new XenosError('INVALID_STATE', `cannot snapshot instance ${id}: it has staged inputs or outputs, which a snapshot cannot hold yet; deploy another instance with the same inputs instead`)
      const driver = records.driverFor(r.driver)
      if (driver.snapshot === undefined) throw new XenosError('INVALID_STATE', `instance ${id} runs on the ${r.driver} driver, which cannot take snapshots`)
      const snap: SnapshotRecord = { id: snapshotId, instanceId: id, templateId: r.templateId, owner: r.owner, createdAt: Date.now() }
      const dir = this.dir(snap.id)
      await mkdir(dir, { recursive: true })
      try {
        await driver.snapshot(records.handle(r), dir)
      } catch (err) {
        await rm(dir, { recursive: true, force: true })
        throw err
      }
      this.#init.store.snapshots.insert(snap)
      return snap
    })
  }

  /**
   * Keeps a snapshot taken on another host (a checkpoint), from its memory and disk here at
   * `files`: the memory is linked (never written), the disk copied and made ready by `adopt`
   * (which names its backing file anew) before the snapshot is written down.
   */
  async keep (snap: SnapshotRecord, files: { state: string, disk: string }, adopt: (disk: string) => Promise<void>): Promise<SnapshotRecord> {
    return await this.#init.locks.run(`snapshot/${snap.id}`, async () => {
      const known = this.#init.store.snapshots.get(snap.id)
      if (known !== undefined) return known
      const dir = this.dir(snap.id)
      await rm(dir, { recursive: true, force: true })
      await mkdir(dir, { recursive: true })
      try {
        await link(files.state, join(dir, 'state')).catch(async () => { await copyFile(files.state, join(dir, 'state')) })
        await copyFile(files.disk, join(dir, 'disk.qcow2'))
        await adopt(join(dir, 'disk.qcow2'))
      } catch (err) {
        await rm(dir, { recursive: true, force: true })
        throw err
      }
      this.#init.store.snapshots.insert(snap)
      return snap
    })
  }

  /** Deletes a snapshot's saved memory and disk. */
  async remove (id: string): Promise<void> {
    await this.#init.locks.run(`snapshot/${id}`, async () => {
      this.#init.store.snapshots.remove(id)
      await rm(this.dir(id), { recursive: true, force: true })
    })
  }

  /** Where snapshot `id` keeps the VM's memory (`state`) and disk (`disk.qcow2`). */
  dir (id: string): string {
    return join(this.#init.dir, id)
  }
}

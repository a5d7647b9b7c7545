import { statSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import type { Logger } from 'pino'
import { XenosError, type DiskCopyProgress, type MigrationChannel, type MigrationProgress } from '../../core/index.ts'
import type { Store } from '../../store/index.ts'
import { stagedDisksOf, type InstanceMoves, type RemoteDisks } from '../instances/index.ts'
import type { MovingTask } from './arrival.ts'

/**
 * What becomes of a migrating instance's disk: it stays here, served to the new host with the
 * ticket `token`, or it is copied to the NBD export on unix socket `copyTo` before the memory moves.
 */
export type DiskPlan =
  /** The disk stays here, served to the new host with this ticket. */
  | { serveTo: { peer: string, token: string } }
  /** The disk is copied into the new host's disk server, reached on this unix socket. */
  | { copyTo: string, onCopy: (p: DiskCopyProgress) => void }
  /** The disk stays with the other host that serves it (where the instance first ran), which serves it to the new host too. */
  | { servedBy: string }
  /** The new host is the one that serves the disk: the instance goes back to it. */
  | { backTo: string }

export interface DepartureInit {
  moves: InstanceMoves
  store: Pick<Store, 'diskExports' | 'tasks'>
  remoteDisks: RemoteDisks
  log: Logger
}

/** The source's side of a live migration, on this host's instance: what moves with it, and its leaving. */
export class Departure {
  readonly #init: DepartureInit

  constructor (init: DepartureInit) {
    this.#init = init
  }

  /** The unix socket on which this host serves running instance `id`'s disk. */
  async diskSocket (id: string): Promise<string> {
    const { records, migrator } = this.#init.moves
    const r = records.get(id)
    const dir = records.dir(id)
    return (await migrator(r).serveDisk(id, dir, stagedDisksOf(r, dir), records.handle(r).state.disk as Record<string, unknown> | undefined)).socket
  }

  /** The staged disks of instance `id` (see `StagedDisk`), which move with its disk; their size when they are here. */
  stagedDisks (id: string): Array<{ serial: string, readOnly: boolean, bytes?: number }> {
    const { records } = this.#init.moves
    return stagedDisksOf(records.get(id), records.dir(id)).map(({ serial, readOnly, path }) => ({ serial, readOnly, ...path === undefined ? {} : { bytes: statSync(path).size } }))
  }

  /** The task instance `id` runs, which moves with it; undefined when it runs none. */
  movingTask (id: string): MovingTask | undefined {
    const t = this.#init.store.tasks.get(id)
    return t === undefined ? undefined : { inputs: t.inputs, outputsPrefix: t.outputsPrefix, keep: t.keep, createdAt: t.createdAt }
  }

  /**
   * Sends running instance `id` to another host: first its disk if the plan says so (while it
   * runs), then its memory goes through the first of `channels` that connects, while it runs;
   * once all of it is there, `takeOver` asks the other host to run it, and only then does this
   * host end its VM. A disk that was not copied stays here, served to the new host. If anything
   * fails before the other host took over, the VM runs on here. Returns the channel used.
   */
  async migrateOut (id: string, channels: MigrationChannel[], disk: DiskPlan, onProgress: (p: MigrationProgress) => void, takeOver: () => Promise<void>): Promise<MigrationChannel> {
    const { moves, log } = this.#init
    const { records } = moves
    return await moves.locked(id, async () => {
      const r = records.get(id)
      records.expect(r, ['running'], 'migrate')
      const driver = moves.migrator(r)
      if ((r.remoteDisk !== null) !== ('servedBy' in disk || 'backTo' in disk)) throw new XenosError('INVALID_STATE', `instance ${id}'s disk is ${r.remoteDisk === null ? 'here' : `served by host ${r.remoteDisk.host}`}: it cannot move with that disk plan`)
      const handle = records.handle(r)
      let mirroring = false
      let used: MigrationChannel
      try {
        if ('copyTo' in disk) {
          mirroring = true
          await driver.mirrorDisk(handle, disk.copyTo, disk.onCopy)
        }
        used = await driver.migrate(handle, channels, onProgress)
        // The VM is paused for good and wrote its last: the copy is whole.
        if (mirroring) await driver.finishMirror(handle)
        mirroring = false
        await takeOver()
      } catch (err) {
        if (mirroring) await driver.dropMirror(handle).catch((e: unknown) => { log.warn({ err: e, instance: id }, 'could not stop copying the disk') })
        await driver.cancelMigration(handle).catch((e: unknown) => { log.error({ err: e, instance: id }, 'could not resume the VM after a failed migration') })
        throw err
      }
      moves.unwatch(id)
      const server = await driver.handOff(handle)
      const remote = r.remoteDisk
      // Its task, if it runs one, is the new host's to finish now.
      if (remote !== null || server === null) {
        // The disk stays with the host that serves it, which serves it to the new host too.
        moves.forget(id)
        await rm(records.dir(id), { recursive: true, force: true })
        await this.#init.remoteDisks.detach(id)
        // Back on the disk's host, the instance uses the disk again: nothing to release.
        if (remote !== null && !('backTo' in disk)) void this.#init.remoteDisks.release(id, remote).catch((err: unknown) => { log.warn({ err, instance: id, host: remote.host }, 'could not tell the host serving the disk that this host no longer uses it') })
      } else if ('serveTo' in disk) {
        moves.forget(id, () => {
          this.#init.store.diskExports.put({ instanceId: id, owner: r.owner, peer: disk.serveTo.peer, token: disk.serveTo.token, server, createdAt: Date.now() })
        })
      } else {
        // The new host has its own copy: nothing of the instance stays here.
        await driver.stopDisk(id, server).catch((e: unknown) => { log.warn({ err: e, instance: id }, 'could not end the server of the disk the instance left behind') })
        moves.forget(id)
        await rm(records.dir(id), { recursive: true, force: true })
      }
      return used
    })
  }
}

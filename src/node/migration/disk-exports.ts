import { rm } from 'node:fs/promises'
import { z } from 'zod'
import { instanceIdSchema, peerIdSchema, XenosError, type MigratingDriver } from '../../core/index.ts'
import type { Rpc } from '../../overlay/index.ts'
import type { Store } from '../../store/index.ts'
import type { Tunnels } from '../../transfer/index.ts'
import { KeyedLock, stagedImagesIn, type InstanceRecords } from '../instances/index.ts'

export interface DiskExportsInit {
  store: Pick<Store, 'diskExports'>
  records: Pick<InstanceRecords, 'has' | 'dir'>
  /** The driver that serves disks (none on a host that cannot migrate). */
  driver: MigratingDriver | undefined
  tunnels: Tunnels
}

const instanceOnlySchema = z.strictObject({ id: instanceIdSchema })
const instanceAndPeerSchema = z.strictObject({ id: instanceIdSchema, peer: peerIdSchema })

/**
 * The disks this host serves to other hosts: those of instances that moved away while their
 * disk stayed here. Each host an instance moved to is served through a ticket of its own; the
 * disk ends once the newest of them lets it go (the instance ended there).
 */
export class DiskExports {
  readonly #init: DiskExportsInit
  readonly #locks = new KeyedLock()

  constructor (init: DiskExportsInit) {
    this.#init = init
  }

  /** Registers the RPC methods through which the hosts this one serves disks to let go of them or hand them on. */
  serve (rpc: Rpc): void {
    const { tunnels } = this.#init
    rpc.handle('disk.release', instanceOnlySchema, async ({ id }, from) => {
      for (const token of await this.release(id, from.toString())) tunnels.revoke(token)
      return null
    })
    // A host this one serves a disk to moves the instance on to `peer`: serve it there too.
    rpc.handle('disk.handover', instanceAndPeerSchema, async ({ id, peer }, from) => {
      const token = await this.share(id, from.toString(), peer, socket => tunnels.issue(peer, socket))
      return { token }
    })
    // ...and the move failed: serve it to `peer` no more.
    rpc.handle('disk.recall', instanceAndPeerSchema, async ({ id, peer }, from) => {
      const token = await this.recall(id, from.toString(), peer)
      if (token !== undefined) tunnels.revoke(token)
      return null
    })
  }

  /** After a restart: starts again the servers of the disks served to others (one per disk), and issues their tickets again. */
  async recover (): Promise<void> {
    const { driver, store, records } = this.#init
    const servers = new Map<string, Record<string, unknown>>()
    for (const e of store.diskExports.list()) {
      if (driver === undefined) continue
      const dir = records.dir(e.instanceId)
      const server = servers.get(e.instanceId) ?? (await driver.serveDisk(e.instanceId, dir, stagedImagesIn(dir), e.server)).server
      servers.set(e.instanceId, server)
      store.diskExports.put({ ...e, server })
    }
    for (const e of this.#exported()) this.#init.tunnels.issue(e.peer, e.socket, e.token)
  }

  /**
   * Host `peer` no longer uses the disk this host serves it for instance `id`. When it was the
   * newest host served (the instance ended there), the disk ends: no host needs it any more.
   * Returns the tickets of the exports that ended.
   */
  async release (id: string, peer: string): Promise<string[]> {
    return await this.#locks.run(id, async () => {
      const { store, records } = this.#init
      const exports = store.diskExports.forInstance(id)
      const released = exports.find(e => e.peer === peer)
      if (released === undefined) {
        if (exports.length === 0) return []
        throw new XenosError('FORBIDDEN', `the disk of instance ${id} is not served to host ${peer}`)
      }
      // An instance that came back here runs on the disk: it stays whatever the others say.
      if (released !== exports.at(-1) || records.has(id)) {
        store.diskExports.remove(id, peer)
        return [released.token]
      }
      await this.#init.driver?.stopDisk(id, released.server)
      store.diskExports.remove(id)
      await rm(records.dir(id), { recursive: true, force: true })
      return exports.map(e => e.token)
    })
  }

  /**
   * Serves the disk of instance `id`, which this host serves to host `from`, to host `to` too:
   * the instance moves on from `from` to `to`, and its disk stays here. `issue` makes the ticket
   * to the disk server's socket. Returns the ticket.
   */
  async share (id: string, from: string, to: string, issue: (socket: string) => string): Promise<string> {
    return await this.#locks.run(id, async () => {
      const exports = this.#init.store.diskExports.forInstance(id)
      const current = exports.find(e => e.peer === from)
      if (current === undefined) throw new XenosError('FORBIDDEN', `the disk of instance ${id} is not served to host ${from}, which cannot hand it on`)
      const socket = exportSocket(current.server)
      if (socket === undefined) throw new XenosError('INVALID_STATE', `the server of instance ${id}'s disk has no socket`)
      const token = issue(socket)
      // Newest of all, even within the same millisecond: the host the instance is arriving at.
      const createdAt = Math.max(Date.now(), ...exports.map(e => e.createdAt + 1))
      this.#init.store.diskExports.put({ ...current, peer: to, token, createdAt })
      return token
    })
  }

  /** Stops serving instance `id`'s disk to `peer`, where host `from` (also served it) failed to move it; returns the ticket that ended. */
  async recall (id: string, from: string, peer: string): Promise<string | undefined> {
    return await this.#locks.run(id, async () => {
      const exports = this.#init.store.diskExports.forInstance(id)
      if (!exports.some(e => e.peer === from)) throw new XenosError('FORBIDDEN', `the disk of instance ${id} is not served to host ${from}`)
      const recalled = exports.find(e => e.peer === peer && peer !== from)
      if (recalled === undefined) return undefined
      this.#init.store.diskExports.remove(id, peer)
      return recalled.token
    })
  }

  /** The unix sockets of the disks this host serves to other hosts, with the tickets that reach them. */
  #exported (): Array<{ peer: string, token: string, socket: string }> {
    return this.#init.store.diskExports.list().flatMap(e => {
      const socket = exportSocket(e.server)
      return socket === undefined ? [] : [{ peer: e.peer, token: e.token, socket }]
    })
  }
}

/** Where a disk server (opaque driver state) listens. */
function exportSocket (server: Record<string, unknown>): string | undefined {
  return typeof server.socket === 'string' ? server.socket : undefined
}

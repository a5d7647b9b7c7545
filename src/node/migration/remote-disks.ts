import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { Overlay } from '../../overlay/index.ts'
import type { RemoteDisk } from '../../store/index.ts'
import type { TunnelListener, Tunnels } from '../../transfer/index.ts'
import type { RemoteDisks } from '../instances/index.ts'
import { callHost } from '../remote.ts'

export interface RemoteDiskTunnelsInit {
  overlay: Pick<Overlay, 'peerId' | 'rpc' | 'learnHost'>
  tunnels: Tunnels
  /** Short directory for the sockets tunnels listen on. */
  runDir: string
}

/**
 * The disks of instances that moved here while the host they left keeps serving their disk: a
 * tunnel each, from a unix socket the VM attaches to, to that host's disk server (admitted by
 * the ticket it issued for this host).
 */
export class RemoteDiskTunnels implements RemoteDisks {
  readonly #init: RemoteDiskTunnelsInit
  /** Tunnel listeners this host's VMs reach remote disks through, by instance. */
  readonly #disks = new Map<string, TunnelListener>()

  constructor (init: RemoteDiskTunnelsInit) {
    this.#init = init
  }

  async attach (id: string, disk: RemoteDisk): Promise<string> {
    const open = this.#disks.get(id)
    if (open !== undefined) return open.path
    await mkdir(this.#init.runDir, { recursive: true })
    const listener = await this.#init.tunnels.listen(join(this.#init.runDir, `${id}.rdisk.sock`), disk.host, disk.token)
    this.#disks.set(id, listener)
    return listener.path
  }

  async detach (id: string): Promise<void> {
    await this.#disks.get(id)?.close()
    this.#disks.delete(id)
  }

  async release (id: string, disk: RemoteDisk): Promise<void> {
    await callHost(this.#init.overlay, disk.host, 'disk.release', { id })
  }
}

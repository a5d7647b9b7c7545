import { existsSync, statSync } from 'node:fs'
import { mkdir, rm } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { XenosError, type StagedDisk } from '../../core/index.ts'
import type { Cgroups } from '../cgroup.ts'
import { isSameProcess, tailFile } from '../procfs.ts'
import { spawnTask, taskPids } from '../spawn.ts'

/** A running disk server: where it listens, and the process to recognise it by after a restart. */
export interface DiskServerState {
  pid: number
  startTime: number
  /** Unix socket of its NBD server; the export is named `disk`. */
  socket: string
  /** Unix socket of its QMP monitor, through which its disk is mirrored to another host (absent on servers started before it had one). */
  monitor?: string
  /** The serials of the staged disks it serves too, in order: node `stagedN` serves the Nth. */
  staged?: string[]
}

export const DISK_EXPORT = 'disk'
const START_WAIT_MS = 10_000

/**
 * An instance's disk is owned by one `qemu-storage-daemon` that serves it over NBD on a unix
 * socket; the VM, and after a migration the VM on another host, reach the disk only through it.
 * One owner per image: no two processes ever open the qcow2 file itself. The instance's staged
 * disks are served beside it, each as an export named by its serial; one the guest may only read
 * is served read-only when other instances read the same image (the instances of one deploy share
 * their inputs' image), else writable, so that a copy of it can be written into. The server lives
 * in its own cgroup (`ID.disk`), so it outlives the VM, and xenosd.
 */
export class DiskServers {
  readonly #cgroups: Cgroups | undefined

  constructor (cgroups: Cgroups | undefined) {
    this.#cgroups = cgroups
  }

  /** Serves `overlay`, and the `staged` disks that have a path, on `sockets/nbd.sock`; `dir` receives its log. */
  async start (id: string, overlay: string, staged: StagedDisk[], sockets: string, dir: string): Promise<DiskServerState> {
    await mkdir(sockets, { recursive: true, mode: 0o700 })
    const socket = join(sockets, 'nbd.sock')
    const monitor = join(sockets, 'qmp.sock')
    await rm(socket, { force: true })
    await rm(monitor, { force: true })
    const log = join(dir, 'disk-server.log')
    const served = staged.flatMap(d => d.path === undefined ? [] : [{ ...d, path: d.path }])
    const task = await spawnTask({
      id: cgroupOf(id),
      argv: [
        'qemu-storage-daemon',
        '--blockdev', `driver=file,node-name=file,filename=${overlay},discard=unmap`,
        '--blockdev', 'driver=qcow2,node-name=disk,file=file,discard=unmap',
        '--nbd-server', `addr.type=unix,addr.path=${socket}`,
        '--export', `type=nbd,id=export,node-name=disk,name=${DISK_EXPORT},writable=on`,
        ...served.flatMap((d, i) => {
          const readOnly = d.readOnly && statSync(d.path).nlink > 1
          return [
            '--blockdev', `driver=file,node-name=staged${i}-file,filename=${d.path},read-only=${onOff(readOnly)}`,
            '--blockdev', `driver=raw,node-name=staged${i},file=staged${i}-file,read-only=${onOff(readOnly)}`,
            '--export', `type=nbd,id=export${i},node-name=staged${i},name=${d.serial},writable=${onOff(!readOnly)}`,
          ]
        }),
        '--chardev', `socket,id=monitor,path=${monitor},server=on,wait=off`,
        '--monitor', 'chardev=monitor',
      ],
      cwd: dir,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
      log,
      cgroups: this.#cgroups,
      resources: { cpu: 1, memory: 128 },
    })
    const state = { pid: task.pid, startTime: task.startTime, socket, monitor, staged: served.map(d => d.serial) }
    const deadline = Date.now() + START_WAIT_MS
    // The socket file appears a moment before the server listens on it.
    while (!existsSync(socket) || !await accepts(socket)) {
      if (Date.now() > deadline || !await this.alive(id, state)) {
        const why = await tailFile(log, 5)
        await this.stop(id, state)
        throw new XenosError('DRIVER_FAILED', `the disk server did not start${why === '' ? '' : `: ${why}`}`)
      }
      await sleep(10)
    }
    return state
  }

  async alive (id: string, state: DiskServerState): Promise<boolean> {
    return (await taskPids(cgroupOf(id), this.#cgroups, state.pid, state.startTime)).length > 0
  }

  /**
   * Ends the server (its clients see the disk go away) and removes its cgroup. Without its state
   * (the host stopped while starting it) the server is still found by its cgroup.
   */
  async stop (id: string, state: DiskServerState | undefined): Promise<void> {
    for (let i = 0; i < 100; i++) {
      const pids = await taskPids(cgroupOf(id), this.#cgroups, state?.pid, state?.startTime)
      if (pids.length === 0) break
      // SIGTERM first: the server flushes the image before it exits.
      for (const pid of pids) {
        try { process.kill(pid, i < 40 ? 'SIGTERM' : 'SIGKILL') } catch {}
      }
      await sleep(50)
    }
    if (state !== undefined && await isSameProcess(state.pid, state.startTime)) throw new XenosError('DRIVER_FAILED', `the disk server of ${id} (pid ${state.pid}) would not end`)
    await this.#cgroups?.remove(cgroupOf(id))
  }
}

async function accepts (path: string): Promise<boolean> {
  return await new Promise(resolve => {
    const s = connect(path)
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => { resolve(false) })
  })
}

function onOff (b: boolean): 'on' | 'off' {
  return b ? 'on' : 'off'
}

function cgroupOf (id: string): string {
  return `${id}.disk`
}

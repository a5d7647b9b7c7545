import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { copyFile, mkdir, open, rename, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import {
  XenosError,
  type Fingerprint, type MigratingDriver, type GuestService, type MigrationChannel, type TaskExit, type TaskHandle, type TaskStats, type TaskStatus,
} from '../../core/index.ts'
import type { Cgroups } from '../cgroup.ts'
import { processUsage, tailFile } from '../procfs.ts'
import { spawnTask, taskPids } from '../spawn.ts'
import { AgentLink } from './agent.ts'
import { probeAccelerator, type Accelerator } from './accel.ts'
import { DISK_IMAGE, dropMirror, finishMirror, startMirror, type MirroredImage } from './disk-mirror.ts'
import { qemuCommandLine } from './command-line.ts'
import { DiskServers, type DiskServerState } from './disk-server.ts'
import { incomingArgs, listenForMigration, sendMigration } from './migration-channel.ts'
import { QmpClient } from './qmp.ts'

const run = promisify(execFile)

export interface QemuDriverInit {
  cgroups: Cgroups | undefined
  /** Where blobs named by a template's image live. */
  blobPath: (digest: string) => string
  /** Short directory for sockets (unix socket paths are limited to ~108 bytes). @default /run/xenos */
  runDir: string
  /** @default qemu-system-x86_64 */
  qemu: string
  /** @default auto: KVM when a probe boots a guest with it, else TCG */
  accel: 'auto' | Accelerator
  /** Give VMs whose template asks for it the network beyond their endpoints (and the host's loopback with it). @default false */
  guestOutbound: boolean
}

/** What the driver persists in a handle. */
interface QemuState {
  pid: number
  startTime: number
  startedAt: number
  sockets: string
  console: string
  ports: Array<{ guest: number, host: number }>
  /** This host's server of the instance's disk; null when the disk is served by another host. */
  disk: DiskServerState | null
  /** The TCP port a VM started to arrive by migration waits on. */
  incomingPort?: number
  /** For an image's own system, which has no agent to say what it serves: the template's ports. */
  declared?: GuestService[]
}

const SOCKET_WAIT_MS = 15_000
const MIGRATION_POLL_MS = 5
function stateOf (handle: TaskHandle): QemuState {
  const s = handle.state as Partial<QemuState>
  if (typeof s.pid !== 'number' || typeof s.sockets !== 'string' || typeof s.console !== 'string') {
    throw new XenosError('DRIVER_FAILED', `instance ${handle.id} has no usable VM state`)
  }
  return s as QemuState
}

/**
 * Runs instances as QEMU virtual machines: `-M q35`, the template's kernel and initramfs, a
 * qcow2 overlay on the template's disk (never a copy), user-mode networking with host port
 * forwards, the serial console in a log, QMP for control and a virtio-serial port for the guest
 * agent. QEMU outlives xenosd; a restarted host re-attaches through the QMP socket.
 */
export function qemuDriver (init: QemuDriverInit): MigratingDriver {
  const sessions = new Map<string, { qmp: QmpClient | undefined, agent: AgentLink, exit: Promise<TaskExit> | undefined }>()
  const disks = new DiskServers(init.cgroups)
  /** Where an instance's disk server listens: apart from the VM's sockets, as it outlives the VM. */
  const diskSocketsOf = (id: string): string => join(init.runDir, `${id}.disk`)
  let accel: Promise<Accelerator> | undefined

  function session (handle: TaskHandle): { qmp: QmpClient | undefined, agent: AgentLink, exit: Promise<TaskExit> | undefined } {
    let s = sessions.get(handle.id)
    if (s === undefined) {
      s = { qmp: undefined, agent: new AgentLink(join(stateOf(handle).sockets, 'ag.sock')), exit: undefined }
      sessions.set(handle.id, s)
    }
    return s
  }

  async function qmp (handle: TaskHandle): Promise<QmpClient> {
    const s = session(handle)
    if (s.qmp === undefined || s.qmp.isClosed) s.qmp = await QmpClient.connect(join(stateOf(handle).sockets, 'qm.sock'))
    return s.qmp
  }

  async function pids (handle: TaskHandle): Promise<number[]> {
    const s = handle.state as Partial<QemuState>
    return await taskPids(handle.id, init.cgroups, s.pid, s.startTime)
  }

  async function alive (handle: TaskHandle): Promise<boolean> {
    return (await pids(handle)).length > 0
  }

  async function kill (handle: TaskHandle): Promise<void> {
    while (await alive(handle)) {
      for (const pid of await pids(handle)) {
        try { process.kill(pid, 'SIGKILL') } catch {}
      }
      await sleep(50)
    }
  }

  async function waitGone (handle: TaskHandle, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      if (!await alive(handle)) return true
      await sleep(50)
    }
    return false
  }

  return {
    name: 'qemu',
    capabilities: () => ({ pause: true, suspend: true, migrate: true, links: 'path' }),

    async fingerprint (): Promise<Fingerprint> {
      try {
        const { stdout } = await run(init.qemu, ['--version'])
        const version = /version ([0-9.]+)/.exec(stdout)?.[1] ?? 'unknown'
        await run('qemu-img', ['--version'])
        const kvm = existsSync('/dev/kvm')
        return {
          healthy: true,
          detail: `QEMU ${version}; ${init.accel === 'auto' ? (kvm ? 'KVM if its probe boots a guest, else TCG' : 'TCG (no /dev/kvm)') : init.accel.toUpperCase()}`,
          attributes: { version, accel: init.accel, kvmDevice: String(kvm) },
        }
      } catch (err) {
        return { healthy: false, detail: `QEMU is missing (${(err as Error).message.split('\n')[0] ?? ''}): install qemu-system-x86 and qemu-utils`, attributes: {} }
      }
    },

    async start (spec): Promise<TaskHandle> {
      const image = spec.image
      if (image === undefined) throw new XenosError('BAD_MANIFEST', `instance ${spec.id} has a qemu template without an image`)
      if (spec.outbound === true && !init.guestOutbound) {
        throw new XenosError('ADMISSION_REFUSED', `the template of instance ${spec.id} asks for outbound network, which this host does not give guests (xenosd --guest-outbound): deploy it on a host that does`)
      }
      accel ??= init.accel === 'auto' ? probeAccelerator(init.qemu, init.blobPath(image.kernel)) : Promise.resolve(init.accel)
      const accelerator = await accel
      const sockets = join(init.runDir, spec.id)
      await rm(sockets, { recursive: true, force: true })
      await mkdir(sockets, { recursive: true, mode: 0o700 })
      let disk: DiskServerState | null = null
      // A disk server that was running before this VM is not this start's to end if the VM fails.
      let startedDisk = false
      if (spec.remoteDisk === undefined) {
        const overlay = join(spec.dir, 'disk.qcow2')
        if (!existsSync(overlay)) {
          // The instance's disk: a thin qcow2 overlay backed by the template's shared, read-only image
          // (itself an overlay on its base for a tailored template).
          await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', image.diskFormat, '-b', init.blobPath(image.disk), `${overlay}.tmp`])
          await rename(`${overlay}.tmp`, overlay)
        }
        const known = spec.diskServer as Partial<DiskServerState> | undefined
        if (isDiskServer(known) && await disks.alive(spec.id, known)) {
          disk = { ...known }
        } else {
          disk = await disks.start(spec.id, overlay, spec.disks ?? [], diskSocketsOf(spec.id), spec.dir)
          startedDisk = true
        }
      }
      const console = join(spec.dir, 'console.log')
      const incoming = spec.incoming === undefined ? [] : await incomingArgs(join(sockets, 'tls-in'), spec.incoming.key)
      const task = await spawnTask({
        id: spec.id,
        argv: qemuCommandLine({ qemu: init.qemu, blobPath: init.blobPath, spec, accelerator, sockets, console, disk: disk?.socket ?? spec.remoteDisk ?? '', incoming }),
        cwd: spec.dir,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
        log: join(spec.dir, 'qemu.log'),
        cgroups: init.cgroups,
        // QEMU itself needs memory beyond the guest's RAM.
        resources: { cpu: spec.resources.cpu, memory: spec.resources.memory + 128 },
        files: spec.restoreFrom === undefined ? [] : [await open(spec.restoreFrom, 'r')],
      })
      const handle: TaskHandle = {
        id: spec.id,
        driver: 'qemu',
        state: {
          pid: task.pid,
          startTime: task.startTime,
          startedAt: Date.now(),
          sockets,
          console,
          ports: spec.ports.flatMap(p => p.guest === undefined ? [] : [{ guest: p.guest, host: p.hostPort }]),
          disk,
          ...spec.image?.system === undefined ? {} : { declared: spec.ports.flatMap(p => p.guest === undefined ? [] : [{ name: p.name, protocol: p.protocol, guestPort: p.guest, hostPort: p.hostPort, health: p.health ?? '' }]) },
        } satisfies QemuState,
      }
      const s = session(handle)
      s.exit = task.exit
      /** Ends what this start began, when the VM does not come up. */
      const undo = async (): Promise<void> => {
        await kill(handle)
        if (startedDisk) await disks.stop(spec.id, disk ?? undefined)
      }
      // The monitor's socket file appears before QEMU listens on it, and QEMU may still fail
      // after creating it (a disk it cannot open): wait until the monitor answers.
      const deadline = Date.now() + SOCKET_WAIT_MS
      let monitor: QmpClient | undefined
      while (monitor === undefined) {
        monitor = existsSync(join(sockets, 'qm.sock')) ? await qmp(handle).catch(() => undefined) : undefined
        if (monitor !== undefined) break
        if (Date.now() > deadline || !await alive(handle)) {
          const why = await tailFile(join(spec.dir, 'qemu.log'), 5)
          await undo()
          throw new XenosError('DRIVER_FAILED', `QEMU did not start${why === '' ? '' : `: ${why}`}`)
        }
        await sleep(10)
      }
      if (spec.restoreFrom !== undefined) {
        await waitForMigration(monitor, 'the saved state to load')
        await monitor.execute('cont')
      }
      if (spec.incoming !== undefined) {
        const { address } = spec.incoming
        handle.state.incomingPort = await listenForMigration(monitor, address).catch(async (err: unknown) => {
          await undo()
          throw err
        })
      }
      return handle
    },

    async recover (handle): Promise<TaskStatus> {
      if (!await alive(handle)) return 'exited'
      try {
        const status = await (await qmp(handle)).execute<{ status: string }>('query-status')
        return status.status === 'running' ? 'running' : 'paused'
      } catch {
        return 'running'
      }
    },

    async wait (handle): Promise<TaskExit> {
      const own = session(handle).exit
      let exit: TaskExit = { code: null, signal: null }
      if (own !== undefined) exit = await own
      while (await alive(handle)) await sleep(own === undefined ? 500 : 50)
      // The guest's service exit code, when its agent reported one, says more than QEMU's.
      const reported = sessions.get(handle.id)?.agent.latest?.exit
      return reported !== undefined && reported !== null ? { code: reported, signal: null } : exit
    },

    async stop (handle, timeoutMs): Promise<void> {
      if (!await alive(handle)) return
      // Started, but the host stopped before it recorded how to talk to it.
      if (typeof handle.state.sockets !== 'string') {
        await kill(handle)
        return
      }
      const monitor = await qmp(handle).catch(() => undefined)
      await monitor?.execute('cont').catch(() => {})
      // A clean shutdown through the guest agent (or ACPI, for an image's own system); QMP quit if the guest does not answer.
      if (stateOf(handle).declared !== undefined) {
        if (await monitor?.execute('system_powerdown').then(() => true, () => false) === true && await waitGone(handle, timeoutMs)) return
      } else if (session(handle).agent.requestShutdown() && await waitGone(handle, timeoutMs)) return
      await monitor?.execute('quit').catch(() => {})
      if (await waitGone(handle, 2000)) return
      await kill(handle)
    },

    async pause (handle): Promise<void> {
      await (await qmp(handle)).execute('stop')
    },

    async resume (handle): Promise<void> {
      await (await qmp(handle)).execute('cont')
    },

    async suspend (handle, path): Promise<void> {
      const monitor = await qmp(handle)
      await saveState(monitor, path)
      await monitor.execute('quit').catch(() => {})
      if (!await waitGone(handle, 5000)) await kill(handle)
    },

    async snapshot (handle, dir): Promise<void> {
      if (stateOf(handle).disk === null) throw new XenosError('INVALID_STATE', `instance ${handle.id}'s disk is served by the host it migrated from: a snapshot needs the disk here`)
      const monitor = await qmp(handle)
      const before = await monitor.execute<{ status: string }>('query-status')
      try {
        await saveState(monitor, join(dir, 'state'))
        // Stopped and flushed by QEMU: the overlay on disk matches the saved memory.
        await copyFile(join(dirname(stateOf(handle).console), 'disk.qcow2'), join(dir, 'disk.qcow2'))
      } finally {
        if (before.status === 'running') await monitor.execute('cont')
      }
    },

    async destroy (handle): Promise<void> {
      const s = sessions.get(handle.id)
      s?.agent.close()
      s?.qmp?.close()
      sessions.delete(handle.id)
      const state = handle.state as Partial<QemuState>
      if (state.sockets !== undefined) await rm(state.sockets, { recursive: true, force: true })
      await init.cgroups?.remove(handle.id)
      await disks.stop(handle.id, state.disk ?? undefined)
      await rm(diskSocketsOf(handle.id), { recursive: true, force: true })
    },

    incomingPort (handle): number {
      const port = stateOf(handle).incomingPort
      if (port === undefined) throw new XenosError('INVALID_STATE', `instance ${handle.id} is not waiting to arrive by migration`)
      return port
    },

    async migrate (handle, channels, onProgress): Promise<MigrationChannel> {
      return await sendMigration(await qmp(handle), channels, join(stateOf(handle).sockets, 'tls-out'), onProgress)
    },

    async cancelMigration (handle): Promise<void> {
      const monitor = await qmp(handle)
      await monitor.execute('migrate_cancel')
      // A migration that already completed left the VM paused: it runs on here.
      const status = await monitor.execute<{ status: string }>('query-status')
      if (status.status !== 'running') await monitor.execute('cont')
    },

    async mirrorDisk (handle, target, onProgress): Promise<void> {
      // A VM started before its staged disks went through its disk server reads them from files
      // (nodes `extraN`): the copy would carry none of them.
      const nodes = await (await qmp(handle)).execute<Array<{ 'node-name': string }>>('query-named-block-nodes')
      if (nodes.some(n => n['node-name'].startsWith('extra'))) throw new XenosError('INVALID_STATE', `instance ${handle.id} reads its staged inputs or outputs from files here (it started before they could move): stop and start it, then move it`)
      await startMirror(diskMonitorOf(handle), target, mirroredImagesOf(handle), onProgress)
    },
    finishMirror: async handle => { await finishMirror(diskMonitorOf(handle), mirroredImagesOf(handle)) },
    dropMirror: async handle => { await dropMirror(diskMonitorOf(handle), mirroredImagesOf(handle)) },

    async takeOver (handle): Promise<void> {
      const monitor = await qmp(handle)
      await waitForMigration(monitor, 'the migrating VM to arrive')
      await monitor.execute('cont')
    },

    async handOff (handle): Promise<Record<string, unknown> | null> {
      const state = stateOf(handle)
      await (await qmp(handle)).execute('quit').catch(() => {})
      if (!await waitGone(handle, 5000)) await kill(handle)
      const s = sessions.get(handle.id)
      s?.agent.close()
      s?.qmp?.close()
      sessions.delete(handle.id)
      await rm(state.sockets, { recursive: true, force: true })
      await init.cgroups?.remove(handle.id)
      return state.disk === null ? null : { ...state.disk }
    },

    async serveDisk (id, dir, staged, server): Promise<{ server: Record<string, unknown>, socket: string }> {
      const known = server as Partial<DiskServerState> | undefined
      if (isDiskServer(known) && await disks.alive(id, known)) return { server: { ...known }, socket: known.socket }
      const state = await disks.start(id, join(dir, 'disk.qcow2'), staged, diskSocketsOf(id), dir)
      return { server: { ...state }, socket: state.socket }
    },

    async readStagedDisk (socket, serial, to): Promise<void> {
      // Only what the guest wrote crosses: the server reports the image's holes.
      await run('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'raw', `nbd+unix:///${serial}?socket=${socket}`, `${to}.tmp`])
      await rename(`${to}.tmp`, to)
    },

    async stopDisk (id, server): Promise<void> {
      const known = server as Partial<DiskServerState>
      await disks.stop(id, isDiskServer(known) ? known : undefined)
      await rm(diskSocketsOf(id), { recursive: true, force: true })
    },

    async stats (handle): Promise<TaskStats> {
      const s = stateOf(handle)
      const usage = init.cgroups !== undefined ? await init.cgroups.usage(handle.id) : await processUsage(s.pid)
      const out: TaskStats = { ...usage, startedAt: s.startedAt }
      try {
        const devices = await (await qmp(handle)).execute<Array<{ stats: { rd_bytes: number, wr_bytes: number } }>>('query-blockstats')
        out.diskReadBytes = devices.reduce((n, d) => n + d.stats.rd_bytes, 0)
        out.diskWriteBytes = devices.reduce((n, d) => n + d.stats.wr_bytes, 0)
      } catch {}
      const guest = sessions.get(handle.id)?.agent.latest
      if (guest !== undefined) {
        out.netRxBytes = guest.rxBytes
        out.netTxBytes = guest.txBytes
      }
      return out
    },

    logFile: handle => typeof handle.state.console === 'string' ? handle.state.console : undefined,

    async endedWith (handle): Promise<number | undefined> {
      if (typeof handle.state.console !== 'string') return undefined
      // What guest/init prints once the service has ended; only the kernel's last words follow it.
      const reported = /xenos-init: the service ended with code (\d+)/.exec(await tailFile(handle.state.console, 64))
      return reported === null ? undefined : Number(reported[1])
    },

    services (handle): GuestService[] | undefined {
      // An image's own system is taken to serve what its template says once QEMU runs: its health checks tell when it does.
      const declared = (handle.state as Partial<QemuState>).declared
      if (declared !== undefined) return declared
      const latest = session(handle).agent.latest
      if (latest === undefined) return undefined
      const ports = stateOf(handle).ports
      return latest.services.map(svc => ({
        name: svc.name,
        protocol: svc.protocol,
        guestPort: svc.port,
        hostPort: ports.find(p => p.guest === svc.port)?.host,
        health: svc.health,
      }))
    },
  } satisfies MigratingDriver
}

/** The monitor of the server of the instance's disk, which copies the disk to another host. */
function diskMonitorOf (handle: TaskHandle): string {
  const disk = stateOf(handle).disk
  if (disk === null) throw new XenosError('INVALID_STATE', `instance ${handle.id}'s disk is served by the host it migrated from, which alone could copy it`)
  if (disk.monitor === undefined) throw new XenosError('INVALID_STATE', `instance ${handle.id}'s disk server started before disks could be copied: stop and start the instance, then move it again`)
  return disk.monitor
}

/** What a copy of the instance's disk carries: the disk and the staged disks its server serves. */
function mirroredImagesOf (handle: TaskHandle): MirroredImage[] {
  const staged = stateOf(handle).disk?.staged ?? []
  return [DISK_IMAGE, ...staged.map((serial, i) => ({ node: `staged${i}`, export: serial }))]
}

function isDiskServer (s: Partial<DiskServerState> | undefined): s is DiskServerState {
  return typeof s?.pid === 'number' && typeof s.startTime === 'number' && typeof s.socket === 'string'
}

/** Stops the VM and writes its whole state to `path` (complete or absent, never half-written). */
async function saveState (monitor: QmpClient, path: string): Promise<void> {
  await monitor.execute('stop')
  await monitor.execute('migrate', { uri: `exec:cat > ${shellQuote(`${path}.tmp`)}` })
  await waitForMigration(monitor, 'the state to be saved')
  await rename(`${path}.tmp`, path)
}

/** Polls `query-migrate` until QEMU reports the migration (to or from a file) completed. */
async function waitForMigration (monitor: QmpClient, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const info = await monitor.execute<{ status?: string, 'error-desc'?: string }>('query-migrate')
    if (info.status === 'completed') return
    if (info.status === 'failed' || info.status === 'cancelled') throw new XenosError('DRIVER_FAILED', `QEMU could not wait for ${what}: ${info['error-desc'] ?? info.status}`)
    if (Date.now() > deadline) throw new XenosError('TIMEOUT', `timed out waiting for ${what}`)
    await sleep(MIGRATION_POLL_MS)
  }
}

function shellQuote (s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`
}

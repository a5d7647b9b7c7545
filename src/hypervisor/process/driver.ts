import { existsSync } from 'node:fs'
import { chown, mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { XenosError, type Driver, type Fingerprint, type TaskExit, type TaskHandle, type TaskSpec, type TaskStats, type TaskStatus } from '../../core/index.ts'
import type { Cgroups } from '../cgroup.ts'
import { processUsage } from '../procfs.ts'
import { spawnTask, taskPids } from '../spawn.ts'

export interface ProcessDriverInit {
  /** Control groups for limits, accounting and freezing; without them pause uses SIGSTOP. */
  cgroups: Cgroups | undefined
  /** User the task runs as when the host runs as root. @default 65534 (nobody) */
  uid: number
  /** @default 65534 (nogroup) */
  gid: number
  /** Directories the task must not see (the host's data and run directories), hidden in its mount namespace but for its own directory. */
  hidden?: string[]
}

export const DEFAULT_TASK_UID = 65534

/** What the driver persists in a handle: enough to find and signal the task after a restart. */
interface ProcessState {
  pid: number
  startTime: number
  startedAt: number
  cgroup: boolean
  log: string
}

const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

/**
 * Run as root inside the task's new mount namespace, before it drops its privileges: puts an
 * empty file system over each hidden directory, keeping the task's own work directory (which
 * may lie inside one) where it was. Arguments: the work directory, how many hidden ones follow,
 * them, then the command to run.
 */
const HIDE_DIRS = 'set -e; work=$1; n=$2; shift 2; keep=$(mktemp -d); mount --bind "$work" "$keep"; ' +
  'i=0; while [ $i -lt $n ]; do [ ! -d "$1" ] || mount -t tmpfs -o size=64k,mode=0755 xenos-hidden "$1"; shift; i=$((i+1)); done; ' +
  'mkdir -p "$work"; mount --move "$keep" "$work"; rmdir "$keep"; exec "$@"'

/**
 * Init of the task's pid namespace: the kernel drops SIGTERM sent to a namespace's init unless it
 * handles it, so this small init passes it on and exits with the service's status.
 */
const NAMESPACE_INIT = '"$@" & pid=$!; trap \'kill -TERM $pid 2>/dev/null\' TERM INT; while :; do wait $pid; st=$?; kill -0 $pid 2>/dev/null || exit $st; done'

function stateOf (handle: TaskHandle): ProcessState {
  const s = handle.state as Partial<ProcessState>
  if (typeof s.pid !== 'number' || typeof s.startTime !== 'number' || typeof s.log !== 'string') {
    throw new XenosError('DRIVER_FAILED', `instance ${handle.id} has no usable process state`)
  }
  return s as ProcessState
}

/** Replaces `${XENOS_PORT_HTTP}`-style references with values from `env`. */
export function substitute (text: string, env: Record<string, string>): string {
  return text.replace(/\$\{(XENOS_[A-Z0-9_]+)\}/g, (all, name: string) => env[name] ?? all)
}

/**
 * Runs a template's command as a sandboxed host process: its own pid, mount, ipc and uts
 * namespaces when the host runs as root, an unprivileged user, and a cgroup with the template's
 * CPU and memory limits. The process outlives `xenosd`, which re-attaches to it by pid and start
 * time after a restart.
 */
export function processDriver (init: ProcessDriverInit): Driver {
  const isRoot = process.getuid?.() === 0
  const sandboxed = isRoot && existsSync('/usr/bin/unshare') && existsSync('/usr/bin/setpriv')
  const exits = new Map<number, Promise<TaskExit>>()

  /** Pids of the task: its cgroup's members, else its process group; works on partial handles too. */
  async function pidsOf (handle: TaskHandle): Promise<number[]> {
    const s = handle.state as Partial<ProcessState>
    return await taskPids(handle.id, s.cgroup === false ? undefined : init.cgroups, s.pid, s.startTime)
  }

  async function signalAll (handle: TaskHandle, signal: NodeJS.Signals): Promise<void> {
    for (const pid of await pidsOf(handle)) {
      try { process.kill(pid, signal) } catch {}
    }
  }

  async function alive (handle: TaskHandle): Promise<boolean> {
    return (await pidsOf(handle)).length > 0
  }

  function argv (spec: TaskSpec, env: Record<string, string>, work: string): string[] {
    const command = spec.command
    if (command === undefined) throw new XenosError('BAD_MANIFEST', 'a process template needs a command')
    const cmd = typeof command === 'string' ? ['/bin/sh', '-c', substitute(command, env)] : command.map(a => substitute(a, env))
    if (!sandboxed) return cmd
    const hidden = init.hidden ?? []
    return [
      '/usr/bin/unshare', '--pid', '--fork', '--mount-proc', '--ipc', '--uts', '--',
      '/bin/sh', '-c', HIDE_DIRS, 'xenos-hide', work, String(hidden.length), ...hidden,
      '/usr/bin/setpriv', `--reuid=${init.uid}`, `--regid=${init.gid}`, '--clear-groups', '--no-new-privs', '--',
      '/bin/sh', '-c', NAMESPACE_INIT, 'xenos-init', ...cmd,
    ]
  }

  return {
    name: 'process',
    capabilities: () => ({ pause: true, suspend: false, migrate: false, links: 'port' }),

    async fingerprint (): Promise<Fingerprint> {
      return {
        healthy: true,
        detail: sandboxed ? 'namespaces, unprivileged user, host directories hidden' : 'no sandbox: xenosd is not root or unshare/setpriv are missing',
        attributes: {
          sandbox: sandboxed ? 'namespaces' : 'none',
          cgroups: init.cgroups === undefined ? 'none' : `v${init.cgroups.version}`,
        },
      }
    },

    async start (spec: TaskSpec): Promise<TaskHandle> {
      const work = join(spec.dir, 'work')
      await mkdir(work, { recursive: true })
      if (sandboxed) await chown(work, init.uid, init.gid)
      const env: Record<string, string> = { PATH, HOME: work, XENOS_INSTANCE_ID: spec.id, XENOS_HOST: spec.bindAddress }
      for (const p of spec.ports) env[`XENOS_PORT_${p.name.toUpperCase()}`] = String(p.hostPort)
      // A process shares the host's network: each link is a loopback port of its own.
      for (const l of spec.links ?? []) {
        if (!('port' in l.to)) throw new XenosError('DRIVER_FAILED', `link ${l.name} of instance ${spec.id} has no port`)
        env[`XENOS_LINK_${l.name.toUpperCase()}`] = `${l.to.host}:${l.to.port}`
      }
      for (const [k, v] of Object.entries({ ...spec.env, ...spec.instanceEnv })) env[k] = substitute(v, env)

      const log = join(spec.dir, 'console.log')
      const task = await spawnTask({ id: spec.id, argv: argv(spec, env, work), cwd: work, env, log, cgroups: init.cgroups, resources: spec.resources })
      exits.set(task.pid, task.exit)
      const state: ProcessState = { pid: task.pid, startTime: task.startTime, startedAt: Date.now(), cgroup: init.cgroups !== undefined, log }
      return { id: spec.id, driver: 'process', state: { ...state } }
    },

    async recover (handle): Promise<TaskStatus> {
      if (!await alive(handle)) return 'exited'
      const s = stateOf(handle)
      if (s.cgroup && init.cgroups !== undefined) return await init.cgroups.isFrozen(handle.id).catch(() => false) ? 'paused' : 'running'
      const status = await readFile(`/proc/${s.pid}/status`, 'utf8').catch(() => '')
      return /State:\s+T/.test(status) ? 'paused' : 'running'
    },

    async wait (handle): Promise<TaskExit> {
      const s = stateOf(handle)
      const own = exits.get(s.pid)
      if (own !== undefined) {
        const exit = await own
        // The namespace's processes die with its init; wait until the kernel has reaped them.
        while (await alive(handle)) await sleep(50)
        return exit
      }
      while (await alive(handle)) await sleep(500)
      return { code: null, signal: null }
    },

    async stop (handle, timeoutMs): Promise<void> {
      if (!await alive(handle)) return
      if (init.cgroups !== undefined && handle.state.cgroup !== false) await init.cgroups.freeze(handle.id, false).catch(() => {})
      await signalAll(handle, 'SIGCONT')
      await signalAll(handle, 'SIGTERM')
      const deadline = Date.now() + timeoutMs
      while (Date.now() < deadline && await alive(handle)) await sleep(50)
      while (await alive(handle)) {
        await signalAll(handle, 'SIGKILL')
        await sleep(50)
      }
    },

    async pause (handle): Promise<void> {
      if (stateOf(handle).cgroup && init.cgroups !== undefined) await init.cgroups.freeze(handle.id, true)
      else await signalAll(handle, 'SIGSTOP')
    },

    async resume (handle): Promise<void> {
      if (stateOf(handle).cgroup && init.cgroups !== undefined) await init.cgroups.freeze(handle.id, false)
      else await signalAll(handle, 'SIGCONT')
    },

    async destroy (handle): Promise<void> {
      const pid = handle.state.pid
      if (typeof pid === 'number') {
        exits.delete(pid)
      }
      if (handle.state.cgroup !== false) await init.cgroups?.remove(handle.id)
    },

    async stats (handle): Promise<TaskStats> {
      const s = stateOf(handle)
      const usage = s.cgroup && init.cgroups !== undefined ? await init.cgroups.usage(handle.id) : await processUsage(s.pid)
      return { ...usage, startedAt: s.startedAt }
    },

    logFile: handle => typeof handle.state.log === 'string' ? handle.state.log : undefined,
  } satisfies Driver
}

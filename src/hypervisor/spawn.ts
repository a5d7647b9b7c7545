import { spawn, type ChildProcess } from 'node:child_process'
import { open, type FileHandle } from 'node:fs/promises'
import { XenosError, type Resources, type TaskExit } from '../core/index.ts'
import type { Cgroups } from './cgroup.ts'
import { isSameProcess, processStartTime } from './procfs.ts'

/**
 * Joins the task's cgroups before anything else runs, so every process the task ever starts is
 * accounted and limited.
 */
const JOIN_CGROUP = 'for f in $XENOS_CGROUP_PROCS; do echo $$ > "$f" || exit 125; done; unset XENOS_CGROUP_PROCS; exec "$@"'

export interface SpawnedTask {
  pid: number
  /** Start time of the process (from /proc), so its pid is never confused with a later one. */
  startTime: number
  exit: Promise<TaskExit>
}

export interface SpawnInit {
  id: string
  argv: string[]
  cwd: string
  env: Record<string, string>
  /** File that receives the task's stdout and stderr. */
  log: string
  cgroups: Cgroups | undefined
  resources: Resources
  /** Open files the task inherits as descriptors 3, 4, …; closed here once the task has them. */
  files?: FileHandle[]
}

/**
 * Starts a task that outlives this process: its own session, output to a log file, inside a
 * fresh cgroup with the task's limits when cgroups are available.
 */
export async function spawnTask (o: SpawnInit): Promise<SpawnedTask> {
  const inherited = o.files ?? []
  let out: FileHandle | undefined
  let child: ChildProcess
  let spawned: Promise<number>
  try {
    if (o.cgroups !== undefined) await o.cgroups.create(o.id, o.resources)
    out = await open(o.log, 'a')
    child = spawn('/bin/sh', ['-c', JOIN_CGROUP, 'xenos-join', ...o.argv], {
      cwd: o.cwd,
      detached: true,
      stdio: ['ignore', out.fd, out.fd, ...inherited.map(f => f.fd)],
      env: { ...o.env, XENOS_CGROUP_PROCS: o.cgroups?.procsFiles(o.id).join(' ') ?? '' },
    })
    spawned = new Promise<number>((resolve, reject) => {
      child.once('spawn', () => { resolve(child.pid ?? -1) })
      child.once('error', err => { reject(new XenosError('DRIVER_FAILED', `cannot start ${o.argv[0] ?? 'the task'}: ${err.message}`)) })
    })
  } finally {
    // The child holds its own copies of the descriptors from here on.
    await Promise.all([out, ...inherited].map(async f => { await f?.close() }))
  }
  const pid = await spawned
  const exit = new Promise<TaskExit>(resolve => child.once('exit', (code, signal) => { resolve({ code, signal }) }))
  // A task may already have ended (a quick batch job): its exit still reaches `exit`.
  const startTime = await processStartTime(pid, true) ?? -1
  return { pid, startTime, exit }
}

/** Pids of a task: its cgroup's members, else its process group while its leader lives. */
export async function taskPids (id: string, cgroups: Cgroups | undefined, pid: number | undefined, startTime: number | undefined): Promise<number[]> {
  if (cgroups !== undefined) {
    const pids = await cgroups.pids(id)
    if (pids.length > 0) return pids
  }
  if (pid !== undefined && startTime !== undefined && await isSameProcess(pid, startTime)) return [-pid]
  return []
}

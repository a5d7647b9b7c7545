import { existsSync } from 'node:fs'
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Resources } from '../core/index.ts'

/**
 * A control group per task, for CPU and memory limits, accounting and freezing. Works with the
 * cgroup v1 layout (one hierarchy per controller) and with the unified v2 layout, detected at
 * start; where neither is writable, `detectCgroups` returns undefined and drivers go without.
 */
export interface Cgroups {
  readonly version: 1 | 2
  /** Files a process writes its pid to in order to join the task's groups. */
  procsFiles (id: string): string[]
  create (id: string, resources: Resources): Promise<void>
  pids (id: string): Promise<number[]>
  freeze (id: string, frozen: boolean): Promise<void>
  isFrozen (id: string): Promise<boolean>
  usage (id: string): Promise<{ cpuSeconds: number, memoryBytes: number }>
  remove (id: string): Promise<void>
}

const CPU_PERIOD_US = 100_000
const V1_CONTROLLERS = ['cpu', 'cpuacct', 'memory', 'freezer', 'pids'] as const

export async function detectCgroups (root = '/sys/fs/cgroup', parent = 'xenos'): Promise<Cgroups | undefined> {
  try {
    if (existsSync(join(root, 'cgroup.controllers'))) {
      const base = join(root, parent)
      await mkdir(base, { recursive: true })
      await writeFile(join(base, 'cgroup.subtree_control'), '+cpu +memory +pids').catch(() => {})
      return v2(base)
    }
    if (V1_CONTROLLERS.every(c => existsSync(join(root, c)))) {
      for (const c of V1_CONTROLLERS) await mkdir(join(root, c, parent), { recursive: true })
      return v1(root, parent)
    }
  } catch {
    return undefined
  }
  return undefined
}

async function readNumber (path: string): Promise<number> {
  return Number((await readFile(path, 'utf8')).trim())
}

async function readPids (path: string): Promise<number[]> {
  try {
    return (await readFile(path, 'utf8')).split('\n').filter(Boolean).map(Number)
  } catch {
    return []
  }
}

/** rmdir fails while the kernel is still tearing down exited tasks: retry briefly. */
async function removeDir (path: string): Promise<void> {
  for (let i = 0; i < 50; i++) {
    try {
      await rmdir(path)
      return
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT') return
      if (code !== 'EBUSY') throw err
      await sleep(20)
    }
  }
}

function v1 (root: string, parent: string): Cgroups {
  const dir = (c: string, id: string): string => join(root, c, parent, id)
  return {
    version: 1,
    procsFiles: id => V1_CONTROLLERS.map(c => join(dir(c, id), 'cgroup.procs')),
    async create (id, r) {
      for (const c of V1_CONTROLLERS) await mkdir(dir(c, id), { recursive: true })
      await writeFile(join(dir('cpu', id), 'cpu.cfs_period_us'), String(CPU_PERIOD_US))
      await writeFile(join(dir('cpu', id), 'cpu.cfs_quota_us'), String(Math.max(1000, Math.round(r.cpu * CPU_PERIOD_US))))
      await writeFile(join(dir('cpu', id), 'cpu.shares'), String(Math.max(2, Math.round(r.cpu * 1024))))
      await writeFile(join(dir('memory', id), 'memory.limit_in_bytes'), String(r.memory * 1024 * 1024))
    },
    pids: async id => await readPids(join(dir('pids', id), 'cgroup.procs')),
    async freeze (id, frozen) {
      const state = join(dir('freezer', id), 'freezer.state')
      await writeFile(state, frozen ? 'FROZEN' : 'THAWED')
      for (let i = 0; i < 200; i++) {
        const now = (await readFile(state, 'utf8')).trim()
        if (now === (frozen ? 'FROZEN' : 'THAWED')) return
        await sleep(10)
      }
    },
    isFrozen: async id => (await readFile(join(dir('freezer', id), 'freezer.state'), 'utf8')).trim() !== 'THAWED',
    async usage (id) {
      return {
        cpuSeconds: (await readNumber(join(dir('cpuacct', id), 'cpuacct.usage'))) / 1e9,
        memoryBytes: await readNumber(join(dir('memory', id), 'memory.usage_in_bytes')),
      }
    },
    async remove (id) {
      for (const c of V1_CONTROLLERS) await removeDir(dir(c, id))
    },
  }
}

function v2 (base: string): Cgroups {
  const dir = (id: string): string => join(base, id)
  return {
    version: 2,
    procsFiles: id => [join(dir(id), 'cgroup.procs')],
    async create (id, r) {
      await mkdir(dir(id), { recursive: true })
      await writeFile(join(dir(id), 'cpu.max'), `${Math.max(1000, Math.round(r.cpu * CPU_PERIOD_US))} ${CPU_PERIOD_US}`).catch(() => {})
      await writeFile(join(dir(id), 'cpu.weight'), String(Math.min(10_000, Math.max(1, Math.round(r.cpu * 100))))).catch(() => {})
      await writeFile(join(dir(id), 'memory.max'), String(r.memory * 1024 * 1024)).catch(() => {})
    },
    pids: async id => await readPids(join(dir(id), 'cgroup.procs')),
    async freeze (id, frozen) {
      await writeFile(join(dir(id), 'cgroup.freeze'), frozen ? '1' : '0')
      for (let i = 0; i < 200; i++) {
        const events = await readFile(join(dir(id), 'cgroup.events'), 'utf8')
        if (events.includes(`frozen ${frozen ? 1 : 0}`)) return
        await sleep(10)
      }
    },
    isFrozen: async id => (await readFile(join(dir(id), 'cgroup.freeze'), 'utf8')).trim() === '1',
    async usage (id) {
      const stat = await readFile(join(dir(id), 'cpu.stat'), 'utf8')
      const usec = Number(/usage_usec (\d+)/.exec(stat)?.[1] ?? 0)
      return { cpuSeconds: usec / 1e6, memoryBytes: await readNumber(join(dir(id), 'memory.current')).catch(() => 0) }
    },
    remove: async id => { await removeDir(dir(id)) },
  }
}

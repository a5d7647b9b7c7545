import { existsSync } from 'node:fs'
import { mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises'
import { cpus } from 'node:os'
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
  /**
   * Sets a task's CPU weight among the host's tasks (1–10000, as cgroup v2 counts them; v1's
   * shares are scaled to match) and its cap in CPUs (null: none but the host's own).
   */
  weigh (id: string, weight: number, cap: number | null): Promise<void>
  /** Caps all the host's tasks together at `cpu` CPUs (what the host offers), run on that many of the machine's; no task is then given a cap above it. */
  capAll (cpu: number): Promise<void>
}

/** Weights as cgroup v2 counts them. */
export const MIN_CPU_WEIGHT = 1
export const MAX_CPU_WEIGHT = 10_000

const CPU_PERIOD_US = 100_000

/** The CFS quota of `cpu` CPUs per period. */
function quotaOf (cpu: number): number {
  return Math.max(1000, Math.round(cpu * CPU_PERIOD_US))
}

function clampWeight (weight: number): number {
  return Math.min(MAX_CPU_WEIGHT, Math.max(MIN_CPU_WEIGHT, Math.round(weight)))
}

/** The weight a task of `cpu` CPUs has by default: v2's default (100) per CPU. */
function defaultWeight (cpu: number): number {
  return clampWeight(cpu * 100)
}
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
      return v1(root, parent, await v1Cpuset(root, parent))
    }
  } catch {
    return undefined
  }
  return undefined
}

/**
 * The v1 cpuset group of the host's tasks, when the controller is there: it starts with all the
 * machine's CPUs and memory nodes, and each task's group is made with its parent's.
 */
async function v1Cpuset (root: string, parent: string): Promise<boolean> {
  if (!existsSync(join(root, 'cpuset'))) return false
  const base = join(root, 'cpuset', parent)
  await mkdir(base, { recursive: true })
  for (const f of ['cpuset.cpus', 'cpuset.mems']) {
    if ((await readFile(join(base, f), 'utf8')).trim() === '') await writeFile(join(base, f), await readFile(join(root, 'cpuset', f), 'utf8'))
  }
  await writeFile(join(base, 'cgroup.clone_children'), '1')
  return true
}

/**
 * The CPUs the host's tasks run on when it offers `cpu` of the machine's `count`: the last
 * ceil(cpu) of them (all when it offers all). Weights divide a CPU's time between the tasks that
 * share it; tasks spread over more CPUs than the host offers would each take a CPU's share of
 * the cap, whatever their weights.
 */
export function cpusFor (cpu: number, count = cpus().length): string {
  const k = Math.min(count, Math.max(1, Math.ceil(cpu - 1e-9)))
  return k === 1 ? String(count - 1) : `${count - k}-${count - 1}`
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

function v1 (root: string, parent: string, cpuset: boolean): Cgroups {
  const dir = (c: string, id: string): string => join(root, c, parent, id)
  const controllers: readonly string[] = cpuset ? [...V1_CONTROLLERS, 'cpuset'] : V1_CONTROLLERS
  // A v1 child's quota may not exceed its parent's (the kernel refuses it): each is kept within the host's.
  let hostCap = Infinity
  const writeQuota = async (id: string, cpu: number | null): Promise<void> => {
    const cpus = Math.min(cpu ?? Infinity, hostCap)
    await writeFile(join(dir('cpu', id), 'cpu.cfs_quota_us'), cpus === Infinity ? '-1' : String(quotaOf(cpus)))
  }
  return {
    version: 1,
    procsFiles: id => controllers.map(c => join(dir(c, id), 'cgroup.procs')),
    async create (id, r) {
      for (const c of controllers) await mkdir(dir(c, id), { recursive: true })
      await writeFile(join(dir('cpu', id), 'cpu.cfs_period_us'), String(CPU_PERIOD_US))
      await writeQuota(id, r.cpu)
      await writeFile(join(dir('cpu', id), 'cpu.shares'), String(v1Shares(defaultWeight(r.cpu))))
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
      for (const c of controllers) await removeDir(dir(c, id))
    },
    async weigh (id, weight, cap) {
      await writeFile(join(dir('cpu', id), 'cpu.shares'), String(v1Shares(clampWeight(weight))))
      await writeQuota(id, cap)
    },
    async capAll (cpu) {
      hostCap = cpu
      const base = join(root, 'cpu', parent)
      // Tasks started under a larger cap (before a restart with a smaller offer) come within it first.
      for (const entry of await readdir(base, { withFileTypes: true })) {
        if (!entry.isDirectory()) continue
        const quota = await readNumber(join(base, entry.name, 'cpu.cfs_quota_us'))
        if (quota < 0 || quota > quotaOf(cpu)) await writeFile(join(base, entry.name, 'cpu.cfs_quota_us'), String(quotaOf(cpu)))
      }
      await writeFile(join(base, 'cpu.cfs_period_us'), String(CPU_PERIOD_US))
      await writeFile(join(base, 'cpu.cfs_quota_us'), String(quotaOf(cpu)))
      if (cpuset) await confine(join(root, 'cpuset', parent), cpusFor(cpu))
    },
  }
}

/**
 * Puts the v1 cpuset group `base` and its tasks' groups on `cpus`. A parent holds all its
 * children's CPUs: one that shrinks can do so only once they did, one that grows before they do.
 */
async function confine (base: string, cpus: string): Promise<void> {
  const set = async (dir: string): Promise<void> => { await writeFile(join(dir, 'cpuset.cpus'), cpus) }
  const grew = await set(base).then(() => true, () => false)
  for (const entry of await readdir(base, { withFileTypes: true })) if (entry.isDirectory()) await set(join(base, entry.name))
  if (!grew) await set(base)
}

/** v1's shares for a v2 weight: v1 counts 1024 where v2 counts 100. */
function v1Shares (weight: number): number {
  return Math.max(2, Math.round(weight * 1024 / 100))
}

function v2 (base: string): Cgroups {
  const dir = (id: string): string => join(base, id)
  return {
    version: 2,
    procsFiles: id => [join(dir(id), 'cgroup.procs')],
    async create (id, r) {
      await mkdir(dir(id), { recursive: true })
      await writeFile(join(dir(id), 'cpu.max'), `${quotaOf(r.cpu)} ${CPU_PERIOD_US}`).catch(() => {})
      await writeFile(join(dir(id), 'cpu.weight'), String(defaultWeight(r.cpu))).catch(() => {})
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
    async weigh (id, weight, cap) {
      await writeFile(join(dir(id), 'cpu.weight'), String(clampWeight(weight)))
      // v2 keeps a child within its parent's cap by itself.
      await writeFile(join(dir(id), 'cpu.max'), `${cap === null ? 'max' : quotaOf(cap)} ${CPU_PERIOD_US}`)
    },
    async capAll (cpu) {
      await writeFile(join(base, 'cpu.max'), `${quotaOf(cpu)} ${CPU_PERIOD_US}`)
      // Where the cpuset controller is enabled for the host's group (its children inherit its CPUs).
      await writeFile(join(base, 'cpuset.cpus'), cpusFor(cpu)).catch(() => {})
    },
  }
}

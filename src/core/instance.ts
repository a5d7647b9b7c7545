import { randomBytes } from 'node:crypto'
import type { Resources } from './template.ts'
import type { MarketView } from './market.ts'

/**
 * Instance states. `creating` is written before a driver is asked to start anything, so a host
 * that crashes mid-way finds the record and settles it on restart.
 */
export const INSTANCE_STATES = ['creating', 'running', 'paused', 'suspended', 'stopped', 'exited', 'failed'] as const
export type InstanceState = typeof INSTANCE_STATES[number]

/** A task is `running` until its VM ends, `collecting` while its outputs go to the repository, then ended. */
export const TASK_STATES = ['running', 'collecting', 'succeeded', 'failed'] as const
export type TaskState = typeof TASK_STATES[number]

/** States in which an instance holds host resources (admission control counts these). */
export const ACTIVE_STATES: ReadonlySet<InstanceState> = new Set(['creating', 'running', 'paused'])

/** States in which an instance's task has ended (stopped, or ended by itself): it can be started again. */
export const ENDED_STATES: readonly InstanceState[] = ['stopped', 'exited', 'failed']

export const CONTROL_ACTIONS = ['start', 'stop', 'pause', 'resume', 'suspend', 'destroy'] as const
export type ControlAction = typeof CONTROL_ACTIONS[number]

export interface Endpoint {
  name: string
  url: string
}

export type ServiceHealth = 'passing' | 'failing' | 'unknown'

/** A service of an instance as its host sees it: registered by the guest, and its last health check. */
export interface ServiceStatus {
  name: string
  url: string
  registered: boolean
  health: ServiceHealth
  checkedAt: number
}

/** The stable JSON shape of an instance in the API and `--json` output (with its bid and share, on its host). */
export interface InstanceView extends MarketView {
  id: string
  name: string
  template: string
  templateName: string
  host: string
  state: InstanceState
  owner: string
  endpoints: Endpoint[]
  services: ServiceStatus[]
  resources: Resources
  createdAt: number
  updatedAt: number
  /** When the guest came up (its agent first reported; a process: when it started), on its host's clock. */
  bootedAt?: number | undefined
  /** When every service first passed its health check since the instance last started. */
  healthyAt?: number | undefined
  error?: string | undefined
  /** The exit status of the guest's task, once it has ended. */
  exitCode?: number | undefined
  /** Its host was taken for dead at this time and has not answered since: `state` is as it was last heard, its present unknown. */
  unreachableSince?: number | undefined
}

export interface InstanceMetrics {
  id: string
  host: string
  state: InstanceState
  cpuSeconds: number
  memoryBytes: number
  uptimeSeconds: number
  /** Bytes the instance's disks read and wrote, as its VM counts them; absent where the driver cannot tell. */
  diskReadBytes?: number | undefined
  diskWriteBytes?: number | undefined
  /** Bytes the guest received and sent on its network card, as the guest reports them (a guest may misreport its own). */
  netRxBytes?: number | undefined
  netTxBytes?: number | undefined
  sampledAt: number
}

/** Instance ids: `i-` and 16 hex digits; short enough to type, derived from their owner's deploy token (see placement.ts). */
export const INSTANCE_ID_PATTERN = /^i-[0-9a-f]{16}$/

/** Snapshot ids: `s-` and 16 hex digits. */
export const SNAPSHOT_ID_PATTERN = /^s-[0-9a-f]{16}$/

export function newSnapshotId (): string {
  return `s-${randomBytes(8).toString('hex')}`
}

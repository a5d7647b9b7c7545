import type { PortSpec, Resources, TemplateImage } from './template.ts'

/**
 * The contract every way of running instances fulfils (shaped like Nomad's task drivers).
 * A driver never keeps the only copy of what it started: `start` returns a handle whose opaque
 * `state` the host persists, and `recover` re-attaches to it after the host restarts.
 */
export interface Driver {
  readonly name: string
  capabilities (): DriverCapabilities
  /** Reports whether the driver can run here; never throws. */
  fingerprint (): Promise<Fingerprint>
  start (spec: TaskSpec, options?: { signal?: AbortSignal }): Promise<TaskHandle>
  /** Re-attaches to a task started before a restart: `running`/`paused` if it lives, else `exited`. */
  recover (handle: TaskHandle): Promise<TaskStatus>
  /** Resolves when the task ends, however it ends. */
  wait (handle: TaskHandle): Promise<TaskExit>
  /** Graceful stop: ask, wait up to `timeoutMs`, then force. */
  stop (handle: TaskHandle, timeoutMs: number): Promise<void>
  pause (handle: TaskHandle): Promise<void>
  resume (handle: TaskHandle): Promise<void>
  /** Removes everything the task left on the host; the task must already have ended. */
  destroy (handle: TaskHandle): Promise<void>
  stats (handle: TaskHandle): Promise<TaskStats>
  /** Last lines the task printed, for logs and failure reports. */
  logTail (handle: TaskHandle, lines: number): Promise<string>
  /** Services the guest says it runs (the notice board); drivers without a guest agent omit this. */
  services? (handle: TaskHandle): GuestService[] | undefined
  /** Saves the task's whole state to `path` and ends it (capability `suspend`). */
  suspend? (handle: TaskHandle, path: string): Promise<void>
  /** Saves the task's state to `dir/state` and a copy of its disk to `dir/disk.qcow2`; the task runs on. */
  snapshot? (handle: TaskHandle, dir: string): Promise<void>
}

/** A service a guest registered with its host, with the host port that reaches it. */
export interface GuestService {
  name: string
  protocol: string
  guestPort: number
  hostPort: number | undefined
  health: string
}

export interface DriverCapabilities {
  pause: boolean
  suspend: boolean
  migrate: boolean
}

export interface Fingerprint {
  healthy: boolean
  detail: string
  attributes: Record<string, string>
}

export interface AssignedPort extends PortSpec {
  hostPort: number
}

export interface TaskSpec {
  /** Instance id; also names cgroups and run directories. */
  id: string
  /** Directory owned by this task (logs, sockets, disks). */
  dir: string
  command?: string | string[] | undefined
  env: Record<string, string>
  ports: AssignedPort[]
  resources: Resources
  /** Address services should listen on so other hosts can reach them. */
  bindAddress: string
  /** What a VM boots from (VM drivers only). */
  image?: TemplateImage | undefined
  /** Start from this saved state instead of booting (drivers with `suspend`). */
  restoreFrom?: string | undefined
}

export interface TaskHandle {
  id: string
  driver: string
  /** Opaque to everyone but the driver; JSON-serialisable. */
  state: Record<string, unknown>
}

export type TaskStatus = 'running' | 'paused' | 'exited'

export interface TaskExit {
  code: number | null
  signal: string | null
}

export interface TaskStats {
  cpuSeconds: number
  memoryBytes: number
  startedAt: number
  diskReadBytes?: number
  diskWriteBytes?: number
  netRxBytes?: number
  netTxBytes?: number
}

import type { PortSpec, Resources, TemplateImage } from './template.ts'

/**
 * The contract every way of running instances fulfils (shaped like Nomad's task drivers).
 * A driver never keeps the only copy of what it started: `start` returns a handle whose opaque
 * `state` the host persists, and `recover` re-attaches to it after the host restarts.
 */
/** A piece of a task's output (its log file), and the offset at which what comes after it starts. */
export interface LogPiece { text: string, next: number }

export interface Driver {
  readonly name: string
  capabilities (): DriverCapabilities
  /** Reports whether the driver can run here; never throws. */
  fingerprint (): Promise<Fingerprint>
  start (spec: TaskSpec): Promise<TaskHandle>
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
  /** The file the task's output (its console) goes to, for logs and failure reports. */
  logFile (handle: TaskHandle): string | undefined
  /** The exit status the ended task left in its log, for a task that ended while the host was not watching. */
  endedWith? (handle: TaskHandle): Promise<number | undefined>
  /** Services the guest says it runs (the notice board); drivers without a guest agent omit this. */
  services? (handle: TaskHandle): GuestService[] | undefined
  /** Saves the task's whole state to `path` and ends it (capability `suspend`). */
  suspend? (handle: TaskHandle, path: string): Promise<void>
  /** Saves the task's state to `dir/state` and a copy of its disk to `dir/disk.qcow2`; the task runs on. */
  snapshot? (handle: TaskHandle, dir: string): Promise<void>
}

/**
 * A driver that moves running tasks live between hosts (capability `migrate`) and serves their
 * disks to other hosts. The source sends the running VM to where a task started with `incoming`
 * waits; the destination takes over, then the source hands off.
 */
export interface MigratingDriver extends Driver {
  /** The TCP port on which a task started with `incoming` waits for the VM. */
  incomingPort (handle: TaskHandle): number
  /**
   * Sends the running VM's memory through the first of `channels` that connects, while the VM
   * runs; resolves with that channel when it is all there (the VM is then paused here).
   */
  migrate (handle: TaskHandle, channels: MigrationChannel[], onProgress: (p: MigrationProgress) => void): Promise<MigrationChannel>
  /** Gives up a migration: the VM runs on here, whatever stage it reached. */
  cancelMigration (handle: TaskHandle): Promise<void>
  /** On the destination: waits until the whole VM has arrived, then runs it. */
  takeOver (handle: TaskHandle): Promise<void>
  /**
   * On the source, before `migrate`, to move the disk too: copies it to the NBD export on unix
   * socket `target` while the VM runs; resolves once the copy keeps up with every write.
   */
  mirrorDisk (handle: TaskHandle, target: string, onProgress: (p: DiskCopyProgress) => void): Promise<void>
  /** Ends the copy once the VM has stopped for good (its memory all sent): the copy is then whole. */
  finishMirror (handle: TaskHandle): Promise<void>
  /** Gives up the copy, at whatever stage (the migration failed). */
  dropMirror (handle: TaskHandle): Promise<void>
  /**
   * On the source, after the destination took over: ends the VM but keeps its disk served;
   * returns the disk server's state, or null when another host serves the disk.
   */
  handOff (handle: TaskHandle): Promise<Record<string, unknown> | null>
  /**
   * Serves instance `id`'s disk in `dir`, with its staged `disks` (again, after a restart, unless
   * `server` still runs); returns the server and its socket.
   */
  serveDisk (id: string, dir: string, disks: StagedDisk[], server?: Record<string, unknown>): Promise<{ server: Record<string, unknown>, socket: string }>
  /** Copies staged disk `serial`, served with a disk on unix socket `socket`, into a raw image at `to`. */
  readStagedDisk (socket: string, serial: string, to: string): Promise<void>
  /** Ends a disk server `handOff` or `serveDisk` returned. */
  stopDisk (id: string, server: Record<string, unknown>): Promise<void>
}

/** Whether driver `d` moves tasks live (its capabilities say so; `qemuDriver` is typed as one). */
export function canMigrate (d: Driver): d is MigratingDriver {
  return d.capabilities().migrate
}

/**
 * A way to a migrating VM's destination: its TCP port, or a unix socket that leads there (a
 * tunnel); the memory travels over TLS keyed with `key` (hex), made for this one move.
 */
export interface MigrationChannel {
  to: { host: string, port: number } | { path: string }
  key: string
}

/** How far the copy of a migrating VM's disk got: only what the instance wrote itself is copied. */
export interface DiskCopyProgress {
  copiedBytes: number
  totalBytes: number
}

/** How far a live migration got, as the hypervisor reports it. */
export interface MigrationProgress {
  status: string
  transferredBytes: number
  remainingBytes: number
  totalBytes: number
  /** Guest memory pages written per second: a busy guest must be sent again and again. */
  dirtyPagesRate: number
  expectedDowntimeMs: number | null
  /** Once completed: how long the VM was paused for the final copy. */
  downtimeMs: number | null
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
  /** How the host's end of a task's links is made (see `TaskLink`): a unix socket, or a loopback port. */
  links: 'path' | 'port'
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
  /**
   * Wait, paused, for a migrating VM to arrive on a TCP port of `address`, over TLS keyed with
   * `key` (drivers with `migrate`; see `incomingPort`).
   */
  incoming?: { address: string, key: string } | undefined
  /** Use the disk served on this unix socket (by the host the VM migrated from) instead of one of its own. */
  remoteDisk?: string | undefined
  /**
   * The server of the VM's own disk, already running: a VM arriving back at the host that kept
   * serving its disk while it ran elsewhere uses it instead of starting one.
   */
  diskServer?: Record<string, unknown> | undefined
  /** Further raw disks the VM sees, each named by its serial (VM drivers only; see `StagedDisk`). */
  disks?: StagedDisk[] | undefined
  /** Let the VM reach the network beyond its endpoints (VM drivers only; by default it reaches nothing). */
  outbound?: boolean | undefined
  /** Services the task reaches at an address its host set up for each (see `TaskLink`). */
  links?: TaskLink[] | undefined
  /**
   * Environment variables its deploy gave the task, over its template's `env` (in which
   * `${XENOS_…}` names what the host set up: `${XENOS_LINK_NAME}`, `${XENOS_INSTANCE_ID}`).
   */
  instanceEnv?: Record<string, string> | undefined
}

/**
 * A service a task reaches, by name, at an address its host sets up for exactly that service:
 * the host's end is a unix socket (`path`, for VMs, which reach it at an address of their own
 * network) or a loopback port (for processes, which share the host's network). The task finds
 * the address in `XENOS_LINK_<NAME>`.
 */
export interface TaskLink {
  name: string
  to: { path: string } | { host: string, port: number }
}

/**
 * A raw disk a VM sees besides its own, named by its serial. It is served with the VM's disk, by
 * the same server, so that a host the VM moves to reaches it the same way: from the image at
 * `path` on this host, or, without `path`, by the host that serves the VM's disk (`remoteDisk`).
 */
export interface StagedDisk {
  serial: string
  readOnly: boolean
  path?: string | undefined
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

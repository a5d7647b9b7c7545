import type { AssignedPort, InstanceState, Placement, Resources, TaskHandle } from '../core/index.ts'
import type { Database } from './database.ts'

/** What a host persists about each of its instances. */
export interface InstanceRecord {
  id: string
  name: string
  templateId: string
  owner: string
  state: InstanceState
  driver: string
  handle: TaskHandle | null
  ports: AssignedPort[]
  resources: Resources
  error: string | null
  /** How the guest's task ended (its exit status), once it has. */
  exitCode: number | null
  /** Set when the instance's disk stays on the host it migrated from, which serves it. */
  remoteDisk: RemoteDisk | null
  /** Why it may run here, as its owner signed it (see core/placement.ts); null for instances from before placements. */
  placement: Placement | null
  /** The services it reaches at addresses its host sets up (see core/driver.ts `TaskLink`). */
  links: InstanceLink[]
  createdAt: number
  updatedAt: number
}

/** A service an instance reaches by name; `port`, the loopback port its host set up for it (a process's, fixed at creation). */
export interface InstanceLink {
  name: string
  target: string
  endpoint?: string | undefined
  port?: number | undefined
}

/** Where a migrated instance's disk is served from, and the ticket that reaches it. */
export interface RemoteDisk {
  host: string
  token: string
  /** The instance's staged disks, which that host serves with its disk (absent: none). */
  staged?: Array<{ serial: string, readOnly: boolean }>
}

interface InstanceRow {
  id: string
  name: string
  template_id: string
  owner: string
  state: string
  driver: string
  handle: string | null
  ports: string
  resources: string
  error: string | null
  exit_code: number | null
  remote_disk: string | null
  placement: string | null
  links: string
  created_at: number
  updated_at: number
}

function fromRow (r: InstanceRow): InstanceRecord {
  return {
    id: r.id,
    name: r.name,
    templateId: r.template_id,
    owner: r.owner,
    state: r.state as InstanceState,
    driver: r.driver,
    handle: r.handle === null ? null : JSON.parse(r.handle) as TaskHandle,
    ports: JSON.parse(r.ports) as AssignedPort[],
    resources: JSON.parse(r.resources) as Resources,
    error: r.error,
    exitCode: r.exit_code,
    remoteDisk: r.remote_disk === null ? null : JSON.parse(r.remote_disk) as RemoteDisk,
    placement: r.placement === null ? null : JSON.parse(r.placement) as Placement,
    links: JSON.parse(r.links) as InstanceLink[],
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  }
}

export type InstanceChange = Partial<Pick<InstanceRecord, 'state' | 'handle' | 'ports' | 'error' | 'exitCode'>>

/** The host's own instances. Every change is one statement, so a crash leaves old or new, never half. */
export class InstanceTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  insert (r: InstanceRecord): void {
    this.#db.prepare(`INSERT INTO instances (id, name, template_id, owner, state, driver, handle, ports, resources, error, exit_code, remote_disk, placement, links, created_at, updated_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`).run(
      r.id, r.name, r.templateId, r.owner, r.state, r.driver, r.handle === null ? null : JSON.stringify(r.handle),
      JSON.stringify(r.ports), JSON.stringify(r.resources), r.error, r.exitCode, r.remoteDisk === null ? null : JSON.stringify(r.remoteDisk),
      r.placement === null ? null : JSON.stringify(r.placement), JSON.stringify(r.links), r.createdAt, r.updatedAt)
  }

  update (id: string, change: InstanceChange, now = Date.now()): InstanceRecord | undefined {
    const current = this.get(id)
    if (current === undefined) return undefined
    const next: InstanceRecord = { ...current, ...change, updatedAt: now }
    this.#db.prepare('UPDATE instances SET state = ?, handle = ?, ports = ?, error = ?, exit_code = ?, updated_at = ? WHERE id = ?').run(
      next.state, next.handle === null ? null : JSON.stringify(next.handle), JSON.stringify(next.ports), next.error, next.exitCode, next.updatedAt, id)
    return next
  }

  get (id: string): InstanceRecord | undefined {
    const row = this.#db.prepare('SELECT * FROM instances WHERE id = ?').get(id) as InstanceRow | undefined
    return row === undefined ? undefined : fromRow(row)
  }

  list (): InstanceRecord[] {
    return (this.#db.prepare('SELECT * FROM instances ORDER BY created_at').all() as unknown as InstanceRow[]).map(fromRow)
  }

  countUsingTemplate (templateId: string): number {
    return (this.#db.prepare('SELECT count(*) AS n FROM instances WHERE template_id = ?').get(templateId) as { n: number }).n
  }

  remove (id: string): void {
    this.#db.prepare('DELETE FROM instances WHERE id = ?').run(id)
  }
}

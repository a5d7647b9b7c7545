import type { AssignedPort, InstanceState, Placement, Resources, TaskHandle } from '../core/index.ts'
import type { Database } from './database.ts'
import { Rows } from './rows.ts'

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
  /** Environment variables its deploy gave it, over its template's. */
  env: Record<string, string>
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

const rows = new Rows<InstanceRecord>('instances', {
  id: 'plain',
  name: 'plain',
  templateId: 'plain',
  owner: 'plain',
  state: 'plain',
  driver: 'plain',
  handle: 'json',
  ports: 'json',
  resources: 'json',
  error: 'plain',
  exitCode: 'plain',
  remoteDisk: 'json',
  placement: 'json',
  links: 'json',
  env: 'json',
  createdAt: 'plain',
  updatedAt: 'plain',
})
/** What changes in an instance's row after it is written. */
const CHANGING: Array<keyof InstanceRecord> = ['state', 'handle', 'ports', 'error', 'exitCode', 'updatedAt']

export type InstanceChange = Partial<Pick<InstanceRecord, 'state' | 'handle' | 'ports' | 'error' | 'exitCode'>>

/** The host's own instances. Every change is one statement, so a crash leaves old or new, never half. */
export class InstanceTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  insert (r: InstanceRecord): void {
    this.#db.prepare(rows.insert()).run(...rows.values(r))
  }

  update (id: string, change: InstanceChange, now = Date.now()): InstanceRecord | undefined {
    const current = this.get(id)
    if (current === undefined) return undefined
    const next: InstanceRecord = { ...current, ...change, updatedAt: now }
    this.#db.prepare(rows.update(CHANGING, 'id')).run(...rows.values(next, CHANGING), id)
    return next
  }

  get (id: string): InstanceRecord | undefined {
    return rows.maybe(this.#db.prepare('SELECT * FROM instances WHERE id = ?').get(id))
  }

  list (): InstanceRecord[] {
    return rows.all(this.#db.prepare('SELECT * FROM instances ORDER BY created_at').all())
  }

  countUsingTemplate (templateId: string): number {
    return (this.#db.prepare('SELECT count(*) AS n FROM instances WHERE template_id = ?').get(templateId) as { n: number }).n
  }

  remove (id: string): void {
    this.#db.prepare('DELETE FROM instances WHERE id = ?').run(id)
  }
}

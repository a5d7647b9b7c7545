import type { Checkpoint, COMPONENT_STATES, DeploymentGrant, Termination } from '../core/index.ts'
import type { Database } from './database.ts'
import { Rows } from './rows.ts'

/** One instance a deployment made for a component: which place (index, generation) it fills, and where. */
export interface PlacedInstance {
  index: number
  generation: number
  id: string
  host: string
  /** The signature of the grant it was placed under, when that is an earlier one than the deployment's (see `earlier`). */
  grant?: string | undefined
}

/** What a supervising host knows of one component of a deployment it runs. */
export interface ComponentRecord {
  state: typeof COMPONENT_STATES[number]
  instances: PlacedInstance[]
  /** The generation its instances are of: each time they are made anew, the next. */
  generation: number
  /** Times it was started again in place since it was last made anew. */
  restarts?: number | undefined
  /** When it was made anew on another host after an instance died (the recent ones). */
  replacedAt?: number[] | undefined
  /**
   * Instances it no longer has that could not be ended (their host was gone): each is ended when
   * its host is heard of again, so that a host that comes back runs no second copy.
   */
  orphans?: PlacedInstance[] | undefined
  /** Its instances are of an earlier description than the deployment's, and are made anew one by one (a rolling update). */
  outdated?: boolean | undefined
  /** Instances a rolling update replaced whose successors are not healthy yet: ended once they are. */
  retiring?: PlacedInstance[] | undefined
  /** The latest checkpoint of each of its instances, where it is kept (components with `checkpoint`). */
  checkpoints?: Checkpoint[] | undefined
  /** How it ended, once it has (or failed). */
  termination?: Termination | undefined
  /** The files a task component stored, under its `outputs` (its latest run's). */
  outputs?: string[] | undefined
  /** The last thing that happened to it, for its owner to read. */
  event: string | null
  /** What happened to it lately, oldest first (at most COMPONENT_EVENTS_KEPT). */
  events?: ComponentEvent[] | undefined
  updatedAt: number
}

/** A component that has not been brought up yet. */
export function waitingComponent (updatedAt: number): ComponentRecord {
  return { state: 'waiting', instances: [], generation: 0, event: null, updatedAt }
}

/** A description a deployment ran before it was updated, as its owner signed it. */
export interface EarlierDescription {
  text: string
  grant: DeploymentGrant
}

/** One thing that happened to a component, and when. */
export interface ComponentEvent {
  at: number
  event: string
}

export type DeploymentState = 'applying' | 'running' | 'failed' | 'terminating' | 'terminated'

/** A deployment this host supervises: its owner's description as signed, and where each of its components is. */
export interface DeploymentRecord {
  owner: string
  name: string
  /** The description's text, as its owner signed its digest in `grant`. */
  text: string
  grant: DeploymentGrant
  /** Earlier descriptions and grants that instances (or their checkpoints) still run under, during and after an update. */
  earlier: EarlierDescription[]
  state: DeploymentState
  /** By component path. */
  components: Record<string, ComponentRecord>
  error: string | null
  /** The supervisor that acts for it now (one of its grant's), and how many times another took over. */
  acting: string
  term: number
  createdAt: number
  updatedAt: number
}

const rows = new Rows<DeploymentRecord>('deployments', {
  owner: 'plain',
  name: 'plain',
  text: 'plain',
  grant: 'json',
  earlier: 'json',
  state: 'plain',
  components: 'json',
  error: 'plain',
  acting: 'plain',
  term: 'plain',
  createdAt: 'plain',
  updatedAt: 'plain',
})
const CHANGING: Array<keyof DeploymentRecord> = ['text', 'grant', 'earlier', 'state', 'components', 'error', 'acting', 'term', 'updatedAt']

/** The deployments this host supervises. Every step of one is written before the next is taken. */
export class DeploymentTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  insert (d: DeploymentRecord): void {
    this.#db.prepare(rows.insert()).run(...rows.values(d))
  }

  /** Writes `d` whole, over what this host had of it (a copy from the supervisor that acts for it). */
  put (d: DeploymentRecord): void {
    this.#db.prepare(rows.insert('INSERT OR REPLACE')).run(...rows.values(d))
  }

  update (owner: string, name: string, change: Partial<Pick<DeploymentRecord, 'text' | 'grant' | 'earlier' | 'state' | 'components' | 'error' | 'acting' | 'term'>>, now = Date.now()): DeploymentRecord | undefined {
    const current = this.get(owner, name)
    if (current === undefined) return undefined
    const next: DeploymentRecord = { ...current, ...change, updatedAt: now }
    this.#db.prepare(`${rows.update(CHANGING, 'owner')} AND name = ?`).run(...rows.values(next, CHANGING), owner, name)
    return next
  }

  get (owner: string, name: string): DeploymentRecord | undefined {
    return rows.maybe(this.#db.prepare('SELECT * FROM deployments WHERE owner = ? AND name = ?').get(owner, name))
  }

  list (owner?: string): DeploymentRecord[] {
    return rows.all(owner === undefined
      ? this.#db.prepare('SELECT * FROM deployments ORDER BY created_at').all()
      : this.#db.prepare('SELECT * FROM deployments WHERE owner = ? ORDER BY created_at').all(owner))
  }

  remove (owner: string, name: string): void {
    this.#db.prepare('DELETE FROM deployments WHERE owner = ? AND name = ?').run(owner, name)
  }
}

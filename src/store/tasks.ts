import type { DataFileView, GrantPlace, TaskState } from '../core/index.ts'
import type { Database } from './database.ts'
import { Rows } from './rows.ts'

/**
 * A task: an instance run to its end whose outputs go to its owner's repository. The record
 * outlives the instance (which is destroyed once the outputs are in, unless kept).
 */
export interface TaskRecord {
  /** The id of the instance that runs it. */
  id: string
  owner: string
  templateId: string
  /** The data:// names staged at /in. */
  inputs: string[]
  /** Where in the owner's namespace its outputs go. */
  outputsPrefix: string
  /** Keep the ended instance for inspection instead of destroying it. */
  keep: boolean
  state: TaskState
  exitCode: number | null
  error: string | null
  /** The files it left, as stored in the owner's repository. */
  outputs: DataFileView[]
  /** Files at /out that were not taken, and why. */
  refused: Array<{ path: string, reason: string }>
  /**
   * The place it was made under, when a deployment's supervisor placed it (which lets that
   * supervisor ask how it is, and end it, after its instance is gone), and whether its outputs
   * go when it is ended (the description keeps nothing of it).
   */
  placed: { place: GrantPlace, dropOutputs: boolean } | null
  createdAt: number
  /** When its VM had ended and its outputs began to be collected. */
  collectingAt: number | null
  endedAt: number | null
}

const rows = new Rows<TaskRecord>('tasks', {
  id: 'plain',
  owner: 'plain',
  templateId: 'plain',
  inputs: 'json',
  outputsPrefix: 'plain',
  keep: 'boolean',
  state: 'plain',
  exitCode: 'plain',
  error: 'plain',
  outputs: 'json',
  refused: 'json',
  placed: 'json',
  createdAt: 'plain',
  collectingAt: 'plain',
  endedAt: 'plain',
})
/** What changes in a task's row after it is written. */
const CHANGING: Array<keyof TaskRecord> = ['state', 'exitCode', 'error', 'outputs', 'refused', 'collectingAt', 'endedAt']

export type TaskChange = Partial<Pick<TaskRecord, 'state' | 'exitCode' | 'error' | 'outputs' | 'refused' | 'collectingAt' | 'endedAt'>>

/** The tasks this host ran or runs. */
export class TaskTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  insert (t: TaskRecord): void {
    this.#db.prepare(rows.insert()).run(...rows.values(t))
  }

  update (id: string, change: TaskChange): TaskRecord | undefined {
    const current = this.get(id)
    if (current === undefined) return undefined
    const next: TaskRecord = { ...current, ...change }
    this.#db.prepare(rows.update(CHANGING, 'id')).run(...rows.values(next, CHANGING), id)
    return next
  }

  /** Forgets a task this host no longer runs (it moved to another host with its instance). */
  remove (id: string): void {
    this.#db.prepare('DELETE FROM tasks WHERE id = ?').run(id)
  }

  get (id: string): TaskRecord | undefined {
    return rows.maybe(this.#db.prepare('SELECT * FROM tasks WHERE id = ?').get(id))
  }

  /** An owner's tasks, newest first. */
  listOf (owner: string, limit: number): TaskRecord[] {
    return rows.all(this.#db.prepare('SELECT * FROM tasks WHERE owner = ? ORDER BY created_at DESC LIMIT ?').all(owner, limit))
  }

  /** Every task's id, for announcing them. */
  ids (): string[] {
    return (this.#db.prepare('SELECT id FROM tasks').all() as Array<{ id: string }>).map(r => r.id)
  }

  /** Tasks whose end has not been fully handled yet (after a restart). */
  unfinished (): TaskRecord[] {
    return rows.all(this.#db.prepare("SELECT * FROM tasks WHERE state IN ('running', 'collecting') ORDER BY created_at").all())
  }
}

import type { DataFileView, TaskState } from '../core/index.ts'
import type { Database } from './database.ts'

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
  createdAt: number
  /** When its VM had ended and its outputs began to be collected. */
  collectingAt: number | null
  endedAt: number | null
}

interface TaskRow {
  id: string
  owner: string
  template_id: string
  inputs: string
  outputs_prefix: string
  keep: number
  state: string
  exit_code: number | null
  error: string | null
  outputs: string
  refused: string
  created_at: number
  collecting_at: number | null
  ended_at: number | null
}

const taskOf = (r: TaskRow): TaskRecord => ({
  id: r.id,
  owner: r.owner,
  templateId: r.template_id,
  inputs: JSON.parse(r.inputs) as string[],
  outputsPrefix: r.outputs_prefix,
  keep: r.keep === 1,
  state: r.state as TaskState,
  exitCode: r.exit_code,
  error: r.error,
  outputs: JSON.parse(r.outputs) as DataFileView[],
  refused: JSON.parse(r.refused) as TaskRecord['refused'],
  createdAt: r.created_at,
  collectingAt: r.collecting_at,
  endedAt: r.ended_at,
})

export type TaskChange = Partial<Pick<TaskRecord, 'state' | 'exitCode' | 'error' | 'outputs' | 'refused' | 'collectingAt' | 'endedAt'>>

/** The tasks this host ran or runs. */
export class TaskTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  insert (t: TaskRecord): void {
    this.#db.prepare(`INSERT INTO tasks (id, owner, template_id, inputs, outputs_prefix, keep, state, exit_code, error, outputs, refused, created_at, collecting_at, ended_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`).run(
      t.id, t.owner, t.templateId, JSON.stringify(t.inputs), t.outputsPrefix, t.keep ? 1 : 0, t.state, t.exitCode, t.error,
      JSON.stringify(t.outputs), JSON.stringify(t.refused), t.createdAt, t.collectingAt, t.endedAt)
  }

  update (id: string, change: TaskChange): TaskRecord | undefined {
    const current = this.get(id)
    if (current === undefined) return undefined
    const next: TaskRecord = { ...current, ...change }
    this.#db.prepare('UPDATE tasks SET state = ?, exit_code = ?, error = ?, outputs = ?, refused = ?, collecting_at = ?, ended_at = ? WHERE id = ?').run(
      next.state, next.exitCode, next.error, JSON.stringify(next.outputs), JSON.stringify(next.refused), next.collectingAt, next.endedAt, id)
    return next
  }

  /** Forgets a task this host no longer runs (it moved to another host with its instance). */
  remove (id: string): void {
    this.#db.prepare('DELETE FROM tasks WHERE id = ?').run(id)
  }

  get (id: string): TaskRecord | undefined {
    const row = this.#db.prepare('SELECT * FROM tasks WHERE id = ?').get(id) as TaskRow | undefined
    return row === undefined ? undefined : taskOf(row)
  }

  /** An owner's tasks, newest first. */
  listOf (owner: string, limit: number): TaskRecord[] {
    return (this.#db.prepare('SELECT * FROM tasks WHERE owner = ? ORDER BY created_at DESC LIMIT ?').all(owner, limit) as unknown as TaskRow[]).map(taskOf)
  }

  /** Every task's id, for announcing them. */
  ids (): string[] {
    return (this.#db.prepare('SELECT id FROM tasks').all() as Array<{ id: string }>).map(r => r.id)
  }

  /** Tasks whose end has not been fully handled yet (after a restart). */
  unfinished (): TaskRecord[] {
    return (this.#db.prepare("SELECT * FROM tasks WHERE state IN ('running', 'collecting') ORDER BY created_at").all() as unknown as TaskRow[]).map(taskOf)
  }
}

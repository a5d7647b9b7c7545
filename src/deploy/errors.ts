import { XenosError } from '../core/index.ts'

/** Where something was written in a description (1-based). */
export interface Position {
  file: string
  line: number
  col: number
}

/** What is wrong with a description, where it was written, and the path in the tree (`components.workers.env.MASTER`). */
export class DescriptionError extends XenosError {
  readonly at: Position
  readonly path: string

  constructor (problem: string, at: Position, path: string) {
    super('BAD_DESCRIPTION', `${at.file}:${at.line}:${at.col}: ${path === '' ? '' : `${path}: `}${problem}`)
    this.at = at
    this.path = path
  }
}

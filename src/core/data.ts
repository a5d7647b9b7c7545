import type { Hash } from 'node:crypto'
import { XenosError } from './errors.ts'
import { OWNER_ID_PATTERN } from './owner.ts'

/**
 * Names in the data repository: `data://OWNER/PATH`, OWNER an owner id (or `me` on the command
 * line), PATH a relative path of plain segments. Paths are checked, never normalised: a segment
 * that is empty, `.` or `..`, or that holds a control character (C0 or C1), a bidirectional
 * control or a backslash is refused, so no spelling of a path can reach outside its owner's
 * namespace, mean two files, or show as another.
 */
export const DATA_URI_PREFIX = 'data://'
export const MAX_DATA_PATH_BYTES = 1024
export const MAX_DATA_SEGMENT_BYTES = 255
export const MAX_DATA_DEPTH = 32

export interface DataRef {
  owner: string
  /** The path inside the owner's namespace; '' names the whole namespace (listing only). */
  path: string
}

/** Why `path` is not a valid data path, or undefined when it is. */
export function dataPathProblem (path: string, allowEmpty = false): string | undefined {
  if (path === '') return allowEmpty ? undefined : 'the path is empty'
  if (Buffer.byteLength(path) > MAX_DATA_PATH_BYTES) return `the path is longer than ${MAX_DATA_PATH_BYTES} bytes`
  const segments = path.split('/')
  if (segments.length > MAX_DATA_DEPTH) return `the path is deeper than ${MAX_DATA_DEPTH} directories`
  for (const s of segments) {
    if (s === '') return 'the path has an empty segment (a leading, trailing or doubled "/")'
    if (s === '.' || s === '..') return `the path has a "${s}" segment`
    if (Buffer.byteLength(s) > MAX_DATA_SEGMENT_BYTES) return `a segment is longer than ${MAX_DATA_SEGMENT_BYTES} bytes`
    if (/[\u0000-\u001f\u007f-\u009f\\]/.test(s)) return 'the path holds a control character or a backslash'
    if (/[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/.test(s)) return 'the path holds a bidirectional control character (it would show a different name than it is)'
  }
  return undefined
}

/** Throws INVALID_ARGUMENT unless `path` is a valid data path. */
export function checkDataPath (path: string, allowEmpty = false): string {
  const problem = dataPathProblem(path, allowEmpty)
  if (problem !== undefined) throw new XenosError('INVALID_ARGUMENT', `"${path.slice(0, 80)}" is not a data path: ${problem}`)
  return path
}

export function isDataUri (ref: string): boolean {
  return ref.startsWith(DATA_URI_PREFIX)
}

/** Parses `data://OWNER/PATH` (`data://OWNER/` or `data://OWNER` with `allowEmpty`); `me` becomes `self`. */
export function parseDataUri (uri: string, self?: string, allowEmpty = false): DataRef {
  const bad = (why: string): XenosError => new XenosError('INVALID_ARGUMENT', `"${uri.slice(0, 120)}" is not a data name: ${why} (data://OWNER/PATH, OWNER an owner id or "me")`)
  if (!isDataUri(uri)) throw bad('it does not start with data://')
  const rest = uri.slice(DATA_URI_PREFIX.length)
  const slash = rest.indexOf('/')
  let owner = slash < 0 ? rest : rest.slice(0, slash)
  const raw = slash < 0 ? '' : rest.slice(slash + 1)
  // A listing may name a directory with a trailing slash.
  const path = allowEmpty ? raw.replace(/\/$/, '') : raw
  if (owner === 'me') {
    if (self === undefined) throw bad('"me" needs a user key')
    owner = self
  }
  if (!OWNER_ID_PATTERN.test(owner)) throw bad(`"${owner.slice(0, 60)}" is not an owner id`)
  const problem = dataPathProblem(path, allowEmpty)
  if (problem !== undefined) throw bad(problem)
  return { owner, path }
}

export function formatDataUri (ref: DataRef): string {
  return `${DATA_URI_PREFIX}${ref.owner}/${ref.path}`
}

/** A file in the repository, as the API shows it. */
export interface DataFileView {
  uri: string
  owner: string
  path: string
  size: number
  sha256: string
  /** The host that holds it. */
  host: string
  updatedAt: number
}

/** Passes `source` on, feeding every byte to `hash` on the way. */
export async function * hashing (source: AsyncIterable<Uint8Array>, hash: Hash): AsyncGenerator<Uint8Array> {
  for await (const piece of source) {
    hash.update(piece)
    yield piece
  }
}

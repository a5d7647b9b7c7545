import { toXenosError, XenosError } from '../core/index.ts'

/** What a local file error means, for the person who named the file. */
const FILE_PROBLEMS: Record<string, string> = {
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EPERM: 'not permitted',
  EISDIR: 'a directory, where a file was expected',
  ENOTDIR: 'a part of the path is not a directory',
  ELOOP: 'too many symbolic links',
}

/**
 * The error a command ended with, as the CLI reports it: a file on this machine that cannot be
 * read or written is the caller's to fix (INVALID_ARGUMENT naming it), not a fault inside Xenos.
 */
export function cliFailure (err: unknown): XenosError {
  const e = err as NodeJS.ErrnoException
  const problem = e.code === undefined ? undefined : FILE_PROBLEMS[e.code]
  if (problem !== undefined && typeof e.path === 'string') return new XenosError('INVALID_ARGUMENT', `${e.path}: ${problem}`)
  return toXenosError(err)
}

/** Prints the failure as `error CODE: message`, or with --json as `{"error": {code, message}}`, on stderr. */
export function reportFailure (err: unknown, argv: readonly string[], write: (text: string) => void): void {
  const e = cliFailure(err)
  write(argv.includes('--json') ? `${JSON.stringify({ error: e.toJSON() })}\n` : `error ${e.code}: ${e.message}\n`)
}

import { execFile } from 'node:child_process'
import { copyFile, link, mkdir, rename, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import { dataPathProblem, XenosError } from '../core/index.ts'

const run = promisify(execFile)

/** A file to stage: its path in the guest's /in (`/` between directories) and where its bytes are on this host. */
export interface StagedFile {
  name: string
  path: string
  size: number
}

/**
 * Builds the ext4 image a VM mounts read-only at /in: every file under its name (in directories
 * where the name has them). The files are hard links to the blobs in a staging directory (copies
 * where the blob store is on another file system), from which `mke2fs -d` writes the image; the
 * image appears whole or not at all.
 */
export async function buildInputImage (files: StagedFile[], image: string): Promise<void> {
  const names = new Set<string>()
  const dirs = new Set<string>()
  for (const f of files) {
    const problem = dataPathProblem(f.name)
    if (problem !== undefined) throw new XenosError('INVALID_ARGUMENT', `"${f.name.slice(0, 80)}" cannot name a staged file: ${problem}`)
    if (names.has(f.name) || dirs.has(f.name)) throw new XenosError('INVALID_ARGUMENT', `two inputs are named ${f.name} at /in: a file appears under its last path segment, a directory's files under the directory's`)
    names.add(f.name)
    for (let d = dirname(f.name); d !== '.'; d = dirname(d)) dirs.add(d)
  }
  const clash = [...dirs].find(d => names.has(d))
  if (clash !== undefined) throw new XenosError('INVALID_ARGUMENT', `${clash} at /in would be both a file and a directory: stage one of them under another name`)
  const staging = `${image}.d`
  await rm(staging, { recursive: true, force: true })
  await mkdir(staging, { recursive: true })
  try {
    for (const d of dirs) await mkdir(join(staging, d), { recursive: true })
    for (const f of files) await link(f.path, join(staging, f.name)).catch(async () => { await copyFile(f.path, join(staging, f.name)) })
    // Room for the file system's own blocks besides the files.
    const mib = Math.ceil(files.reduce((n, f) => n + f.size, 0) * 1.1 / 2 ** 20) + 8
    await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', staging, '-L', 'xenos-in', '-m', '0', '-E', 'root_owner=0:0', `${image}.tmp`, `${mib}M`])
    // /in shows the inputs only; a read-only file system has no use for lost+found.
    await run('debugfs', ['-w', '-R', 'rmdir lost+found', `${image}.tmp`])
    await rename(`${image}.tmp`, image)
  } catch (err) {
    await rm(`${image}.tmp`, { force: true })
    if (err instanceof XenosError) throw err
    throw new XenosError('DRIVER_FAILED', `could not build the inputs' disk: ${((err as { stderr?: string }).stderr ?? '').trim() || (err as Error).message}`)
  } finally {
    await rm(staging, { recursive: true, force: true })
  }
}

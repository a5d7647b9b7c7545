import { execFile } from 'node:child_process'
import { copyFile, link, mkdir, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { XenosError } from '../core/index.ts'

const run = promisify(execFile)

/** A file to stage: its name in the guest's /in and where its bytes are on this host. */
export interface StagedFile {
  name: string
  path: string
  size: number
}

/**
 * Builds the ext4 image a VM mounts read-only at /in: every file at the image's root under its
 * name. The files are hard links to the blobs in a staging directory (copies where the blob
 * store is on another file system), from which `mke2fs -d` writes the image; the image appears
 * whole or not at all.
 */
export async function buildInputImage (files: StagedFile[], image: string): Promise<void> {
  const names = new Set<string>()
  for (const f of files) {
    if (f.name === '' || f.name === '.' || f.name === '..' || f.name.includes('/')) throw new XenosError('INVALID_ARGUMENT', `"${f.name}" cannot name a staged file`)
    if (names.has(f.name)) throw new XenosError('INVALID_ARGUMENT', `two inputs are named ${f.name}: a VM sees its inputs by their last path segment, which must differ`)
    names.add(f.name)
  }
  const staging = `${image}.d`
  await rm(staging, { recursive: true, force: true })
  await mkdir(staging, { recursive: true })
  try {
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

import { execFile } from 'node:child_process'
import { open, rename, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { dataPathProblem, XenosError } from '../core/index.ts'

const run = promisify(execFile)

/** A file found on an output disk, copied out to `file`. */
export interface CollectedFile {
  /** Its path on the disk, a valid data path. */
  path: string
  file: string
  size: number
}

export interface Collected {
  files: CollectedFile[]
  /** What was on the disk and is not taken, and why: links, devices, names that are not data paths. */
  refused: Array<{ path: string, reason: string }>
}

const MAX_OUTPUT_ENTRIES = 100_000
const S_IFMT = 0o170000
const S_IFDIR = 0o040000
const S_IFREG = 0o100000

/** Creates a raw image of `bytes` zeros, sparse: it takes room only as it fills. */
export async function createEmptyImage (path: string, bytes: number): Promise<void> {
  const fh = await open(path, 'w')
  try {
    await fh.truncate(bytes)
  } finally {
    await fh.close()
  }
}

/** Creates the empty ext4 disk a VM writes its outputs to (sparse: it takes room only as it fills). */
export async function createOutputImage (image: string, bytes: number): Promise<void> {
  await createEmptyImage(`${image}.tmp`, bytes)
  try {
    await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'xenos-out', '-m', '0', '-E', 'root_owner=0:0', `${image}.tmp`])
  } catch (err) {
    throw new XenosError('DRIVER_FAILED', `could not create the outputs' disk: ${((err as { stderr?: string }).stderr ?? '').trim() || (err as Error).message}`)
  }
  await rename(`${image}.tmp`, image)
}

interface Entry { inode: number, mode: number, name: string }

/**
 * Copies the regular files of an output disk into `workDir`, never trusting what the guest
 * wrote there: the disk is read with debugfs, not mounted; entries are walked by inode number
 * and copied out under names chosen here, so no name on the disk is ever used as a path on the
 * host; links, devices and names that are not data paths are refused, not followed.
 */
export async function collectOutputs (image: string, workDir: string): Promise<Collected> {
  const out: Collected = { files: [], refused: [] }
  const found: Array<{ path: string, inode: number }> = []
  const pending: Array<{ inode: number, path: string }> = [{ inode: 2, path: '' }]
  let seen = 0
  while (pending.length > 0) {
    const dir = pending.pop()
    if (dir === undefined) break
    const { entries, unreadable } = await list(image, dir.inode)
    if (unreadable > 0) out.refused.push({ path: dir.path === '' ? '/' : dir.path, reason: `${unreadable} entr${unreadable === 1 ? 'y has a name' : 'ies have names'} that cannot be read safely (holding a "/" or a line break)` })
    for (const e of entries) {
      if (e.name === '.' || e.name === '..' || (dir.path === '' && e.name === 'lost+found')) continue
      if (++seen > MAX_OUTPUT_ENTRIES) throw new XenosError('INVALID_ARGUMENT', `the outputs hold more than ${MAX_OUTPUT_ENTRIES} entries`)
      const path = dir.path === '' ? e.name : `${dir.path}/${e.name}`
      const problem = dataPathProblem(path)
      const type = e.mode & S_IFMT
      if (problem !== undefined) out.refused.push({ path, reason: problem })
      else if (type === S_IFDIR) pending.push({ inode: e.inode, path })
      else if (type === S_IFREG) found.push({ path, inode: e.inode })
      else out.refused.push({ path, reason: type === 0o120000 ? 'a symbolic link' : 'not a regular file' })
    }
  }
  if (found.length === 0) return out
  const commands = join(workDir, 'dump.cmd')
  await writeFile(commands, found.map((f, i) => `dump <${f.inode}> ${join(workDir, String(i))}\n`).join(''))
  await run('debugfs', ['-f', commands, image], { maxBuffer: 64 * 2 ** 20 })
  for (const [i, f] of found.entries()) {
    const file = join(workDir, String(i))
    const size = await stat(file).then(s => s.size, () => undefined)
    if (size === undefined) out.refused.push({ path: f.path, reason: 'it could not be read from the disk' })
    else out.files.push({ path: f.path, file, size })
  }
  return out
}

/** The entries of directory `inode`: `ls -p` prints `/inode/mode/uid/gid/name/size/`. */
async function list (image: string, inode: number): Promise<{ entries: Entry[], unreadable: number }> {
  const { stdout } = await run('debugfs', ['-R', `ls -p <${inode}>`, image], { maxBuffer: 256 * 2 ** 20 })
  const entries: Entry[] = []
  let unreadable = 0
  for (const line of stdout.split('\n')) {
    if (!line.startsWith('/')) continue
    const fields = line.split('/')
    // A name holding "/" or a line break cannot be told apart from the fields around it: it is left out.
    if (fields.length !== 8) unreadable++
    else entries.push({ inode: Number(fields[1]), mode: parseInt(fields[2] ?? '0', 8), name: fields[5] ?? '' })
  }
  return { entries, unreadable }
}

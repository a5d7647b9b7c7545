import { execFile } from 'node:child_process'
import { lstat, readdir, readFile, readlink, writeFile } from 'node:fs/promises'
import type { Stats } from 'node:fs'
import { join, relative } from 'node:path'
import { promisify } from 'node:util'
import { XenosError } from '../../core/index.ts'
import { FIXED_TIME } from './ext4.ts'

const run = promisify(execFile)

/** Every path under `root` (relative, `/`-led), parents before what they hold, with its lstat. */
async function walk (root: string): Promise<Map<string, Stats>> {
  const entries = new Map<string, Stats>()
  for (const e of await readdir(root, { recursive: true, withFileTypes: true })) {
    const local = join(e.parentPath, e.name)
    entries.set(`/${relative(root, local)}`, await lstat(local))
  }
  return new Map([...entries].sort(([a], [b]) => a.localeCompare(b)))
}

/** Extended attributes of one path: name → value, in hex. */
type Xattrs = Map<string, string>

/** The extended attributes (file capabilities, mostly) of every path under `root` that has any, by `/`-led path. */
async function xattrsUnder (root: string): Promise<Map<string, Xattrs>> {
  let stdout: string
  try {
    stdout = (await run('getfattr', ['-R', '-d', '-m', '-', '-e', 'hex', '--absolute-names', '-P', root], { maxBuffer: 1024 * 1024 * 1024 })).stdout
  } catch (err) {
    // It says so of paths it could not read, and goes on.
    const out = (err as { stdout?: string, code?: unknown })
    if ((err as { code?: unknown }).code === 'ENOENT') throw new XenosError('DRIVER_UNAVAILABLE', 'getfattr is missing: install Debian\'s attr package to build layers')
    stdout = out.stdout ?? ''
  }
  const found = new Map<string, Xattrs>()
  let current: Xattrs | undefined
  for (const line of stdout.split('\n')) {
    const file = /^# file: (.*)$/.exec(line)?.[1]
    if (file !== undefined) {
      // getfattr writes unusual bytes of a name as \ooo.
      const path = file.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))).slice(root.length) || '/'
      current = new Map()
      found.set(path, current)
      continue
    }
    const attr = /^([^=\s]+)(?:=0x([0-9a-f]*))?$/.exec(line)
    if (attr !== null && current !== undefined) current.set(attr[1] as string, attr[2] ?? '')
  }
  return found
}

function sameXattrs (a: Xattrs | undefined, b: Xattrs | undefined): boolean {
  const x = a ?? new Map<string, string>()
  const y = b ?? new Map<string, string>()
  return x.size === y.size && [...x].every(([k, v]) => y.get(k) === v)
}

/** `debugfs` quotes names in double quotes, which have no escape: names with quotes, backslashes or newlines cannot be written. */
function quoted (path: string): string {
  if (/["\n\\]/.test(path)) throw new XenosError('BAD_MANIFEST', `file name ${JSON.stringify(path)}: names in a root file system may not contain quotes, backslashes or newlines`)
  return `"${path}"`
}

/** Whether `a` (in the base) and `b` (in the new tree) are the same entry: type, mode, owner and content. */
async function same (a: Stats, aPath: string, b: Stats, bPath: string): Promise<boolean> {
  if (a.mode !== b.mode || a.uid !== b.uid || a.gid !== b.gid) return false
  if (a.isSymbolicLink()) return await readlink(aPath) === await readlink(bPath)
  if (a.isFile()) return a.size === b.size && (await readFile(aPath)).equals(await readFile(bPath))
  if (a.isCharacterDevice() || a.isBlockDevice()) return a.rdev === b.rdev
  return true
}

/**
 * The `debugfs` commands that turn an ext4 image of tree `base` into one of tree `tree`: what is
 * new or changed is written (with its mode, owner and extended attributes, its times zeroed),
 * what is gone removed. Only that is written, so a qcow2 overlay on the base image, rebased,
 * holds only the change. Attribute values the commands read are written into `work`.
 */
export async function treeChanges (base: string, tree: string, work: string): Promise<{ commands: string[], changed: number, removed: number }> {
  const [before, after, attrsBefore, attrsAfter] = await Promise.all([walk(base), walk(tree), xattrsUnder(base), xattrsUnder(tree)])
  const commands: string[] = []
  let changed = 0
  let values = 0
  const removed: string[] = []
  for (const [path, b] of after) {
    const a = before.get(path)
    const attrs = attrsAfter.get(path)
    if (a !== undefined && sameXattrs(attrsBefore.get(path), attrs) && await same(a, join(base, path), b, join(tree, path))) continue
    changed++
    const q = quoted(path)
    if (a !== undefined && !(a.isDirectory() && b.isDirectory())) commands.push(a.isDirectory() ? `rmdir ${q}` : `rm ${q}`)
    if (b.isDirectory()) {
      if (a === undefined || !a.isDirectory()) commands.push(`mkdir ${q}`)
    } else if (b.isSymbolicLink()) {
      commands.push(`symlink ${q} ${quoted(await readlink(join(tree, path)))}`)
    } else if (b.isFile()) {
      commands.push(`write ${quoted(join(tree, path))} ${q}`)
    } else if (b.isCharacterDevice() || b.isBlockDevice() || b.isFIFO()) {
      const kind = b.isFIFO() ? 'p' : b.isCharacterDevice() ? 'c' : 'b'
      commands.push(`mknod ${q} ${kind}${kind === 'p' ? '' : ` ${Math.floor(b.rdev / 256) & 0xfff} ${(b.rdev & 0xff) | ((b.rdev >> 12) & 0xfff00)}`}`)
    } else {
      throw new XenosError('BAD_MANIFEST', `${path} in the root file system is a socket: it cannot be written to an image`)
    }
    commands.push(`sif ${q} mode 0${b.mode.toString(8)}`, `sif ${q} uid ${b.uid}`, `sif ${q} gid ${b.gid}`)
    // A directory kept in place keeps its attributes: those gone go.
    if (a?.isDirectory() === true && b.isDirectory()) for (const name of attrsBefore.get(path)?.keys() ?? []) if (attrs?.has(name) !== true) commands.push(`ea_rm ${q} ${quoted(name)}`)
    for (const [name, hex] of attrs ?? []) {
      const value = join(work, `xattr-${values++}`)
      await writeFile(value, Buffer.from(hex, 'hex'))
      commands.push(`ea_set -f ${quoted(value)} ${q} ${quoted(name)}`)
    }
    commands.push(...['ctime', 'crtime', 'atime', 'mtime', 'generation'].map(f => `sif ${q} ${f} 0`))
  }
  for (const path of before.keys()) if (!after.has(path)) removed.push(path)
  // What is gone, deepest first, so that a directory is empty when it is removed.
  for (const path of removed.reverse()) commands.push(before.get(path)?.isDirectory() === true ? `rmdir ${quoted(path)}` : `rm ${quoted(path)}`)
  return { commands, changed, removed: removed.length }
}

/** Runs `commands` on the ext4 image `disk` (a copy of the base's), with debugfs's own times faked. */
export async function applyChanges (disk: string, commands: readonly string[], work: string): Promise<void> {
  const file = join(work, 'layer.cmds')
  await writeFile(file, commands.join('\n') + '\n')
  const { stderr } = await run('debugfs', ['-w', '-f', file, disk], { maxBuffer: 1024 * 1024 * 1024, env: FIXED_TIME })
  // debugfs goes on after a failed command, saying so on stderr (its banner aside).
  const failed = stderr.split('\n').filter(l => l.trim() !== '' && !/^debugfs \d/.test(l))
  if (failed.length > 0) throw new XenosError('DRIVER_FAILED', `writing the layer into the disk failed: ${failed.slice(0, 3).join('; ')}`)
}

/** Grows the ext4 image `disk` to `mib` MiB (never shrinks it). */
export async function growDisk (disk: string, mib: number): Promise<void> {
  const bytes = mib * 1024 * 1024
  if ((await lstat(disk)).size >= bytes) return
  await run('truncate', ['-s', String(bytes), disk])
  // Their times faked too: the same inputs give the same bytes.
  await run('e2fsck', ['-f', '-y', disk], { env: FIXED_TIME }).catch(() => {})
  await run('resize2fs', [disk, `${mib}M`], { env: FIXED_TIME })
}

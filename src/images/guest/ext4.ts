import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { cp, lutimes, mkdir, readdir, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { XenosError } from '../../core/index.ts'

const run = promisify(execFile)

/** e2fsprogs' clock for what they stamp (superblock times; e2fsck's last check has a clock of its own): fixed, so that equal inputs give equal bytes. */
export const FIXED_TIME = { ...process.env, E2FSPROGS_FAKE_TIME: '1', E2FSCK_TIME: '1' }

/** MiB the files under `dir` take. */
export async function usedMiB (dir: string): Promise<number> {
  const { stdout } = await run('du', ['-s', '--block-size=1M', dir])
  return Number(stdout.split('\t')[0])
}

/** Copies directory `from` (if it exists) over `tree`, then zeroes every time in `tree`; its paths, `/`-led. */
export async function stage (from: string, tree: string): Promise<string[]> {
  await mkdir(tree, { recursive: true })
  if (existsSync(from)) await cp(from, tree, { recursive: true, dereference: false, verbatimSymlinks: true, force: true })
  const all = (await readdir(tree, { recursive: true, withFileTypes: true })).map(e => join(e.parentPath, e.name))
  // lutimes: a root file system's symbolic links point at absolute paths, which must not be followed out of it.
  for (const p of [...all].reverse()) await lutimes(p, 0, 0).catch(() => {})
  await lutimes(tree, 0, 0)
  return all.map(p => p.slice(tree.length))
}

/**
 * An ext4 image `out` of `mib` MiB holding `tree` (its `paths`, from `stage`), with ids derived
 * from `seed` and every time zeroed, so that equal inputs give equal bytes.
 */
export async function ext4Image (tree: string, paths: readonly string[], out: string, mib: number, seed: string): Promise<void> {
  const uuid = createHash('sha256').update(seed).digest('hex').slice(0, 32).replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5')
  try {
    await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', tree, '-U', uuid, '-E', `hash_seed=${uuid},root_owner=0:0`, '-L', 'xenos', out, `${mib}M`], { env: FIXED_TIME })
  } catch (err) {
    throw new XenosError('DRIVER_FAILED', `mke2fs could not build the disk: ${((err as { stderr?: string }).stderr ?? '').trim() || (err as Error).message}`)
  }
  // mke2fs stamps inode change times and random generation numbers: zero them.
  const all = ['/', '/lost+found', ...paths]
  const bad = all.find(p => /["\n\\]/.test(p))
  if (bad !== undefined) throw new XenosError('BAD_MANIFEST', `file name ${JSON.stringify(bad)}: names in a template's files may not contain quotes, backslashes or newlines`)
  const file = `${out}.cmds`
  await writeFile(file, all.flatMap(p => ['ctime', 'crtime', 'atime', 'mtime', 'generation'].map(f => `sif "${p}" ${f} 0`)).join('\n') + '\n')
  // debugfs echoes every command: a root file system's are many.
  await run('debugfs', ['-w', '-f', file, out], { maxBuffer: 1024 * 1024 * 1024, env: FIXED_TIME })
}

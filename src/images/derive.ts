import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { copyFile, lstat, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { promisify } from 'node:util'
import { templateManifestSchema, XenosError, type TemplateManifest } from '../core/index.ts'

const run = promisify(execFile)

export interface DeriveInput {
  /** The base template's raw disk. */
  base: string
  /** Its blob id: the derived disk names it as its backing file. */
  baseId: string
  /** Files to add to (or replace in) the base's filesystem, laid out as in the guest's /srv. */
  add?: string
  /** Or: a qcow2 disk whose chain ends at `base` (an instance's disk) to take the changes from. */
  from?: string
}

/**
 * Makes a tailored disk: a qcow2 overlay holding only the clusters that differ from the base's
 * raw disk, naming the base by blob id (resolved next to it in the blob store). Hosts that hold
 * the base fetch only this overlay. Returns the path of the new disk, in a temporary directory
 * the caller removes with `cleanup`.
 */
export async function deriveDisk (input: DeriveInput): Promise<{ path: string, cleanup: () => Promise<void> }> {
  const work = await mkdtemp(join(tmpdir(), 'xenos-derive-'))
  const cleanup = async (): Promise<void> => { await rm(work, { recursive: true, force: true }) }
  try {
    const top = join(work, 'disk.qcow2')
    if (input.from !== undefined) {
      await copyFile(input.from, top)
    } else if (input.add !== undefined) {
      const changed = join(work, 'changed.raw')
      await run('cp', ['--sparse=always', input.base, changed])
      await addFiles(input.add, changed, work)
      await overlayOn(input.base, input.baseId, changed, top)
      return { path: top, cleanup }
    } else {
      throw new XenosError('INVALID_ARGUMENT', 'a tailored template needs files to add or a disk to take changes from')
    }
    await rebaseOnto(input.base, input.baseId, top)
    return { path: top, cleanup }
  } catch (err) {
    await cleanup()
    throw err
  }
}

/**
 * Writes to `top` a qcow2 overlay on the raw disk `base` (blob `baseId`) holding only the
 * clusters where the raw disk `changed`, a changed copy of it, differs.
 */
export async function overlayOn (base: string, baseId: string, changed: string, top: string): Promise<void> {
  await qemuImg(['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', changed, top])
  await rebaseOnto(base, baseId, top)
}

/**
 * A safe rebase compares the chain with the base and keeps only what differs; the second names
 * the base by blob id, which every host resolves in its own blob store.
 */
async function rebaseOnto (base: string, baseId: string, top: string): Promise<void> {
  await qemuImg(['rebase', '-q', '-f', 'qcow2', '-F', 'raw', '-b', base, top])
  await qemuImg(['rebase', '-q', '-u', '-f', 'qcow2', '-F', 'raw', '-b', baseId.slice('sha256:'.length), top])
}

async function qemuImg (args: string[]): Promise<void> {
  try {
    await run('qemu-img', args)
  } catch (err) {
    throw new XenosError('DRIVER_FAILED', `qemu-img ${args[0] ?? ''} failed: ${((err as { stderr?: string }).stderr ?? '').trim() || (err as Error).message}`)
  }
}

/** Writes the directories and regular files under `dir` into the ext4 image `disk`, replacing what is there. */
async function addFiles (dir: string, disk: string, work: string): Promise<void> {
  if (!existsSync(dir)) throw new XenosError('INVALID_ARGUMENT', `${dir} does not exist`)
  const commands: string[] = []
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const local = join(entry.parentPath, entry.name)
    const inGuest = `/${relative(dir, local)}`
    if (/["\n\\]/.test(local)) throw new XenosError('INVALID_ARGUMENT', `file name ${JSON.stringify(local)}: names may not contain quotes, backslashes or newlines`)
    const stat = await lstat(local)
    if (stat.isDirectory()) commands.push(`mkdir "${inGuest}"`)
    else if (stat.isFile()) commands.push(`rm "${inGuest}"`, `write "${local}" "${inGuest}"`)
    else throw new XenosError('INVALID_ARGUMENT', `${local} is neither a file nor a directory: only those can be added`)
    commands.push(...['ctime', 'crtime', 'atime', 'mtime'].map(f => `sif "${inGuest}" ${f} 0`))
  }
  // readdir lists a directory before what it holds, so every mkdir comes before its contents.
  const file = join(work, 'debugfs.cmds')
  await writeFile(file, commands.join('\n') + '\n')
  await run('debugfs', ['-w', '-f', file, disk])
}

/**
 * The manifest of a tailored template: `base`'s command, kernel and resources, named anew, with
 * `disk` (an overlay on `base`'s raw disk) as its disk.
 */
export function tailoredManifest (base: TemplateManifest, disk: string, name: string, version?: string): TemplateManifest {
  const image = base.image
  if (image === undefined) throw new XenosError('INVALID_ARGUMENT', `${base.name} is not a VM template: only VM templates have a disk to tailor`)
  return templateManifestSchema.parse({
    ...base,
    name,
    version: version ?? `${base.version}-${disk.slice(7, 15)}`,
    image: { ...image, disk, diskFormat: 'qcow2', base: image.base ?? image.disk },
  })
}

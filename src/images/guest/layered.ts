import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { overlayOn } from '../derive.ts'
import type { BlobStore } from '../blobs.ts'
import { ext4Image, stage, usedMiB } from './ext4.ts'
import { applyChanges, growDisk, treeChanges } from './layers.ts'
import { buildRootFs, mirrorsFor, type Distribution } from './rootfs.ts'

const run = promisify(execFile)

/** A distribution's base layer: its root file system, kept for later layers to be worked out against, and its ext4 image. */
export interface BaseLayer {
  /** The image's blob id: the disk every service on this distribution is an overlay on. */
  disk: string
  path: string
  tree: string
}

/** Bumped whenever the base layer changes for the same inputs. */
const BASE_FORMAT = 1

/** Room a layer's file system keeps beyond what its files take: a quarter more, and 32 MiB. */
export function roomFor (usedMiB: number): number {
  return Math.ceil(usedMiB * 1.25) + 32
}

/**
 * The base layer of `d` (no packages but the variant's), built once for its suite, variant and
 * the machine's mirrors, and kept in `cacheDir`; its image is put into `blobs`.
 */
export async function baseLayer (d: Distribution, cacheDir: string, blobs: BlobStore, log: string): Promise<BaseLayer> {
  const key = createHash('sha256').update(JSON.stringify({ format: BASE_FORMAT, d, mirrors: await mirrorsFor(d.debian) })).digest('hex').slice(0, 32)
  const dir = join(cacheDir, 'bases', key)
  const done = join(dir, 'base.json')
  if (existsSync(done)) {
    const disk = (JSON.parse(await readFile(done, 'utf8')) as { disk: string }).disk
    if (await blobs.has(disk)) return { disk, path: blobs.path(disk), tree: join(dir, 'root') }
  }
  await rm(dir, { recursive: true, force: true })
  await mkdir(dir, { recursive: true })
  const partial = join(dir, 'root.partial')
  await buildRootFs(d, [], partial, log)
  const paths = await stage(join(dir, 'none'), partial)
  const image = join(dir, 'disk.raw')
  await ext4Image(partial, paths, image, roomFor(await usedMiB(partial)), `debian/${d.debian}/${d.variant}`)
  const disk = await blobs.putFile(image)
  await rm(image, { force: true })
  await rename(partial, join(dir, 'root'))
  await writeFile(done, JSON.stringify({ disk }))
  return { disk, path: blobs.path(disk), tree: join(dir, 'root') }
}

/**
 * The service's disk as a layer on `base`: the base image copied, grown to `mib` MiB (at
 * least what `tree`, the service's whole root file system, needs), changed to hold `tree` exactly, and kept as a qcow2 overlay of
 * only the clusters that changed. Answers the overlay's path (in `work`) and its size in bytes.
 */
export async function serviceLayer (base: BaseLayer, tree: string, mib: number | undefined, work: string): Promise<{ path: string, diskBytes: number, changed: number, removed: number }> {
  const changed = join(work, 'layer.raw')
  await run('cp', ['--sparse=always', base.path, changed])
  await growDisk(changed, Math.max(mib ?? 0, roomFor(await usedMiB(tree))))
  const diff = await treeChanges(base.tree, tree, work)
  await applyChanges(changed, diff.commands, work)
  const top = join(work, 'layer.qcow2')
  await overlayOn(base.path, base.disk, changed, top)
  const diskBytes = (await stat(changed)).size
  await rm(changed, { force: true })
  return { path: top, diskBytes, changed: diff.changed, removed: diff.removed }
}

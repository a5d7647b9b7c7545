import { existsSync } from 'node:fs'
import { link, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { XenosError, type StagedDisk } from '../../core/index.ts'
import { createOutputImage } from '../../data/index.ts'
import type { InstanceRecord } from '../../store/index.ts'

/** An instance's staged inputs, in its directory: a read-only disk the guest mounts at /in. */
const INPUTS_IMAGE = 'inputs.img'
const INPUTS_SERIAL = 'xenos-in'
/** A task's outputs: a disk the guest mounts at /out, read back once the task has ended. */
export const OUTPUTS_IMAGE = 'outputs.img'
export const OUTPUTS_SERIAL = 'xenos-out'
/** The staged disks an instance may have, as images in its directory. */
const STAGED_IMAGES = [
  { file: INPUTS_IMAGE, serial: INPUTS_SERIAL, readOnly: true },
  { file: OUTPUTS_IMAGE, serial: OUTPUTS_SERIAL, readOnly: false },
]
export const STAGED_SERIALS = [INPUTS_SERIAL, OUTPUTS_SERIAL] as const

/** The file in an instance's directory that holds the staged disk with serial `serial`. */
export function stagedImageFile (serial: string): string {
  const image = STAGED_IMAGES.find(s => s.serial === serial)
  if (image === undefined) throw new XenosError('INVALID_ARGUMENT', `no staged disk has serial ${serial}`)
  return image.file
}

/** The staged disks whose images are in instance directory `dir`. */
export function stagedImagesIn (dir: string): StagedDisk[] {
  return STAGED_IMAGES.flatMap(s => existsSync(join(dir, s.file)) ? [{ serial: s.serial, readOnly: s.readOnly, path: join(dir, s.file) }] : [])
}

/** An instance's staged disks: images in its directory `dir`, or, for a disk another host serves, what that host serves with it. */
export function stagedDisksOf (r: Pick<InstanceRecord, 'remoteDisk'>, dir: string): StagedDisk[] {
  if (r.remoteDisk !== null) return r.remoteDisk.staged ?? []
  return stagedImagesIn(dir)
}

/**
 * Puts a new instance's staged disks in its directory `dir`: the deploy's inputs image (linked,
 * read-only, so every instance of the deploy shares it) and an empty outputs disk.
 */
export async function stageDisks (dir: string, o: { inputs?: string | undefined, outputBytes?: number | undefined }): Promise<void> {
  if (o.inputs === undefined && o.outputBytes === undefined) return
  await mkdir(dir, { recursive: true })
  if (o.inputs !== undefined) await link(o.inputs, join(dir, INPUTS_IMAGE))
  if (o.outputBytes !== undefined) await createOutputImage(join(dir, OUTPUTS_IMAGE), o.outputBytes)
}

import { createReadStream } from 'node:fs'
import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import { XenosError, type TemplateManifest, type TemplateSummary } from '../core/index.ts'
import { BlobStore, buildGuestTemplate, deriveDisk, tailoredManifest } from '../images/index.ts'
import type { ApiClient } from './client.ts'
import { counting, progressBar } from './progress.ts'

export const DEFAULT_CACHE_DIR = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'xenos')

/**
 * Builds a VM template from a directory on this machine, uploads the image files the host lacks
 * (with a progress bar each) and imports the template there.
 */
export async function buildAndImport (api: ApiClient, dir: string, cacheDir: string): Promise<TemplateSummary> {
  const blobs = new BlobStore(join(cacheDir, 'blobs'))
  const manifest = await buildGuestTemplate(dir, { cacheDir, blobs, onProgress: step => { process.stderr.write(`build: ${step}\n`) } })
  return await uploadAndImport(api, blobs, manifest)
}

export interface DeriveOptions {
  name?: string | undefined
  version?: string | undefined
}

/**
 * Makes a tailored template: BASE's image with the files of `dir` added, as a small qcow2 overlay
 * on BASE's disk, and imports it. Hosts that hold BASE fetch only the overlay.
 */
export async function deriveAndImport (api: ApiClient, baseRef: string, dir: string, cacheDir: string, o: DeriveOptions): Promise<TemplateSummary> {
  const base = await api.template<TemplateSummary & { manifest?: TemplateManifest }>(baseRef)
  const image = base.manifest?.image
  if (base.manifest === undefined) throw new XenosError('TEMPLATE_NOT_FOUND', `the host at the API does not hold ${baseRef} itself: deploy it there once, or talk to a host that holds it`)
  if (image === undefined) throw new XenosError('INVALID_ARGUMENT', `${baseRef} is not a VM template: only VM templates have a disk to tailor`)
  if (image.diskFormat !== 'raw') throw new XenosError('INVALID_ARGUMENT', `${baseRef} is itself tailored from ${image.base ?? 'another template'}: derive from that one`)
  const blobs = new BlobStore(join(cacheDir, 'blobs'))
  if (!await blobs.has(image.disk)) {
    process.stderr.write(`derive: downloading the base disk ${image.disk.slice(7, 19)}\n`)
    await blobs.put(image.disk, await api.download(`/v1/blobs/${image.disk}`))
  }
  const derived = await deriveDisk({ base: blobs.path(image.disk), baseId: image.disk, add: resolve(dir) })
  let disk: string
  try {
    disk = await blobs.putFile(derived.path)
  } finally {
    await derived.cleanup()
  }
  return await uploadAndImport(api, blobs, tailoredManifest(base.manifest, disk, o.name ?? base.manifest.name, o.version))
}

/** Uploads the image files of `manifest` the host lacks, with a progress bar each, and imports it. */
async function uploadAndImport (api: ApiClient, blobs: BlobStore, manifest: TemplateManifest): Promise<TemplateSummary> {
  const image = manifest.image
  for (const id of image === undefined ? [] : [...new Set([image.kernel, image.initrd, image.disk])]) {
    if (await api.exists(`/v1/blobs/${id}`)) continue
    const size = await blobs.size(id)
    const bar = progressBar(`upload ${id.slice(7, 19)}`, size)
    await api.signedUpload(`/v1/blobs/${id}`, 'blob.put', id, {}, counting(createReadStream(blobs.path(id)), n => { bar.update(n) }), size)
    bar.done()
  }
  const body = { manifest }
  return await api.signed<TemplateSummary>('POST', '/v1/templates', 'template.import', 'templates', body, body)
}

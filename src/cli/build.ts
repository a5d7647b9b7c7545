import { createReadStream } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { BlobStore, buildGuestTemplate } from '../images/index.ts'
import type { TemplateSummary } from '../node/index.ts'
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
  const image = manifest.image
  for (const digest of image === undefined ? [] : [...new Set([image.kernel, image.initrd, image.disk])]) {
    if (await api.exists(`/v1/blobs/${digest}`)) continue
    const bar = progressBar(`upload ${digest.slice(7, 19)}`, await blobs.size(digest))
    await api.upload(`/v1/blobs/${digest}`, counting(createReadStream(blobs.path(digest)), n => { bar.update(n) }))
    bar.done()
  }
  return await api.post<TemplateSummary>('/v1/templates', { manifest })
}

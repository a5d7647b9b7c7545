import { createReadStream, existsSync } from 'node:fs'
import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import { XenosError, type TemplateManifest, type TemplateSummary } from '../core/index.ts'
import { blobsOf, BlobStore, buildBaseTemplate, buildFromSpec, buildGuestTemplate, buildSpecSchema, deriveDisk, tailoredManifest } from '../images/index.ts'
import type { ApiClient } from './client.ts'
import { counting, progressBar } from './progress.ts'

export const DEFAULT_CACHE_DIR = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'xenos')

/**
 * Builds a VM template from a directory on this machine, uploads the image files the host lacks
 * (with a progress bar each) and imports the template there.
 */
export async function buildAndImport (api: ApiClient, dir: string, cacheDir: string): Promise<TemplateSummary> {
  const blobs = new BlobStore(join(cacheDir, 'blobs'))
  const options = { cacheDir, blobs, onProgress: (step: string) => { process.stderr.write(`build: ${step}\n`) } }
  const manifest = await buildGuestTemplate(dir, options)
  // A distribution template's base goes first, as a template of its own, named template://me/debian/SUITE
  // (which moves to each new build) and template://me/debian/SUITE-BUILD (which never moves).
  const base = await buildBaseTemplate(manifest, options)
  if (base !== undefined && manifest.distribution !== undefined) {
    const imported = await uploadAndImport(api, blobs, base)
    const suite = manifest.distribution.debian
    await api.publishName(base.name, `${suite}-${imported.id.slice(7, 15)}`, 'version', imported.id)
    await api.publishName(base.name, suite, 'alias', imported.id)
    process.stderr.write(`build: base ${base.name}:${base.version} is template://me/${base.name}/${suite} (this build: ${suite}-${imported.id.slice(7, 15)})\n`)
  }
  return await uploadAndImport(api, blobs, manifest)
}

export interface DeriveOptions {
  /** Files to add: under /srv for a busybox template, over the root file system for a distribution. */
  add?: string | undefined
  name?: string | undefined
  version?: string | undefined
  /** On a distribution base only: Debian packages to install, the service's command and ports (`NAME:GUEST[:PROTOCOL[:HEALTH]]`). */
  packages?: string[] | undefined
  command?: string | undefined
  ports?: string[] | undefined
}

/**
 * Makes a tailored template from BASE, as a small qcow2 overlay on BASE's disk, and imports it:
 * on a busybox template, its image with the files of `add` at /srv; on a distribution base, the
 * service built on it as a template.yaml would (packages, files over the root file system,
 * command, ports). Hosts that hold BASE fetch only the overlay.
 */
export async function deriveAndImport (api: ApiClient, baseRef: string, cacheDir: string, o: DeriveOptions): Promise<TemplateSummary> {
  const base = await api.template<TemplateSummary & { manifest?: TemplateManifest }>(baseRef)
  const image = base.manifest?.image
  if (base.manifest === undefined) throw new XenosError('TEMPLATE_NOT_FOUND', `the host at the API does not hold ${baseRef} itself: deploy it there once, or talk to a host that holds it`)
  if (image === undefined) throw new XenosError('INVALID_ARGUMENT', `${baseRef} is not a VM template: only VM templates have a disk to tailor`)
  if (image.diskFormat !== 'raw') throw new XenosError('INVALID_ARGUMENT', `${baseRef} is itself tailored from ${image.base ?? 'another template'}: derive from that one`)
  if (image.system !== undefined) throw new XenosError('INVALID_ARGUMENT', `${baseRef} boots its image's own system, whose disk Xenos does not lay out: change the image with its own tools and build it again`)
  const blobs = new BlobStore(join(cacheDir, 'blobs'))
  const manifest = base.manifest.distribution === undefined
    ? await withFiles(api, base.manifest, image.disk, blobs, o)
    : await onDistribution(base.manifest, image.disk, cacheDir, blobs, o)
  return await uploadAndImport(api, blobs, manifest)
}

/** BASE (a busybox template whose raw disk is `disk`) with the files of `o.add` at /srv. */
async function withFiles (api: ApiClient, base: TemplateManifest, disk: string, blobs: BlobStore, o: DeriveOptions): Promise<TemplateManifest> {
  const onlyOnDistribution = [o.packages === undefined ? [] : ['--packages'], o.command === undefined ? [] : ['--command'], o.ports === undefined ? [] : ['--port']].flat()
  if (onlyOnDistribution.length > 0) throw new XenosError('INVALID_ARGUMENT', `${base.name}:${base.version} is a busybox template, which runs the command it was built with: ${onlyOnDistribution.join(', ')} need a distribution base (e.g. template://me/debian/bookworm), or build from a template.yaml`)
  if (o.add === undefined) throw new XenosError('INVALID_ARGUMENT', 'give the files to add to the disk: --add DIR')
  if (!await blobs.has(disk)) {
    process.stderr.write(`derive: downloading the base disk ${disk.slice(7, 19)}\n`)
    await blobs.put(disk, await api.download(`/v1/blobs/${disk}`))
  }
  const derived = await deriveDisk({ base: blobs.path(disk), baseId: disk, add: resolve(o.add) })
  try {
    return tailoredManifest(base, await blobs.putFile(derived.path), o.name ?? base.name, o.version)
  } finally {
    await derived.cleanup()
  }
}

/** The service `o` describes, built as a layer on the distribution base BASE (whose raw disk is `disk`). */
async function onDistribution (base: TemplateManifest, disk: string, cacheDir: string, blobs: BlobStore, o: DeriveOptions): Promise<TemplateManifest> {
  const d = base.distribution as NonNullable<TemplateManifest['distribution']>
  if (o.packages === undefined && o.add === undefined && o.command === undefined) throw new XenosError('INVALID_ARGUMENT', 'say what to add to the distribution: --packages, --add DIR or --command')
  const spec = buildSpecSchema.safeParse({
    name: o.name ?? base.name,
    version: o.version ?? base.version,
    command: o.command ?? base.command,
    env: base.env,
    ports: o.ports?.map(portOf) ?? base.ports,
    tags: base.tags,
    resources: base.resources,
    network: base.network,
    distribution: { debian: d.debian, variant: d.variant },
    packages: o.packages ?? [],
  })
  if (!spec.success) {
    const issue = spec.error.issues[0]
    throw new XenosError('INVALID_ARGUMENT', `${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`)
  }
  const files = o.add === undefined ? join(cacheDir, 'no-files') : resolve(o.add)
  if (o.add !== undefined && !existsSync(files)) throw new XenosError('INVALID_ARGUMENT', `--add: ${files} does not exist`)
  const built = await buildFromSpec(spec.data, cacheDir, files, { cacheDir, blobs, base: disk, onProgress: step => { process.stderr.write(`derive: ${step}\n`) } }, 'derive')
  return o.version === undefined ? { ...built, version: `${base.version}-${built.image?.disk.slice(7, 15) ?? ''}` } : built
}

/** A port given as `NAME:GUEST[:PROTOCOL[:HEALTH]]` (`http:80:http:/`). */
function portOf (text: string): unknown {
  const [name, guest, protocol, ...health] = text.split(':')
  if (name === undefined || guest === undefined || !/^\d+$/.test(guest)) throw new XenosError('INVALID_ARGUMENT', `--port ${text}: give NAME:GUEST[:PROTOCOL[:HEALTH]], e.g. http:80:http:/`)
  return { name, guest: Number(guest), ...protocol === undefined ? {} : { protocol }, ...health.length === 0 ? {} : { health: health.join(':') } }
}

/** Uploads the image files of `manifest` the host lacks, with a progress bar each, and imports it. */
async function uploadAndImport (api: ApiClient, blobs: BlobStore, manifest: TemplateManifest): Promise<TemplateSummary> {
  for (const id of blobsOf(manifest)) {
    if (await api.exists(`/v1/blobs/${id}`)) continue
    const size = await blobs.size(id)
    const bar = progressBar(`upload ${id.slice(7, 19)}`, size)
    await api.signedUpload(`/v1/blobs/${id}`, 'blob.put', id, {}, counting(createReadStream(blobs.path(id)), n => { bar.update(n) }), size)
    bar.done()
  }
  const body = { manifest }
  return await api.signed<TemplateSummary>('POST', '/v1/templates', 'template.import', 'templates', body, body)
}

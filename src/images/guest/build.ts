import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { z } from 'zod'
import { parse as parseYaml } from 'yaml'
import { nameSchema, templateManifestSchema, XenosError, type TemplateManifest } from '../../core/index.ts'
import { blobIdOfFile, type BlobStore } from '../blobs.ts'
import { blobsOf } from '../library.ts'
import { readQcow2 } from '../qcow2.ts'
import { cpioArchive, type CpioEntry } from './cpio.ts'
import { kernelPackageName, unpackedPackage } from './debian.ts'
import { ext4Image, stage } from './ext4.ts'
import { baseLayer, serviceLayer } from './layered.ts'
import { buildRootFs, distributionSchema, installedIn } from './rootfs.ts'
import { moduleLoadOrder } from './modules.ts'
import { ownSystemOf } from './own-system.ts'

const run = promisify(execFile)

/** Where the guest's init and agent live in this repository. */
const GUEST_DIR = resolve(import.meta.dirname, '..', '..', '..', 'guest')

/** Modules every guest loads: the virtio transport, network, disk, the agent's serial port, ext4 and the checksum it needs (loaded through the crypto API, so no module names it as a dependency). */
export const BASE_MODULES = ['virtio_pci', 'virtio_net', 'virtio_blk', 'virtio_console', 'crc32c_generic', 'ext4']

/** What `DIR/template.yaml` may say for a VM template; the built manifest adds the image. */
export const buildSpecSchema = z.strictObject({
  name: nameSchema,
  version: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,62}$/),
  description: z.string().max(1000).optional(),
  driver: z.literal('qemu').default('qemu'),
  /** The service, run by `sh -c` in `/srv` inside the guest (none for an image that boots its own system). */
  command: z.string().min(1).max(8192).optional(),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string().max(4096)).default({}),
  /** Directory (relative to DIR) copied to `/srv` in the guest. @default "files" */
  files: z.string().default('files'),
  ports: templateManifestSchema.shape.ports,
  tags: templateManifestSchema.shape.tags,
  resources: templateManifestSchema.shape.resources,
  /** `outbound`: the VM asks to reach the network (hosts started with --guest-outbound only). @default none */
  network: templateManifestSchema.shape.network,
  /** Size of the guest's disk in MiB. @default 64, or for a distribution what its root file system needs and a quarter more */
  disk: z.number().int().min(8).max(1024 * 1024).optional(),
  /** The root file system the service runs in: a Debian suite built with mmdebstrap (without it: busybox, and the files at /srv). */
  distribution: distributionSchema.optional(),
  /** Debian packages installed into the distribution. */
  packages: z.array(z.string().regex(/^[a-z0-9][a-z0-9+.-]{0,99}$/, 'a Debian package name')).max(500).default([]),
  /** The Debian kernel package the guest boots (e.g. linux-image-cloud-amd64). @default linux-image-amd64 */
  kernel: z.string().regex(/^linux-image-[a-z0-9.+-]{1,80}$/, 'a Debian kernel package: linux-image-amd64, linux-image-cloud-amd64…').optional(),
  /** An existing ext4 disk image (raw or qcow2, relative to DIR) to use instead of building one from `files`. */
  diskImage: z.string().min(1).max(4096).optional(),
  /** `image`: boot the kernel and initramfs in the diskImage's /boot and its own init, which runs the services (no Xenos init or agent). @default xenos */
  boot: z.enum(['xenos', 'image']).default('xenos'),
  /** With `boot: image`: the kernel's root= (default: the file system holding /boot, /dev/vda or /dev/vdaN). */
  root: z.string().regex(/^[A-Za-z0-9=/_.:-]{1,200}$/, 'a root device for the kernel: /dev/vda1, UUID=…, LABEL=…').optional(),
  /** Kernel modules to load besides the base set. */
  modules: z.array(z.string().regex(/^[a-z0-9_-]+$/)).max(64).default([]),
})

export type BuildSpec = z.output<typeof buildSpecSchema>

export interface BuildOptions {
  /** Cache for Debian packages and finished builds. */
  cacheDir: string
  /** Where the built kernel, initramfs and disk are stored. */
  blobs: BlobStore
  onProgress?: (step: string) => void
  /** The raw disk a distribution template must be a layer on (a derive's base): the base built here must be it. */
  base?: string
}

/**
 * Builds a VM template from a directory: Debian's kernel and the modules the guest needs,
 * busybox, Xenos's init and agent, and the service's files on an ext4 disk. The same inputs give
 * the same bytes, and so the same template id; a finished build is cached by its inputs.
 */
export async function buildGuestTemplate (dir: string, o: BuildOptions): Promise<TemplateManifest> {
  const spec = await readSpec(dir)
  const filesDir = resolve(dir, spec.files)
  if (spec.files !== 'files' && !existsSync(filesDir)) throw new XenosError('BAD_MANIFEST', `template.yaml: files: ${filesDir} does not exist`)
  return await buildFromSpec(spec, dir, filesDir, o)
}

/**
 * The base template of a distribution template's distribution (default kernel): Debian with no
 * packages but its variant's, whose disk is the base every such template is a layer on. Its
 * command waits: it is there to be kept, derived from and deployed to look around.
 */
export async function buildBaseTemplate (service: TemplateManifest, o: BuildOptions): Promise<TemplateManifest | undefined> {
  const d = service.distribution
  if (d === undefined) return undefined
  const spec = buildSpecSchema.parse({
    name: 'debian',
    version: `${d.debian}-${d.variant}`,
    description: `Debian ${d.debian} (${d.variant}): the base of distribution templates`,
    command: 'exec sleep infinity',
    distribution: { debian: d.debian, variant: d.variant },
  })
  return await buildFromSpec(spec, o.cacheDir, join(o.cacheDir, 'no-files'), o)
}

/**
 * Builds template `spec` (checked as a template.yaml is, `where` naming its origin in errors),
 * reading `diskImage` relative to `dir` and the files from `filesDir`.
 */
export async function buildFromSpec (spec: BuildSpec, dir: string, filesDir: string, o: BuildOptions, where = 'template.yaml'): Promise<TemplateManifest> {
  checkSpec(spec, where)
  if (spec.boot === 'image') return await buildOwnSystem(spec, resolve(dir, spec.diskImage ?? ''), o)
  const progress = o.onProgress ?? (() => {})

  progress('kernel')
  const kernelPkg = await kernelPackageName(spec.kernel)
  const kernelRoot = await unpackedPackage(kernelPkg, o.cacheDir)
  const release = (await readdir(join(kernelRoot, 'lib', 'modules')))[0]
  if (release === undefined) throw new XenosError('DRIVER_UNAVAILABLE', `${kernelPkg} holds no modules`)
  const kernel = join(kernelRoot, 'boot', `vmlinuz-${release}`)
  progress('busybox')
  const busybox = join(await unpackedPackage('busybox-static', o.cacheDir), 'bin', 'busybox')

  const diskImage = spec.diskImage === undefined ? [] : [await blobIdOfFile(resolve(dir, spec.diskImage)).catch(() => 'missing')]
  const inputs = await inputDigest(spec, filesDir, [kernel, busybox, join(GUEST_DIR, 'init'), join(GUEST_DIR, 'xenos-agent')], [...diskImage, ...o.base === undefined ? [] : [o.base]])
  const cached = join(o.cacheDir, 'builds', `${inputs}.json`)
  if (existsSync(cached)) {
    const manifest = templateManifestSchema.parse(JSON.parse(await readFile(cached, 'utf8')))
    if (manifest.image !== undefined && (await Promise.all(blobsOf(manifest).map(async b => await o.blobs.has(b)))).every(Boolean)) {
      progress('cached')
      return manifest
    }
  }

  const work = await mkdtemp(join(tmpdir(), 'xenos-build-'))
  try {
    progress('initramfs')
    const moduleDir = join(kernelRoot, 'lib', 'modules', release)
    const modules = await moduleLoadOrder(moduleDir, [...BASE_MODULES, ...spec.modules])
    const initrd = join(work, 'initrd.cpio')
    await writeFile(initrd, cpioArchive(await initramfsEntries(spec, busybox, moduleDir, modules)))

    const tree = join(work, 'root')
    let installed: string[] | undefined
    let image: NonNullable<TemplateManifest['image']>
    const kernelBlob = await o.blobs.putFile(kernel)
    const initrdBlob = await o.blobs.putFile(initrd)
    if (spec.distribution !== undefined) {
      const log = join(o.cacheDir, 'logs', `${spec.name}-${spec.version}.log`)
      await mkdir(join(o.cacheDir, 'logs'), { recursive: true })
      progress(`base (Debian ${spec.distribution.debian}, ${spec.distribution.variant})`)
      const base = await baseLayer(spec.distribution, o.cacheDir, o.blobs, log)
      if (o.base !== undefined && base.disk !== o.base) {
        throw new XenosError('INVALID_ARGUMENT', `the base disk of Debian ${spec.distribution.debian} (${spec.distribution.variant}) built here is ${base.disk.slice(7, 19)}, not ${o.base.slice(7, 19)}: the base was built elsewhere, or its packages have moved on since. Derive on the machine that built the base, or build the service with "xenos template build" on the base built here`)
      }
      progress(`distribution (Debian ${spec.distribution.debian}, ${spec.distribution.variant}${spec.packages.length === 0 ? '' : ` with ${spec.packages.join(', ')}`})`)
      if (spec.packages.length === 0 && !existsSync(filesDir) && spec.disk === undefined) {
        // Nothing on top of the base: the base itself.
        installed = await installedIn(base.tree)
        image = { kernel: kernelBlob, initrd: initrdBlob, disk: base.disk, diskFormat: 'raw', diskBytes: (await stat(base.path)).size }
      } else {
        installed = await buildRootFs(spec.distribution, spec.packages, tree, log)
        await stage(filesDir, tree)
        progress('layer')
        const layer = await serviceLayer(base, tree, spec.disk, work)
        progress(`store (${layer.changed} paths changed, ${layer.removed} removed on the base)`)
        image = { kernel: kernelBlob, initrd: initrdBlob, disk: await o.blobs.putFile(layer.path), diskFormat: 'qcow2', base: base.disk, diskBytes: layer.diskBytes }
      }
    } else {
      progress('disk')
      const disk = join(work, 'disk.raw')
      if (spec.diskImage === undefined) await makeDisk(spec, filesDir, tree, disk)
      else await importDisk(resolve(dir, spec.diskImage), disk)
      progress('store')
      image = { kernel: kernelBlob, initrd: initrdBlob, disk: await o.blobs.putFile(disk), diskFormat: 'raw', diskBytes: (await stat(disk)).size }
    }
    const { name, version, description, driver, command, env, ports, tags, resources, network } = spec
    const distribution = spec.distribution === undefined ? {} : { distribution: { ...spec.distribution, packages: installed ?? [] } }
    const manifest = templateManifestSchema.parse({ name, version, description, driver, command, env, ports, tags, resources, image, ...network === undefined ? {} : { network }, ...distribution })
    await mkdir(join(o.cacheDir, 'builds'), { recursive: true })
    await writeFile(cached, JSON.stringify(manifest))
    return manifest
  } finally {
    await rm(work, { recursive: true, force: true })
  }
}

/** A template of `image`, which boots its own system: its disk as it is, its kernel and initramfs taken from its /boot. */
async function buildOwnSystem (spec: BuildSpec, image: string, o: BuildOptions): Promise<TemplateManifest> {
  const progress = o.onProgress ?? (() => {})
  const work = await mkdtemp(join(tmpdir(), 'xenos-build-'))
  try {
    progress('disk')
    const disk = join(work, 'disk.raw')
    await importDisk(image, disk)
    progress('kernel (the image\'s own)')
    const own = await ownSystemOf(disk, work, spec.root)
    progress(`store (kernel ${own.release}, root ${own.root})`)
    const built = {
      kernel: await o.blobs.putFile(own.kernel),
      initrd: await o.blobs.putFile(own.initrd),
      disk: await o.blobs.putFile(disk),
      diskFormat: 'raw',
      diskBytes: (await stat(disk)).size,
      system: { root: own.root, release: own.release },
    }
    const { name, version, description, driver, env, ports, tags, resources, network } = spec
    return templateManifestSchema.parse({ name, version, description, driver, env, ports, tags, resources, image: built, ...network === undefined ? {} : { network } })
  } finally {
    await rm(work, { recursive: true, force: true })
  }
}

async function readSpec (dir: string): Promise<BuildSpec> {
  const file = join(dir, 'template.yaml')
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch {
    throw new XenosError('BAD_MANIFEST', `${file} is missing: a template directory needs a template.yaml`)
  }
  let raw: unknown
  try {
    raw = parseYaml(text)
  } catch (err) {
    throw new XenosError('BAD_MANIFEST', `${file} is not valid YAML: ${(err as Error).message.split('\n')[0]}`)
  }
  const parsed = buildSpecSchema.safeParse(raw)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new XenosError('BAD_MANIFEST', `${file}: ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`)
  }
  checkSpec(parsed.data, file)
  return parsed.data
}

/** What the schema alone cannot say of a spec; `where` names it in errors. */
function checkSpec (spec: BuildSpec, where: string): void {
  if (spec.boot === 'image') {
    if (spec.diskImage === undefined) throw new XenosError('BAD_MANIFEST', `${where}: boot: an image boots its own system from a diskImage: add "diskImage: FILE"`)
    const xenosOnly = (['command', 'distribution', 'kernel'] as const).filter(k => spec[k] !== undefined)
    if (xenosOnly.length > 0 || spec.modules.length > 0) throw new XenosError('BAD_MANIFEST', `${where}: ${[...xenosOnly, ...spec.modules.length > 0 ? ['modules'] : []].join(', ')}: an image that boots its own system runs its own kernel and services: leave them out`)
  } else if (spec.command === undefined) {
    throw new XenosError('BAD_MANIFEST', `${where}: command: the service's command is missing ("command: exec …")`)
  }
  if (spec.root !== undefined && spec.boot !== 'image') throw new XenosError('BAD_MANIFEST', `${where}: root: only an image that boots its own system ("boot: image") names its root`)
  if (spec.packages.length > 0 && spec.distribution === undefined) throw new XenosError('BAD_MANIFEST', `${where}: packages: packages are installed into a distribution: add "distribution: { debian: bookworm }"`)
  if (spec.distribution !== undefined && spec.diskImage !== undefined) throw new XenosError('BAD_MANIFEST', `${where}: give a distribution to build or a diskImage to use, not both`)
  for (const p of spec.ports) {
    if (p.guest === undefined) throw new XenosError('BAD_MANIFEST', `${where}: ports: "${p.name}" needs the guest port the service listens on ("guest: 80")`)
  }
}

/** Bumped whenever the builder changes what it produces from the same inputs. */
const BUILD_FORMAT = 9

/** A digest of everything a build reads, to find a finished build again. */
async function inputDigest (spec: BuildSpec, filesDir: string, paths: string[], digests: string[]): Promise<string> {
  const hash = createHash('sha256').update(JSON.stringify({ format: BUILD_FORMAT, modules: BASE_MODULES, spec, digests }))
  for (const p of paths) hash.update(p).update(await readFile(p))
  if (existsSync(filesDir)) {
    for (const entry of (await readdir(filesDir, { recursive: true, withFileTypes: true })).sort((a, b) => join(a.parentPath, a.name).localeCompare(join(b.parentPath, b.name)))) {
      const path = join(entry.parentPath, entry.name)
      hash.update(path.slice(filesDir.length))
      if (entry.isFile()) hash.update(await readFile(path))
    }
  }
  return hash.digest('hex')
}

async function initramfsEntries (spec: BuildSpec, busybox: string, moduleDir: string, modules: string[]): Promise<CpioEntry[]> {
  const dirs = ['bin', 'sbin', 'dev', 'etc', 'etc/xenos', 'lib', 'lib/modules', 'proc', 'run', 'srv', 'sys', 'tmp', 'usr', 'usr/bin', 'usr/sbin', 'var', 'var/log']
  const entries: CpioEntry[] = dirs.map(path => ({ type: 'dir', path, mode: path === 'tmp' ? 0o1777 : 0o755 }))
  entries.push({ type: 'char', path: 'dev/console', major: 5, minor: 1 })
  entries.push({ type: 'file', path: 'init', data: await readFile(join(GUEST_DIR, 'init')), mode: 0o755 })
  entries.push({ type: 'file', path: 'bin/busybox', data: await readFile(busybox), mode: 0o755 })
  entries.push({ type: 'symlink', path: 'bin/sh', target: 'busybox' })
  entries.push({ type: 'file', path: 'bin/xenos-agent', data: await readFile(join(GUEST_DIR, 'xenos-agent')), mode: 0o755 })
  const names: string[] = []
  for (const m of modules) {
    const name = m.split('/').pop() ?? m
    names.push(name)
    entries.push({ type: 'file', path: `lib/modules/${name}`, data: await moduleBytes(join(moduleDir, m)) })
  }
  entries.push({ type: 'file', path: 'etc/xenos/modules', data: Buffer.from(names.join('\n') + '\n') })
  entries.push({ type: 'file', path: 'etc/xenos/command', data: Buffer.from(`${spec.command ?? ''}\n`) })
  entries.push({ type: 'file', path: 'etc/xenos/services', data: Buffer.from(spec.ports.map(p => `${p.name} ${p.guest ?? 0} ${p.protocol} ${p.health ?? '-'}`).join('\n') + '\n') })
  // The disk is the service's root file system (init runs the command chrooted into it), not files at /srv.
  if (spec.distribution !== undefined) entries.push({ type: 'file', path: 'etc/xenos/root', data: Buffer.from(`debian ${spec.distribution.debian}\n`) })
  entries.push({ type: 'file', path: 'etc/xenos/env', data: Buffer.from(Object.entries(spec.env).map(([k, v]) => `export ${k}='${v.replace(/'/g, `'\\''`)}'`).join('\n') + '\n') })
  return entries
}

async function moduleBytes (path: string): Promise<Buffer> {
  if (/\.ko\.(xz|zst|gz)$/.test(path)) throw new XenosError('DRIVER_UNAVAILABLE', `compressed kernel modules are not supported yet: ${path}`)
  return await readFile(path)
}

/** Converts an existing raw or qcow2 image into the template's raw disk (holes stay holes). */
async function importDisk (image: string, out: string): Promise<void> {
  if (!existsSync(image)) throw new XenosError('BAD_MANIFEST', `template.yaml: diskImage: ${image} does not exist`)
  let format: string
  try {
    format = (JSON.parse((await run('qemu-img', ['info', '--output=json', image])).stdout) as { format: string }).format
  } catch (err) {
    throw new XenosError('BAD_MANIFEST', `template.yaml: diskImage: qemu-img cannot read ${image}: ${((err as { stderr?: string }).stderr ?? '').trim() || (err as Error).message}`)
  }
  if (format !== 'raw' && format !== 'qcow2') throw new XenosError('BAD_MANIFEST', `template.yaml: diskImage: ${image} is ${format}; use a raw or qcow2 image`)
  // An image that reaches other files would pull them into the template.
  if (format === 'qcow2' && (await readQcow2(image)).backingFile !== undefined) {
    throw new XenosError('BAD_MANIFEST', `template.yaml: diskImage: ${image} is an overlay on another file: flatten it first (qemu-img convert -O qcow2 ${image} flat.qcow2)`)
  }
  await run('qemu-img', ['convert', '-f', format, '-O', 'raw', '-S', '4k', image, out]).catch((err: unknown) => {
    throw new XenosError('BAD_MANIFEST', `template.yaml: diskImage: cannot convert ${image}: ${((err as { stderr?: string }).stderr ?? '').trim() || (err as Error).message}`)
  })
}

/** An ext4 image of the service's files (at /srv in the guest). */
async function makeDisk (spec: BuildSpec, filesDir: string, tree: string, out: string): Promise<void> {
  const paths = await stage(filesDir, tree)
  await ext4Image(tree, paths, out, spec.disk ?? 64, `${spec.name}/${spec.version}`)
}

import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { cp, mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { z } from 'zod'
import { parse as parseYaml } from 'yaml'
import { nameSchema, templateManifestSchema, XenosError, type TemplateManifest } from '../../core/index.ts'
import { blobIdOfFile, type BlobStore } from '../blobs.ts'
import { readQcow2 } from '../qcow2.ts'
import { cpioArchive, type CpioEntry } from './cpio.ts'
import { kernelPackageName, unpackedPackage } from './debian.ts'
import { moduleLoadOrder } from './modules.ts'

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
  /** The service, run by `sh -c` in `/srv` inside the guest. */
  command: z.string().min(1).max(8192),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string().max(4096)).default({}),
  /** Directory (relative to DIR) copied to `/srv` in the guest. @default "files" */
  files: z.string().default('files'),
  ports: templateManifestSchema.shape.ports,
  tags: templateManifestSchema.shape.tags,
  resources: templateManifestSchema.shape.resources,
  /** `outbound`: the VM asks to reach the network (hosts started with --guest-outbound only). @default none */
  network: templateManifestSchema.shape.network,
  /** Size of the guest's disk in MiB. @default 64 */
  disk: z.number().int().min(8).max(1024 * 1024).default(64),
  /** An existing ext4 disk image (raw or qcow2, relative to DIR) to use instead of building one from `files`. */
  diskImage: z.string().min(1).max(4096).optional(),
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
  const progress = o.onProgress ?? (() => {})

  progress('kernel')
  const kernelPkg = await kernelPackageName()
  const kernelRoot = await unpackedPackage(kernelPkg, o.cacheDir)
  const release = (await readdir(join(kernelRoot, 'lib', 'modules')))[0]
  if (release === undefined) throw new XenosError('DRIVER_UNAVAILABLE', `${kernelPkg} holds no modules`)
  const kernel = join(kernelRoot, 'boot', `vmlinuz-${release}`)
  progress('busybox')
  const busybox = join(await unpackedPackage('busybox-static', o.cacheDir), 'bin', 'busybox')

  const diskImage = spec.diskImage === undefined ? [] : [await blobIdOfFile(resolve(dir, spec.diskImage)).catch(() => 'missing')]
  const inputs = await inputDigest(spec, filesDir, [kernel, busybox, join(GUEST_DIR, 'init'), join(GUEST_DIR, 'xenos-agent')], diskImage)
  const cached = join(o.cacheDir, 'builds', `${inputs}.json`)
  if (existsSync(cached)) {
    const manifest = templateManifestSchema.parse(JSON.parse(await readFile(cached, 'utf8')))
    const image = manifest.image
    if (image !== undefined && await o.blobs.has(image.kernel) && await o.blobs.has(image.initrd) && await o.blobs.has(image.disk)) {
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

    progress('disk')
    const disk = join(work, 'disk.raw')
    if (spec.diskImage === undefined) await makeDisk(spec, filesDir, join(work, 'staging'), disk)
    else await importDisk(resolve(dir, spec.diskImage), disk)

    progress('store')
    const image = {
      kernel: await o.blobs.putFile(kernel),
      initrd: await o.blobs.putFile(initrd),
      disk: await o.blobs.putFile(disk),
      diskBytes: (await stat(disk)).size,
    }
    const { name, version, description, driver, command, env, ports, tags, resources, network } = spec
    const manifest = templateManifestSchema.parse({ name, version, description, driver, command, env, ports, tags, resources, image, ...network === undefined ? {} : { network } })
    await mkdir(join(o.cacheDir, 'builds'), { recursive: true })
    await writeFile(cached, JSON.stringify(manifest))
    return manifest
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
  for (const p of parsed.data.ports) {
    if (p.guest === undefined) throw new XenosError('BAD_MANIFEST', `${file}: ports: "${p.name}" needs the guest port the service listens on ("guest: 80")`)
  }
  return parsed.data
}

/** Bumped whenever the builder changes what it produces from the same inputs. */
const BUILD_FORMAT = 4

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
  entries.push({ type: 'file', path: 'etc/xenos/command', data: Buffer.from(spec.command + '\n') })
  entries.push({ type: 'file', path: 'etc/xenos/services', data: Buffer.from(spec.ports.map(p => `${p.name} ${p.guest ?? 0} ${p.protocol} ${p.health ?? '-'}`).join('\n') + '\n') })
  entries.push({ type: 'file', path: 'etc/xenos/env', data: Buffer.from(Object.entries(spec.env).map(([k, v]) => `export ${k}='${v.replace(/'/g, `'\\''`)}'`).join('\n') + '\n') })
  return entries
}

async function moduleBytes (path: string): Promise<Buffer> {
  if (/\.ko\.(xz|zst|gz)$/.test(path)) throw new XenosError('DRIVER_UNAVAILABLE', `compressed kernel modules are not supported yet: ${path}`)
  return await readFile(path)
}

/** An ext4 image holding the service's files, with fixed ids and times so it is reproducible. */
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

async function makeDisk (spec: BuildSpec, filesDir: string, staging: string, out: string): Promise<void> {
  await mkdir(staging, { recursive: true })
  if (existsSync(filesDir)) await cp(filesDir, staging, { recursive: true, dereference: false, verbatimSymlinks: true })
  const all = [staging, ...(await readdir(staging, { recursive: true, withFileTypes: true })).map(e => join(e.parentPath, e.name))]
  for (const p of all.reverse()) await utimes(p, 0, 0).catch(() => {})
  const uuid = createHash('sha256').update(`${spec.name}/${spec.version}`).digest('hex').slice(0, 32).replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5')
  try {
    await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', staging, '-U', uuid, '-E', `hash_seed=${uuid},root_owner=0:0`, '-L', 'xenos', out, `${spec.disk}M`], {
      env: { ...process.env, E2FSPROGS_FAKE_TIME: '1' },
    })
  } catch (err) {
    throw new XenosError('DRIVER_FAILED', `mke2fs could not build the disk: ${((err as { stderr?: string }).stderr ?? '').trim() || (err as Error).message}`)
  }
  // mke2fs stamps inode change times and random generation numbers: zero them, so equal inputs
  // give equal bytes.
  const paths = ['/', '/lost+found', ...all.filter(p => p !== staging).map(p => p.slice(staging.length))]
  const bad = paths.find(p => /["\n\\]/.test(p))
  if (bad !== undefined) throw new XenosError('BAD_MANIFEST', `file name ${JSON.stringify(bad)}: names in a template's files may not contain quotes, backslashes or newlines`)
  const commands = paths.flatMap(p => ['ctime', 'crtime', 'atime', 'mtime', 'generation'].map(f => `sif "${p}" ${f} 0`))
  const cmdFile = join(staging, '..', 'debugfs.cmds')
  await writeFile(cmdFile, commands.join('\n') + '\n')
  await run('debugfs', ['-w', '-f', cmdFile, out])
}

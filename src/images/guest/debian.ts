import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readdir, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { XenosError } from '../../core/index.ts'

const run = promisify(execFile)

/**
 * Debian packages unpacked into a cache directory (never installed on the host): the guest
 * kernel and busybox come from here. Each package is downloaded once; later builds reuse the
 * unpacked tree, so they are reproducible for as long as the cache is kept.
 */
export async function unpackedPackage (name: string, cacheDir: string): Promise<string> {
  const root = join(cacheDir, 'debian', name)
  if (existsSync(join(root, '.complete'))) return root
  const work = `${root}.partial`
  await rm(work, { recursive: true, force: true })
  await mkdir(work, { recursive: true })
  try {
    await run('apt-get', ['download', name], { cwd: work })
  } catch (err) {
    throw new XenosError('DRIVER_UNAVAILABLE', `cannot download the Debian package ${name} (${firstLine(err)}); run "apt-get update" and check the package name`)
  }
  const deb = (await readdir(work)).find(f => f.endsWith('.deb'))
  if (deb === undefined) throw new XenosError('DRIVER_UNAVAILABLE', `apt-get download ${name} produced no .deb file`)
  await run('dpkg-deb', ['-x', join(work, deb), join(work, 'root')])
  await rm(root, { recursive: true, force: true })
  await rename(join(work, 'root'), root)
  await rm(work, { recursive: true, force: true })
  await run('touch', [join(root, '.complete')])
  return root
}

/**
 * The versioned kernel package that `meta` (`linux-image-amd64`, `linux-image-cloud-amd64`)
 * currently points at; a versioned package is itself.
 */
export async function kernelPackageName (meta = 'linux-image-amd64'): Promise<string> {
  if (/^linux-image-[0-9]/.test(meta)) return meta
  let out: string
  try {
    out = (await run('apt-cache', ['depends', meta])).stdout
  } catch (err) {
    throw new XenosError('BAD_MANIFEST', `template.yaml: kernel: ${meta} is not a Debian kernel package the machine knows (${firstLine(err)}); run "apt-get update", or name one such as linux-image-cloud-amd64`)
  }
  const name = /Depends: (linux-image-[0-9][^\s]*-amd64)\b/.exec(out)?.[1]
  if (name === undefined) throw new XenosError('BAD_MANIFEST', `template.yaml: kernel: ${meta} names no kernel package; run "apt-get update"`)
  return name
}

function firstLine (err: unknown): string {
  return ((err as { stderr?: string }).stderr ?? (err as Error).message).trim().split('\n')[0] ?? ''
}

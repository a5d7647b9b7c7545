import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { XenosError } from '../../core/index.ts'

const run = promisify(execFile)

/** An image's own system: the kernel and initramfs in its /boot (copied out), and the root its kernel mounts. */
export interface OwnSystem {
  kernel: string
  initrd: string
  /** The kernel's `root=`: the file system holding /boot, unless the template says. */
  root: string
  release: string
}

/** A file system in a disk image: where it starts, and the device the guest sees it as. */
interface Volume {
  offset: number
  device: string
}

/** The whole disk, then each partition `partx` finds in its table (none for a bare file system). */
async function volumesOf (image: string): Promise<Volume[]> {
  const whole = { offset: 0, device: '/dev/vda' }
  try {
    const { stdout } = await run('partx', ['-g', '-r', '-b', '-o', 'NR,START', image])
    return [whole, ...stdout.trim().split('\n').filter(l => l !== '').map(l => {
      const [nr, start] = l.split(' ').map(Number) as [number, number]
      return { offset: start * 512, device: `/dev/vda${nr}` }
    })]
  } catch {
    return [whole]
  }
}

/** The regular files of directory `dir` of the ext2/3/4 file system at `v` (none when there is no such file system). */
async function filesIn (image: string, v: Volume, dir: string): Promise<string[]> {
  try {
    // `ls -p`: /inode/mode/uid/gid/name/size/ per entry, the mode in octal.
    const { stdout } = await run('debugfs', ['-R', `ls -p ${dir}`, `${image}?offset=${v.offset}`], { maxBuffer: 64 * 1024 * 1024 })
    return stdout.split('\n').map(l => l.split('/')).filter(f => f.length >= 7 && (f[2] ?? '').startsWith('10')).map(f => f[5] ?? '')
  } catch {
    return []
  }
}

/**
 * Finds the newest kernel (`vmlinuz-RELEASE`) with its initramfs (`initrd.img-RELEASE`) in the
 * /boot of a file system of raw disk `image` (or at the top of a /boot partition, when `root`
 * names the root), and copies both into `work`.
 */
export async function ownSystemOf (image: string, work: string, root?: string): Promise<OwnSystem> {
  const where = 'template.yaml: diskImage'
  for (const v of await volumesOf(image)) {
    for (const dir of ['/boot', '/']) {
      const files = await filesIn(image, v, dir)
      const releases = files.map(f => /^vmlinuz-(.+)$/.exec(f)?.[1]).filter((r): r is string => r !== undefined)
        .sort((a, b) => b.localeCompare(a, 'en', { numeric: true }))
      const release = releases[0]
      if (release === undefined) continue
      if (!files.includes(`initrd.img-${release}`)) throw new XenosError('BAD_MANIFEST', `${where}: ${dir}/vmlinuz-${release} has no initramfs beside it (${dir}/initrd.img-${release}): the image's kernel needs one that finds its root (Debian: update-initramfs -c -k ${release})`)
      if (dir === '/' && root === undefined) throw new XenosError('BAD_MANIFEST', `${where}: the kernel is on a /boot partition (${v.device}): say which file system is the root ("root: /dev/vda2")`)
      const out = { kernel: join(work, 'own-vmlinuz'), initrd: join(work, 'own-initrd') }
      const at = dir === '/' ? '' : dir
      await run('debugfs', ['-R', `dump ${at}/vmlinuz-${release} ${out.kernel}`, `${image}?offset=${v.offset}`])
      await run('debugfs', ['-R', `dump ${at}/initrd.img-${release} ${out.initrd}`, `${image}?offset=${v.offset}`])
      return { ...out, root: root ?? v.device, release }
    }
  }
  throw new XenosError('BAD_MANIFEST', `${where}: no file system of the image holds a kernel (/boot/vmlinuz-*): give an image with its own kernel and initramfs, or leave out "boot: image" to boot Xenos's`)
}

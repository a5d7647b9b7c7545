import { execFileSync } from 'node:child_process'
import { chmod, mkdir, open, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { cpioArchive, type CpioEntry } from '../../src/images/guest/cpio.ts'
import { kernelPackageName, unpackedPackage } from '../../src/images/guest/debian.ts'
import { moduleLoadOrder } from '../../src/images/guest/modules.ts'

/** The initramfs of the image: finds the root the kernel's command line names, and hands over to the system's init there. */
const INITRAMFS_INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules); do insmod /lib/modules/$m; done
root=$(sed -n 's/.*\\broot=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
while [ ! -b "$root" ]; do sleep 0.1; done
mount -o ro "$root" /newroot || { echo "initramfs: cannot mount $root"; exec sh; }
umount /proc
exec switch_root /newroot /sbin/init
`

/** The system's own init: the network by DHCP, then a web server; says which root it booted from. */
const SYSTEM_INIT = `#!/bin/busybox sh
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mkdir -p /run/www
grep -o 'root=[^ ]*' /proc/cmdline > /run/www/booted
echo "its own system, kernel $(uname -r)" > /run/www/index.html
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -q -s /etc/udhcpc.script
exec httpd -f -p 80 -h /run/www
`

const DHCP_SCRIPT = `#!/bin/busybox sh
[ "$1" = bound ] || exit 0
ifconfig "$interface" "$ip" netmask "$subnet"
route add default gw "$router"
`

/**
 * A disk image as an owner brings one: an MBR partition table, and in its one partition an ext4
 * root file system with the kernel and an initramfs in /boot (Debian's kernel, an initramfs of
 * its own that mounts `root=`), and an init of its own. Written to `out` (raw).
 */
export async function ownSystemImage (work: string, out: string, cacheDir: string): Promise<void> {
  const kernelRoot = await unpackedPackage(await kernelPackageName(), cacheDir)
  const release = (await readdir(join(kernelRoot, 'lib/modules')))[0] as string
  const moduleDir = join(kernelRoot, 'lib/modules', release)
  const busybox = await readFile(join(await unpackedPackage('busybox-static', cacheDir), 'bin/busybox'))
  const modules = await moduleLoadOrder(moduleDir, ['virtio_pci', 'virtio_blk', 'virtio_net', 'crc32c_generic', 'ext4'])
  const entries: CpioEntry[] = ['bin', 'dev', 'lib', 'lib/modules', 'proc', 'newroot'].map(path => ({ type: 'dir', path }))
  entries.push({ type: 'file', path: 'init', data: Buffer.from(INITRAMFS_INIT), mode: 0o755 })
  entries.push({ type: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 })
  for (const m of modules) entries.push({ type: 'file', path: `lib/modules/${m.split('/').pop() ?? m}`, data: await readFile(join(moduleDir, m)) })
  entries.push({ type: 'file', path: 'modules', data: Buffer.from(modules.map(m => m.split('/').pop()).join('\n') + '\n') })

  const root = join(work, 'root')
  for (const d of ['boot', 'bin', 'sbin', 'etc', 'proc', 'run', 'dev']) await mkdir(join(root, d), { recursive: true })
  await writeFile(join(root, 'boot', `vmlinuz-${release}`), await readFile(join(kernelRoot, 'boot', `vmlinuz-${release}`)))
  await writeFile(join(root, 'boot', `initrd.img-${release}`), cpioArchive(entries))
  await writeFile(join(root, 'bin/busybox'), busybox)
  for (const [path, text] of [['sbin/init', SYSTEM_INIT], ['etc/udhcpc.script', DHCP_SCRIPT]] as const) await writeFile(join(root, path), text)
  for (const path of ['bin/busybox', 'sbin/init', 'etc/udhcpc.script']) await chmod(join(root, path), 0o755)
  for (const applet of ['sh', 'mount', 'grep', 'ip', 'udhcpc', 'httpd', 'ifconfig', 'route', 'uname', 'mkdir']) execFileSync('ln', ['-sf', 'busybox', join(root, 'bin', applet)])

  // One partition from sector 2048 to the end; the file system inside it.
  const mib = 64
  execFileSync('truncate', ['-s', `${mib}M`, out])
  const table = Buffer.alloc(512)
  table.writeUInt8(0x83, 446 + 4)
  table.writeUInt32LE(2048, 446 + 8)
  table.writeUInt32LE(mib * 2048 - 2048, 446 + 12)
  table.writeUInt16LE(0xaa55, 510)
  const disk = await open(out, 'r+')
  await disk.write(table, 0, 512, 0)
  await disk.close()
  execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', root, '-E', 'offset=1048576', out, `${mib - 1}M`])
}

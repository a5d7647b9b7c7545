import { join } from 'node:path'
import { XenosError, type TaskSpec } from '../../core/index.ts'
import type { Accelerator } from './accel.ts'
import { DISK_EXPORT } from './disk-server.ts'

/** How long a VM waits for its disk server to come back (a restart of it, or of a tunnel) before I/O fails. */
const DISK_RECONNECT_S = 60
const TCG_CODE_BUFFER_MIB = 32

/**
 * The guest's RAM, as QEMU's `-m`. Under TCG, QEMU before 9.0 loses guest writes during a live
 * migration when the RAM's size is a multiple of 256 KiB: its fast scan of the dirty-page bitmap
 * (used for such sizes) does not make the translated code note the next writes to the pages it
 * has just marked sent, so pages the guest keeps writing arrive stale and the moved guest's kernel
 * crashes ("physmem: Fix migration dirty bitmap coherency with TCG memory access", QEMU 9.0).
 * 8 KiB more makes QEMU take its page-by-page scan, which does. Every TCG host adds the same 8 KiB
 * whatever its QEMU, as both ends of a migration must agree on the RAM's size.
 */
function memoryOf (mib: number, accelerator: Accelerator): string {
  return accelerator === 'tcg' ? `${mib * 1024 + 8}k` : String(mib)
}

/** Where a guest reaches its links: an address each on its user network, past the host's 10.0.2.2 and DNS 10.0.2.3. */
const LINK_ADDRESS = '10.0.2.100'
const FIRST_LINK_PORT = 8000

/** The guest's end of each of the task's links, and the unix socket of its host's end. */
function guestLinks (spec: TaskSpec): Array<{ name: string, address: string, path: string }> {
  return (spec.links ?? []).map((l, i) => {
    if (!('path' in l.to) || /[, ]/.test(l.to.path)) throw new XenosError('DRIVER_FAILED', `link ${l.name} of instance ${spec.id} has no socket QEMU can name`)
    return { name: l.name, address: `${LINK_ADDRESS}:${FIRST_LINK_PORT + i}`, path: l.to.path }
  })
}

export interface CommandLineInput {
  /** The QEMU binary. */
  qemu: string
  /** Where blobs named by a template's image live. */
  blobPath: (digest: string) => string
  spec: TaskSpec
  accelerator: Accelerator
  /** The directory of the VM's QMP and agent sockets. */
  sockets: string
  /** The file its serial console goes to. */
  console: string
  /** The unix socket of the server of its disk (and staged disks). */
  disk: string
  /** What makes it wait for a migration's memory (see migration-channel.ts); none otherwise. */
  incoming: string[]
}

/** The guest kernel's command line: what Xenos's init reads, or for an image's own system, its root. */
function kernelArguments (spec: TaskSpec, links: Array<{ name: string, address: string }>): string {
  const system = spec.image?.system
  if (system !== undefined) return `console=ttyS0 reboot=t panic=-1 root=${system.root} ro`
  return [
    `console=ttyS0 reboot=t panic=-1 quiet xenos.id=${spec.id}`,
    ...links.length === 0 ? [] : [`xenos.links=${links.map(l => `${l.name}@${l.address}`).join(',')}`],
    // The deploy's environment, KEY=VALUE lines in base64 (the guest's init exports them).
    ...Object.keys(spec.instanceEnv ?? {}).length === 0 ? [] : [`xenos.env=${Buffer.from(Object.entries(spec.instanceEnv ?? {}).map(([k, v]) => `${k}=${v}\n`).join('')).toString('base64')}`],
  ].join(' ')
}

/** The QEMU command line of a task's VM. */
export function qemuCommandLine (o: CommandLineInput): string[] {
  const { spec, accelerator, sockets, console, disk, incoming } = o
  const image = spec.image
  if (image === undefined) throw new XenosError('BAD_MANIFEST', `instance ${spec.id} has a qemu template without an image`)
  const forwards = spec.ports.filter(p => p.guest !== undefined).map(p => `hostfwd=${p.protocol === 'udp' ? 'udp' : 'tcp'}:${spec.bindAddress}:${p.hostPort}-:${p.guest ?? 0}`)
  const links = guestLinks(spec)
  const args = [
    o.qemu,
    // q35 with virtio-pci: Debian's kernel finds microvm's virtio-mmio devices only through
    // ACPI, and with ACPI on microvm it stalls calibrating its clock under TCG.
    '-M', 'q35,smbus=off,sata=off',
    // TCG's translated-code buffer may grow to 1 GiB; booting fills ~58 MiB of it, mostly with
    // code that never runs again. 32 MiB keeps each VM smaller and boots as fast.
    '-accel', accelerator === 'tcg' ? `tcg,tb-size=${TCG_CODE_BUFFER_MIB}` : accelerator,
    '-cpu', accelerator === 'kvm' ? 'host' : 'qemu64',
    '-m', memoryOf(spec.resources.memory, accelerator),
    '-smp', String(Math.max(1, Math.ceil(spec.resources.cpu))),
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-kernel', o.blobPath(image.kernel),
    '-initrd', o.blobPath(image.initrd),
    '-append', kernelArguments(spec, links),
    '-chardev', `file,id=console,path=${console},append=on`,
    '-serial', 'chardev:console',
    '-qmp', `unix:${join(sockets, 'qm.sock')},server=on,wait=off`,
    '-chardev', `socket,id=agent,path=${join(sockets, 'ag.sock')},server=on,wait=off`,
    '-device', 'virtio-serial-pci',
    '-device', 'virtserialport,chardev=agent,name=org.xenos.agent',
    // The disk through its server (see disk-server.ts), so another host's VM can take it over.
    '-blockdev', `driver=nbd,node-name=disk,server.type=unix,server.path=${disk},export=${DISK_EXPORT},reconnect-delay=${DISK_RECONNECT_S},discard=unmap`,
    '-device', 'virtio-blk-pci,drive=disk',
    // Staged data, from the same server: the guest finds each disk by its serial.
    ...(spec.disks ?? []).flatMap((d, i) => [
      '-blockdev', `driver=nbd,node-name=staged${i},server.type=unix,server.path=${disk},export=${d.serial},reconnect-delay=${DISK_RECONNECT_S},read-only=${d.readOnly ? 'on' : 'off'}`,
      '-device', `virtio-blk-pci,drive=staged${i},serial=${d.serial}`,
    ]),
    // Without `restrict`, QEMU's user network would give the guest every address the host
    // reaches, the host's loopback (and so its API) at 10.0.2.2 among them.
    // Each link: an address of the guest's network whose connections QEMU hands to a socat
    // it starts for each, joined to the unix socket where the host reaches the linked service.
    '-netdev', ['user', 'id=net0', `restrict=${spec.outbound === true ? 'off' : 'on'}`, ...forwards, ...links.map(l => `guestfwd=tcp:${l.address}-cmd:socat STDIO UNIX-CONNECT:${l.path}`)].join(','),
    '-device', 'virtio-net-pci,netdev=net0,romfile=',
  ]
  // The saved state arrives on descriptor 3 (see start): QEMU reads the file itself.
  if (spec.restoreFrom !== undefined) args.push('-incoming', 'fd:3')
  // A migrating VM arrives on a port and stays paused until its host takes it over.
  return [...args, ...incoming]
}

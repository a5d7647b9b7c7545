/**
 * Writes a cpio archive in the "newc" format the Linux kernel unpacks as an initramfs. Entries
 * are written in the order given with fixed owners and times, so the same inputs always give the
 * same bytes (and so the same template id).
 */
export type CpioEntry =
  | { type: 'dir', path: string, mode?: number }
  | { type: 'file', path: string, data: Uint8Array, mode?: number }
  | { type: 'symlink', path: string, target: string }
  | { type: 'char', path: string, major: number, minor: number, mode?: number }

const S_IFDIR = 0o040000
const S_IFREG = 0o100000
const S_IFLNK = 0o120000
const S_IFCHR = 0o020000

function hex8 (n: number): string {
  return n.toString(16).padStart(8, '0')
}

function pad4 (n: number): number {
  return (4 - (n % 4)) % 4
}

function header (ino: number, mode: number, size: number, nameSize: number, rdev: [number, number]): string {
  // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check
  return '070701' + [ino, mode, 0, 0, 1, 0, size, 0, 0, rdev[0], rdev[1], nameSize, 0].map(hex8).join('')
}

export function cpioArchive (entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = []
  const push = (ino: number, mode: number, name: string, data: Uint8Array, rdev: [number, number] = [0, 0]): void => {
    const nameBytes = Buffer.from(name + '\0')
    const head = Buffer.from(header(ino, mode, data.byteLength, nameBytes.byteLength, rdev), 'ascii')
    parts.push(head, nameBytes, Buffer.alloc(pad4(head.byteLength + nameBytes.byteLength)), Buffer.from(data), Buffer.alloc(pad4(data.byteLength)))
  }
  entries.forEach((e, i) => {
    const name = e.path.replace(/^\/+/, '')
    if (e.type === 'dir') push(i + 1, S_IFDIR | (e.mode ?? 0o755), name, new Uint8Array())
    else if (e.type === 'file') push(i + 1, S_IFREG | (e.mode ?? 0o644), name, e.data)
    else if (e.type === 'symlink') push(i + 1, S_IFLNK | 0o777, name, Buffer.from(e.target))
    else push(i + 1, S_IFCHR | (e.mode ?? 0o600), name, new Uint8Array(), [e.major, e.minor])
  })
  push(0, 0, 'TRAILER!!!', new Uint8Array())
  return Buffer.concat(parts)
}

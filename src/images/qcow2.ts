import { execFile } from 'node:child_process'
import { open } from 'node:fs/promises'
import { basename } from 'node:path'
import { promisify } from 'node:util'
import { XenosError } from '../core/index.ts'

const MAGIC = 0x514649fb
const EXT_END = 0
const EXT_BACKING_FORMAT = 0xe2792aca
const EXT_DATA_FILE = 0x44415441
/** Incompatible features a tailored disk may use: compression type (bit 3), extended L2 (bit 4). */
const ALLOWED_INCOMPATIBLE = (1n << 3n) | (1n << 4n)
const HEADER_READ = 64 * 1024

export interface Qcow2Facts {
  size: number
  backingFile: string | undefined
  backingFormat: string | undefined
}

/**
 * Reads a qcow2 header and refuses anything that could reach beyond the image: a qcow2 file
 * names its backing file and may name an external data file, and QEMU opens whatever path it is
 * given — so a tailored disk from a peer must name its base exactly, by blob id, and nothing else.
 */
export async function readQcow2 (path: string, what = 'the template\'s qcow2 disk'): Promise<Qcow2Facts> {
  const fh = await open(path, 'r')
  try {
    const buf = Buffer.alloc(HEADER_READ)
    const { bytesRead } = await fh.read(buf, 0, HEADER_READ, 0)
    const bad = (why: string): XenosError => new XenosError('BAD_MANIFEST', `${what} ${why}`)
    if (bytesRead < 104 || buf.readUInt32BE(0) !== MAGIC) throw bad('is not a qcow2 image')
    const version = buf.readUInt32BE(4)
    if (version !== 3) throw bad(`is qcow2 version ${version}; only version 3 is accepted`)
    const backingOffset = Number(buf.readBigUInt64BE(8))
    const backingSize = buf.readUInt32BE(16)
    const size = Number(buf.readBigUInt64BE(24))
    if (buf.readUInt32BE(32) !== 0) throw bad('is encrypted')
    if (buf.readUInt32BE(60) !== 0) throw bad('holds internal snapshots')
    const incompatible = buf.readBigUInt64BE(72)
    if ((incompatible & ~ALLOWED_INCOMPATIBLE) !== 0n) throw bad(`uses incompatible features 0x${incompatible.toString(16)} (dirty, corrupt or an external data file)`)
    const headerLength = buf.readUInt32BE(100)
    let backingFormat: string | undefined
    for (let at = headerLength; ;) {
      if (at + 8 > bytesRead) throw bad('has header extensions beyond its first 64 KiB')
      const type = buf.readUInt32BE(at)
      const length = buf.readUInt32BE(at + 4)
      if (type === EXT_END) break
      if (type === EXT_DATA_FILE) throw bad('names an external data file')
      if (at + 8 + length > bytesRead) throw bad('has a truncated header extension')
      if (type === EXT_BACKING_FORMAT) backingFormat = buf.toString('utf8', at + 8, at + 8 + length)
      at += 8 + Math.ceil(length / 8) * 8
    }
    let backingFile: string | undefined
    if (backingOffset !== 0) {
      if (backingSize > 1023 || backingOffset + backingSize > bytesRead) throw bad('has a malformed backing file name')
      backingFile = buf.toString('utf8', backingOffset, backingOffset + backingSize)
    }
    return { size, backingFile, backingFormat }
  } finally {
    await fh.close()
  }
}

/** Refuses a tailored disk unless it is a qcow2 overlay of `diskBytes` on exactly blob `base` (raw). */
export async function checkTailoredDisk (path: string, base: string, diskBytes: number): Promise<void> {
  const facts = await readQcow2(path)
  const want = base.slice('sha256:'.length)
  if (facts.backingFile !== want || facts.backingFormat !== 'raw') {
    throw new XenosError('BAD_MANIFEST', `the template's qcow2 disk must be an overlay on its base ${base} (backing file "${want}", format raw), not on "${facts.backingFile ?? 'nothing'}" (${facts.backingFormat ?? 'no format'})`)
  }
  if (facts.size !== diskBytes) throw new XenosError('BAD_MANIFEST', `the template's qcow2 disk is ${facts.size} bytes, not the ${diskBytes} its manifest says`)
}

/**
 * Makes the disk of an instance's snapshot taken on another host (its overlay on the template's
 * image there) an overlay on the same image here, at `base`: refused unless it is a plain qcow2
 * overlay naming that image's blob (`format`), wherever the other host keeps it.
 */
export async function adoptOverlay (path: string, base: string, format: string): Promise<void> {
  const facts = await readQcow2(path, 'the snapshot\'s disk')
  if (facts.backingFile === undefined || basename(facts.backingFile) !== basename(base) || facts.backingFormat !== format) {
    throw new XenosError('BAD_MANIFEST', `the snapshot's disk must be an overlay on its template's image ${basename(base)} (${format}), not on "${facts.backingFile ?? 'nothing'}" (${facts.backingFormat ?? 'no format'})`)
  }
  if (facts.backingFile === base) return
  await promisify(execFile)('qemu-img', ['rebase', '-q', '-u', '-f', 'qcow2', '-F', format, '-b', base, path])
}

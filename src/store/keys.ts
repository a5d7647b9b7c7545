import { randomBytes } from 'node:crypto'
import { closeSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { dirname } from 'node:path'
import { generateOwnerKey, ownerKeyFromPem, ownerKeyToPem, XenosError, type OwnerKey } from '../core/index.ts'

/** The ed25519 owner key kept as PEM at `path`, or undefined when there is none yet. */
export function readOwnerKeySync (path: string): OwnerKey | undefined {
  try {
    return ownerKeyFromPem(readFileSync(path, 'utf8'))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

/**
 * An ed25519 owner key kept as PEM at `path` (readable by its user only), created on first use.
 * Synchronous, so that a client can make it the moment it first signs. Written whole beside its
 * place and linked there, which fails if a key is there already: two processes that make it at
 * once end up with the same key, never one each.
 */
export function loadOrCreateOwnerKeySync (path: string): { key: OwnerKey, created: boolean } {
  const existing = readOwnerKeySync(path)
  if (existing !== undefined) return { key: existing, created: false }
  const key = generateOwnerKey()
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`
  const fd = openSync(tmp, 'wx', 0o600)
  try {
    writeSync(fd, ownerKeyToPem(key))
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  try {
    linkSync(tmp, path)
    // The link itself on disk too: a key handed out and then lost in a crash would orphan all it signed.
    const dir = openSync(dirname(path), 'r')
    try {
      fsyncSync(dir)
    } finally {
      closeSync(dir)
    }
    return { key, created: true }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    const made = readOwnerKeySync(path)
    if (made === undefined) throw new XenosError('INTERNAL', `${path} was made and is gone`)
    return { key: made, created: false }
  } finally {
    rmSync(tmp, { force: true })
  }
}

/** loadOrCreateOwnerKeySync, for callers that await. */
export async function loadOrCreateOwnerKey (path: string): Promise<{ key: OwnerKey, created: boolean }> {
  return loadOrCreateOwnerKeySync(path)
}

import { mkdir, readFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { generateOwnerKey, ownerKeyFromPem, ownerKeyToPem, type OwnerKey } from '../core/index.ts'
import { writeFileAtomic } from './files.ts'

/** An ed25519 owner key kept as PEM at `path` (readable by its user only), created on first use. */
export async function loadOrCreateOwnerKey (path: string): Promise<{ key: OwnerKey, created: boolean }> {
  try {
    return { key: ownerKeyFromPem(await readFile(path, 'utf8')), created: false }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  const key = generateOwnerKey()
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  await writeFileAtomic(path, ownerKeyToPem(key), 0o600)
  return { key, created: true }
}

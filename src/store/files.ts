import { randomBytes } from 'node:crypto'
import { open, rename } from 'node:fs/promises'
import { dirname } from 'node:path'

/** Writes a file so that a crash leaves the old content or the new, never a torn mix. */
export async function writeFileAtomic (path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`
  const fh = await open(tmp, 'w', mode)
  try {
    await fh.writeFile(data)
    await fh.sync()
  } finally {
    await fh.close()
  }
  await renameDurably(tmp, path)
}

/**
 * Renames `from` to `to` and syncs the directory that now names it: until then a crash may
 * bring back the old name (or no name at all) even though the file's bytes were synced.
 */
export async function renameDurably (from: string, to: string): Promise<void> {
  await rename(from, to)
  const dir = await open(dirname(to), 'r')
  try {
    await dir.sync()
  } finally {
    await dir.close()
  }
}

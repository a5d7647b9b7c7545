import { mkdir, readFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import { generateOwnerKey, ownerKeyFromPem, ownerKeyToPem, type OwnerKey } from '../core/index.ts'
import { writeFileAtomic } from '../store/index.ts'

export const DEFAULT_KEY_FILE = join(homedir(), '.config', 'xenos', 'user.pem')

/** The user's ed25519 key, created on first use. Its public half is the user's owner id. */
export async function loadOrCreateUserKey (path: string): Promise<{ key: OwnerKey, created: boolean }> {
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

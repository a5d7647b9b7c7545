import { homedir } from 'node:os'
import { join } from 'node:path'
import { loadOrCreateOwnerKey } from '../store/index.ts'

export const DEFAULT_KEY_FILE = join(homedir(), '.config', 'xenos', 'user.pem')

/** The user's ed25519 key, created on first use. Its public half is the user's owner id. */
export const loadOrCreateUserKey = loadOrCreateOwnerKey

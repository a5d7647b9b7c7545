import type { Database } from './database.ts'

/**
 * Signed requests already carried out, by signer and nonce, until their signatures would be too
 * old anyway: a request replayed after a restart, or a kill, is refused as it would have been
 * before. Written on a connection of its own that does not wait for the disk on each commit
 * (`synchronous = NORMAL`): a kill of the process loses nothing the kernel was given; only a
 * power cut may forget the last nonces, whose requests are minutes from expiring.
 */
export class NonceTable {
  readonly #db: Database
  #claims = 0

  constructor (db: Database) {
    this.#db = db
  }

  /** Records `key` until `expiresAt`; false if it was recorded already (a replay). */
  claim (key: string, expiresAt: number, now = Date.now()): boolean {
    if (++this.#claims % 1000 === 0) this.#db.prepare('DELETE FROM nonces WHERE expires_at < ?').run(now)
    const changes = this.#db.prepare('INSERT INTO nonces (key, expires_at) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE nonces.expires_at < ?')
      .run(key, expiresAt, now).changes
    return Number(changes) > 0
  }
}

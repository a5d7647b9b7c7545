import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { chmod, mkdir, open, rename, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { XenosError } from '../core/index.ts'

export const DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/

/**
 * Content-addressed files (kernels, initramfs images, disks) under `DIR/sha256/<hex>`. A blob
 * becomes visible only once all of it is written, synced and verified against its digest, so a
 * crash leaves it complete or absent. Blobs are read-only once stored: instances share them.
 */
export class BlobStore {
  readonly #dir: string

  constructor (dir: string) {
    this.#dir = dir
  }

  path (digest: string): string {
    if (!DIGEST_PATTERN.test(digest)) throw new XenosError('INVALID_ARGUMENT', `"${digest}" is not a sha256 digest`)
    return join(this.#dir, 'sha256', digest.slice(7))
  }

  async has (digest: string): Promise<boolean> {
    return await stat(this.path(digest)).then(() => true, () => false)
  }

  async size (digest: string): Promise<number> {
    return (await stat(this.path(digest))).size
  }

  /** Stores what `source` yields, refusing it unless it hashes to `digest`. */
  async put (digest: string, source: Readable | AsyncIterable<Uint8Array>): Promise<void> {
    const final = this.path(digest)
    if (await this.has(digest)) {
      // Already held: read the upload to its end and keep the copy we have.
      await pipeline(source, createWriteStream('/dev/null'))
      return
    }
    await mkdir(join(this.#dir, 'sha256'), { recursive: true })
    const tmp = join(this.#dir, `.incoming-${randomBytes(6).toString('hex')}`)
    const hash = createHash('sha256')
    try {
      await pipeline(source, async function * (chunks: AsyncIterable<Uint8Array>) {
        for await (const chunk of chunks) {
          hash.update(chunk)
          yield chunk
        }
      }, createWriteStream(tmp))
      const got = `sha256:${hash.digest('hex')}`
      if (got !== digest) throw new XenosError('INVALID_ARGUMENT', `the data hashes to ${got}, not ${digest}`)
      const fh = await open(tmp, 'r')
      await fh.sync()
      await fh.close()
      await chmod(tmp, 0o444)
      await rename(tmp, final)
    } finally {
      await rm(tmp, { force: true })
    }
  }

  /** Stores a local file (hashing it first). Returns its digest. */
  async putFile (path: string): Promise<string> {
    const digest = await digestOfFile(path)
    await this.put(digest, createReadStream(path))
    return digest
  }
}

export async function digestOfFile (path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return `sha256:${hash.digest('hex')}`
}

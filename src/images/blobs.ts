import { createHash, randomBytes } from 'node:crypto'
import { constants, createReadStream, createWriteStream, existsSync } from 'node:fs'
import { chmod, mkdir, open, readdir, readFile, rm, stat, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import {
  BLOB_ID_PATTERN, CHUNK_SIZE, MAX_CHUNKS, XenosError,
  blobIdOf, chunkIndexSchema, chunkLength, type ChunkIndex,
} from '../core/index.ts'
import { renameDurably, writeFileAtomic } from '../store/index.ts'

const ZEROS = Buffer.alloc(CHUNK_SIZE)

/** Called with a blob's id once it is held, while no garbage collection can run. */
export type Keep = (id: string) => void

function isZero (data: Uint8Array): boolean {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).equals(ZEROS.subarray(0, data.byteLength))
}

function sha256 (data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/**
 * Image files (kernels, initramfs images, disks) stored whole, because QEMU opens them as files,
 * and addressed by their chunk index (see core/chunks.ts):
 *
 *   DIR/sha256/<hex>       complete blobs, read-only, shared by every instance that uses them
 *   DIR/index/<hex>.json   the chunk index of each complete or partial blob
 *   DIR/partial/<hex>      blobs being fetched, filled chunk by chunk at their offsets
 *
 * A blob becomes complete only once every chunk is written, verified and synced, so a crash leaves
 * it complete or partial, never half-visible; a partial blob resumes with the chunks it holds.
 * Zero chunks are holes, and a chunk this host already holds in any blob is copied, not fetched.
 */
export class BlobStore {
  readonly #dir: string
  readonly #partials = new Map<string, Promise<PartialBlob>>()
  readonly #indexes = new Map<string, ChunkIndex>()
  /** Where each chunk of a complete blob can be read locally: chunk hex → blob id and position. */
  #chunks: Map<string, { id: string, i: number }> | undefined
  /** Completing a blob and collecting garbage take turns, so that a new blob is claimed before a collection can see it. */
  #lock: Promise<void> = Promise.resolve()

  constructor (dir: string) {
    this.#dir = dir
  }

  path (id: string): string {
    return join(this.#dir, 'sha256', hexOf(id))
  }

  #indexPath (id: string): string {
    return join(this.#dir, 'index', `${hexOf(id)}.json`)
  }

  #partialPath (id: string): string {
    return join(this.#dir, 'partial', hexOf(id))
  }

  async has (id: string): Promise<boolean> {
    return await stat(this.path(id)).then(() => true, () => false)
  }

  async size (id: string): Promise<number> {
    return (await stat(this.path(id))).size
  }

  /** The chunk index of a complete or partial blob held here (indexes never change: kept once read). */
  async index (id: string): Promise<ChunkIndex | undefined> {
    const known = this.#indexes.get(id)
    if (known !== undefined) return known
    try {
      const index = chunkIndexSchema.parse(JSON.parse(await readFile(this.#indexPath(id), 'utf8')))
      this.#indexes.set(id, index)
      return index
    } catch {
      return undefined
    }
  }

  /** Which chunks of `id` this host can serve: all of a complete blob, those held of a partial one. */
  async holding (id: string): Promise<boolean[] | undefined> {
    const partial = this.#partials.get(id)
    if (partial !== undefined) return [...(await partial).have]
    const index = await this.has(id) ? await this.index(id) : undefined
    return index?.chunks.map(() => true)
  }

  /** Chunk `i` of blob `id`, checked against the index as it is read; undefined if not held. */
  async readChunk (id: string, i: number): Promise<Buffer | undefined> {
    const partial = this.#partials.get(id)
    if (partial !== undefined) return await (await partial).read(i)
    if (!await this.has(id)) return undefined
    const index = await this.index(id)
    if (index === undefined || i < 0 || i >= index.chunks.length) return undefined
    const data = await readAt(this.path(id), i * index.chunkSize, chunkLength(index, i))
    if (sha256(data) !== index.chunks[i]) throw new XenosError('BLOB_CORRUPT', `chunk ${i} of blob ${id} on this host does not match its index: remove the template and fetch it again`)
    return data
  }

  /**
   * Stores what `source` yields as blob `id`, refusing it unless its chunk index hashes to `id`.
   * `keep` is called once the blob is held (also when it was already), before any garbage
   * collection can run: that is where whatever needs the blob says so.
   */
  async put (id: string, source: AsyncIterable<Uint8Array>, keep?: Keep): Promise<void> {
    hexOf(id)
    if (await this.has(id)) {
      // Already held: read the upload to its end and keep the copy we have.
      await pipeline(source, createWriteStream('/dev/null'))
      await this.#exclusive(async () => { keep?.(id) })
      return
    }
    await this.#write(source, id, keep)
  }

  /** Stores a local file. Returns its blob id (`keep` as for `put`). */
  async putFile (path: string, keep?: Keep): Promise<string> {
    return await this.#write(createReadStream(path), undefined, keep)
  }

  /**
   * Stores the file at `path` by moving it into the store: its bytes are read once (for the chunk
   * index and their SHA-256) and never written again (copied only from another file system).
   * With `expectSha256`, a file whose bytes hash otherwise is refused and left where it is.
   */
  async adopt (path: string, expectSha256?: string, keep?: (id: string, sha256: string) => void): Promise<{ id: string, sha256: string }> {
    const whole = createHash('sha256')
    const chunks: string[] = []
    let size = 0
    for await (const data of chunksOf(createReadStream(path))) {
      whole.update(data)
      chunks.push(sha256(data))
      size += data.byteLength
    }
    const digest = whole.digest('hex')
    if (expectSha256 !== undefined && digest !== expectSha256) throw new XenosError('INVALID_ARGUMENT', `the bytes hash to ${digest}, not the declared ${expectSha256}`)
    const index: ChunkIndex = { v: 1, size, chunkSize: CHUNK_SIZE, chunks }
    const id = blobIdOf(index)
    const fh = await open(path, 'r')
    try {
      await fh.sync()
    } finally {
      await fh.close()
    }
    const kept = (blob: string): void => { keep?.(blob, digest) }
    try {
      await this.#exclusive(async () => {
        await this.#complete(id, index, path)
        kept(id)
      })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err
      await this.#write(createReadStream(path), id, kept)
    }
    return { id, sha256: digest }
  }

  /** Runs `fn` while no garbage collection runs (see `gc`). */
  async #exclusive<T> (fn: () => Promise<T>): Promise<T> {
    const before = this.#lock
    let release = (): void => {}
    this.#lock = new Promise(resolve => { release = resolve })
    await before
    try {
      return await fn()
    } finally {
      release()
    }
  }

  async #write (source: AsyncIterable<Uint8Array>, expected?: string, keep?: Keep): Promise<string> {
    await mkdir(join(this.#dir, 'sha256'), { recursive: true })
    const tmp = join(this.#dir, `.incoming-${randomBytes(6).toString('hex')}`)
    const fh = await open(tmp, 'w')
    const chunks: string[] = []
    let size = 0
    try {
      for await (const data of chunksOf(source)) {
        chunks.push(sha256(data))
        if (!isZero(data)) await fh.write(data, 0, data.byteLength, size)
        size += data.byteLength
      }
      const index: ChunkIndex = { v: 1, size, chunkSize: CHUNK_SIZE, chunks }
      const id = blobIdOf(index)
      if (expected !== undefined && id !== expected) throw new XenosError('INVALID_ARGUMENT', `the data has blob id ${id}, not ${expected}`)
      await fh.truncate(size)
      await fh.sync()
      await fh.close()
      await this.#exclusive(async () => {
        await this.#complete(id, index, tmp)
        keep?.(id)
      })
      return id
    } finally {
      await fh.close().catch(() => {})
      await rm(tmp, { force: true })
    }
  }

  async #complete (id: string, index: ChunkIndex, file: string): Promise<void> {
    await mkdir(join(this.#dir, 'index'), { recursive: true })
    await mkdir(join(this.#dir, 'sha256'), { recursive: true })
    await writeFileAtomic(this.#indexPath(id), JSON.stringify(index))
    await chmod(file, 0o444)
    await renameDurably(file, this.path(id))
    index.chunks.forEach((hex, i) => this.#chunks?.set(hex, { id, i }))
  }

  /**
   * Opens blob `id` for filling, resuming a partial one: the chunks already in it (checked against
   * the index), zero chunks and chunks held in other local blobs count as held at once.
   */
  async openPartial (id: string, index: ChunkIndex): Promise<PartialBlob> {
    if (blobIdOf(index) !== id) throw new XenosError('PEER_PROTOCOL', `the chunk index given does not belong to blob ${id}`)
    let open = this.#partials.get(id)
    if (open === undefined) {
      open = this.#openPartial(id, index)
      this.#partials.set(id, open)
      open.catch(() => { this.#partials.delete(id) })
    }
    return await open
  }

  async #openPartial (id: string, index: ChunkIndex): Promise<PartialBlob> {
    await mkdir(join(this.#dir, 'partial'), { recursive: true })
    await mkdir(join(this.#dir, 'index'), { recursive: true })
    await writeFileAtomic(this.#indexPath(id), JSON.stringify(index))
    const path = this.#partialPath(id)
    const resumed = existsSync(path)
    const fh = await open(path, constants.O_RDWR | constants.O_CREAT, 0o644)
    await fh.truncate(index.size)
    // A new partial blob is all zeros: only its zero chunks are held, and nothing needs reading.
    const zero = new Map<number, string>()
    const isZeroChunk = (hex: string, length: number): boolean => {
      if (!zero.has(length)) zero.set(length, sha256(ZEROS.subarray(0, length)))
      return zero.get(length) === hex
    }
    const have = resumed
      ? await Promise.all(index.chunks.map(async (hex, i) => sha256(await readHandleAt(fh, i * index.chunkSize, chunkLength(index, i))) === hex))
      : index.chunks.map((hex, i) => isZeroChunk(hex, chunkLength(index, i)))
    const partial = new PartialBlob(id, index, fh, have, async () => {
      await this.#exclusive(async () => {
        await this.#complete(id, index, path)
        this.#partials.delete(id)
      })
    })
    const local = await this.#localChunks()
    for (const [i, hex] of index.chunks.entries()) {
      const at = local.get(hex)
      if (have[i] === true || at === undefined) continue
      const data = await this.readChunk(at.id, at.i).catch(() => undefined)
      if (data !== undefined) await partial.write(i, data)
    }
    return partial
  }

  async #localChunks (): Promise<Map<string, { id: string, i: number }>> {
    if (this.#chunks === undefined) {
      const map = new Map<string, { id: string, i: number }>()
      for (const id of await this.list()) (await this.index(id))?.chunks.forEach((hex, i) => map.set(hex, { id, i }))
      this.#chunks = map
    }
    return this.#chunks
  }

  /** Lets go of partial blobs (they resume when opened again). */
  async close (): Promise<void> {
    const open = [...this.#partials.values()]
    this.#partials.clear()
    for (const p of await Promise.allSettled(open)) if (p.status === 'fulfilled') await p.value.close()
  }

  /** Ids of the complete blobs held here. */
  async list (): Promise<string[]> {
    const names = await readdir(join(this.#dir, 'sha256')).catch(() => [])
    return names.filter(n => /^[0-9a-f]{64}$/.test(n)).map(n => `sha256:${n}`)
  }

  /**
   * Removes every blob, complete or partial, that is not in `keep` (asked once no blob is being
   * completed), and returns what went. A partial blob being filled right now is always kept.
   */
  async gc (keeping: () => ReadonlySet<string>): Promise<{ removed: string[], bytes: number }> {
    return await this.#exclusive(async () => await this.#gc(keeping()))
  }

  async #gc (keep: ReadonlySet<string>): Promise<{ removed: string[], bytes: number }> {
    const partials = (await readdir(join(this.#dir, 'partial')).catch(() => [])).map(n => `sha256:${n}`)
    const removed: string[] = []
    let bytes = 0
    for (const id of [...await this.list(), ...partials]) {
      if (keep.has(id) || this.#partials.has(id) || !BLOB_ID_PATTERN.test(id)) continue
      for (const path of [this.path(id), this.#partialPath(id)]) {
        bytes += await stat(path).then(s => s.blocks * 512, () => 0)
        await rm(path, { force: true })
      }
      await rm(this.#indexPath(id), { force: true })
      this.#indexes.delete(id)
      removed.push(id)
    }
    if (removed.length > 0) this.#chunks = undefined
    return { removed, bytes }
  }
}

/** A blob being filled: which chunks it holds, and a way to add the others. */
export class PartialBlob {
  readonly id: string
  readonly index: ChunkIndex
  readonly have: boolean[]
  readonly #fh: FileHandle
  readonly #finish: () => Promise<void>
  #done: Promise<void> | undefined

  constructor (id: string, index: ChunkIndex, fh: FileHandle, have: boolean[], finish: () => Promise<void>) {
    this.id = id
    this.index = index
    this.#fh = fh
    this.have = have
    this.#finish = finish
  }

  get missing (): number[] {
    return this.have.flatMap((held, i) => held ? [] : [i])
  }

  get heldBytes (): number {
    return this.have.reduce((n, held, i) => held ? n + chunkLength(this.index, i) : n, 0)
  }

  /** Adds chunk `i`, refusing data that does not match the index. */
  async write (i: number, data: Uint8Array): Promise<void> {
    if (!Number.isInteger(i) || i < 0 || i >= this.index.chunks.length) throw new XenosError('PEER_PROTOCOL', `blob ${this.id} has no chunk ${i}`)
    if (this.have[i] === true) return
    if (data.byteLength !== chunkLength(this.index, i) || sha256(data) !== this.index.chunks[i]) {
      throw new XenosError('PEER_PROTOCOL', `chunk ${i} of blob ${this.id} does not match its index`)
    }
    if (!isZero(data)) await this.#fh.write(data, 0, data.byteLength, i * this.index.chunkSize)
    this.have[i] = true
  }

  async read (i: number): Promise<Buffer | undefined> {
    if (this.have[i] !== true) return undefined
    return await readHandleAt(this.#fh, i * this.index.chunkSize, chunkLength(this.index, i))
  }

  async close (): Promise<void> {
    if (this.#done === undefined) await this.#fh.close().catch(() => {})
  }

  /** Makes the blob complete once every chunk is held: synced, read-only, at its final path. */
  async complete (): Promise<void> {
    const missing = this.missing.length
    if (missing > 0) throw new XenosError('INTERNAL', `blob ${this.id} still lacks ${missing} chunk(s)`)
    this.#done ??= (async () => {
      await this.#fh.sync()
      await this.#finish()
      await this.#fh.close()
    })()
    await this.#done
  }
}

/** Cuts a byte stream into chunks of CHUNK_SIZE (the last one shorter), refusing more than MAX_CHUNKS. */
async function * chunksOf (source: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer> {
  let buffer = Buffer.allocUnsafe(CHUNK_SIZE)
  let filled = 0
  let count = 0
  const full = (): Buffer => {
    if (++count > MAX_CHUNKS) throw new XenosError('INVALID_ARGUMENT', `image files are limited to ${MAX_CHUNKS * CHUNK_SIZE / 2 ** 30} GiB`)
    const out = buffer.subarray(0, filled)
    buffer = Buffer.allocUnsafe(CHUNK_SIZE)
    filled = 0
    return out
  }
  for await (const piece of source) {
    let offset = 0
    while (offset < piece.byteLength) {
      const n = Math.min(CHUNK_SIZE - filled, piece.byteLength - offset)
      buffer.set(piece.subarray(offset, offset + n), filled)
      filled += n
      offset += n
      if (filled === CHUNK_SIZE) yield full()
    }
  }
  if (filled > 0) yield full()
}

/** The blob id a file would have, without storing it. */
export async function blobIdOfFile (path: string): Promise<string> {
  const chunks: string[] = []
  let size = 0
  for await (const data of chunksOf(createReadStream(path))) {
    chunks.push(sha256(data))
    size += data.byteLength
  }
  return blobIdOf({ v: 1, size, chunkSize: CHUNK_SIZE, chunks })
}

function hexOf (id: string): string {
  if (!BLOB_ID_PATTERN.test(id)) throw new XenosError('INVALID_ARGUMENT', `"${id}" is not a blob id (sha256: and 64 hex digits)`)
  return id.slice(7)
}

async function readHandleAt (fh: FileHandle, position: number, length: number): Promise<Buffer> {
  const data = Buffer.alloc(length)
  let got = 0
  while (got < length) {
    const { bytesRead } = await fh.read(data, got, length - got, position + got)
    if (bytesRead === 0) break
    got += bytesRead
  }
  return data
}

async function readAt (path: string, position: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r')
  try {
    return await readHandleAt(fh, position, length)
  } finally {
    await fh.close()
  }
}

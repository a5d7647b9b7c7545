import { randomBytes } from 'node:crypto'
import { mkdir, open, readdir, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { checkDataPath, formatDataUri, XenosError, type DataFileView } from '../core/index.ts'
import type { DataFileRecord, DataGrantRecord, DataRights, DataUploadRecord, Store } from '../store/index.ts'

/** Where file contents are kept: the host's blob store. */
export interface ContentStore {
  /**
   * Stores the file at `path` by moving it in (refused, and left, if it does not hash to
   * `expectSha256`); `keep` is called with its blob id and SHA-256 before anything can collect it.
   */
  adopt: (path: string, expectSha256: string | undefined, keep: (id: string, sha256: string) => void) => Promise<{ id: string, sha256: string }>
  /** Where blob `id`'s bytes are, once stored. */
  path: (id: string) => string
}

export interface DataRepositoryInit {
  store: Pick<Store, 'data' | 'transaction'>
  blobs: ContentStore
  /** Where the bytes of uploads under way are kept (one part file each). */
  uploadsDir: string
  /** Throws QUOTA_EXCEEDED unless `owner` may keep `bytes` more on this host, for `what`. */
  quota: (owner: string, bytes: number, what: string) => void
  hostId: string
  /** Told of every file stored (so the host can announce it). */
  onStored: (file: { owner: string, path: string }) => void
  /** Told of every file deleted (so the host can drop content nothing else needs). */
  onRemoved: (file: { owner: string, path: string, blob: string }) => void
}

/** An upload under way, as the API shows it. */
export interface DataUploadView {
  id: string
  uri: string
  size: number
  sha256: string
  /** Bytes received so far: the next write starts here. */
  offset: number
}

/** A file and where its bytes are. */
export interface DataContent {
  file: DataFileView
  blob: string
  blobPath: string
}

const UPLOAD_ID_PATTERN = /^u-[0-9a-f]{32}$/
const SHA256_PATTERN = /^[0-9a-f]{64}$/
/** Chunk indexes bound a blob (see core/chunks.ts). */
const MAX_FILE_BYTES = 64 * 2 ** 30

/**
 * A host's data repository: files in owners' namespaces (`data://OWNER/PATH`), their content
 * kept as blobs in the host's blob store, so identical content is stored once and other hosts
 * fetch it chunk by chunk, verified. Uploads are resumable: their bytes go to a part file that
 * is synced after every write, and a file appears only once all of it has arrived and hashes to
 * the SHA-256 the uploader declared; a crash leaves an upload to resume, never half a file.
 * Only an owner, or a key the owner granted access, may list, read, write or delete its files.
 */
export class DataRepository {
  readonly #init: DataRepositoryInit
  /** Uploads with a write or completion under way: one at a time each. */
  readonly #busy = new Set<string>()

  constructor (init: DataRepositoryInit) {
    this.#init = init
  }

  /** After a restart: part files no upload names are the debris of an upload begun or ended as the host stopped. */
  async recover (): Promise<void> {
    await mkdir(this.#init.uploadsDir, { recursive: true })
    const known = new Set(this.#init.store.data.uploads().map(u => u.id))
    const parts = new Set(await readdir(this.#init.uploadsDir))
    for (const name of parts) {
      if (!known.has(name)) await rm(join(this.#init.uploadsDir, name), { force: true })
    }
    // A part file moves into the blob store when its upload completes: an upload without one was
    // cut short while completing, and is sent again whole.
    for (const id of known) if (!parts.has(id)) this.#init.store.data.removeUpload(id)
  }

  /**
   * Begins an upload of `size` bytes hashing to `sha256` to `path` in `owner`'s namespace, by
   * `requester`; an upload of the same content to the same path that is under way already is
   * resumed instead (its offset says where).
   */
  async startUpload (requester: string, owner: string, path: string, size: number, sha256: string): Promise<DataUploadView> {
    checkDataPath(path)
    this.#authorise(requester, owner, path, 'write')
    if (!Number.isSafeInteger(size) || size < 0 || size > MAX_FILE_BYTES) throw new XenosError('INVALID_ARGUMENT', `a file's size must be 0 to ${MAX_FILE_BYTES} bytes, not ${size}`)
    if (!SHA256_PATTERN.test(sha256)) throw new XenosError('INVALID_ARGUMENT', 'sha256 must be 64 lowercase hex digits')
    const under = this.#init.store.data.uploadOf(owner, path, size, sha256)
    if (under !== undefined) return { ...this.#viewOfUpload(under), offset: await this.#received(under.id) }
    this.#checkQuota(owner, path, size)
    const upload: DataUploadRecord = { id: `u-${randomBytes(16).toString('hex')}`, owner, path, size, sha256, createdAt: Date.now() }
    await mkdir(this.#init.uploadsDir, { recursive: true })
    // The part file first: a crash before the row leaves a file that recover() removes.
    await (await open(this.#partOf(upload.id), 'wx')).close()
    try {
      // Checked again with nothing awaited before the row is written: uploads begun meanwhile count.
      this.#checkQuota(owner, path, size)
    } catch (err) {
      await rm(this.#partOf(upload.id), { force: true })
      throw err
    }
    this.#init.store.data.putUpload(upload)
    return { ...this.#viewOfUpload(upload), offset: 0 }
  }

  async upload (requester: string, id: string): Promise<DataUploadView> {
    const u = this.#upload(requester, id)
    return { ...this.#viewOfUpload(u), offset: await this.#received(u.id) }
  }

  /** Appends `body` to upload `id`, which must hold exactly `offset` bytes so far; synced before it answers. */
  async write (requester: string, id: string, offset: number, body: AsyncIterable<Uint8Array>): Promise<DataUploadView> {
    const u = this.#upload(requester, id)
    return await this.#exclusive(id, async () => {
      const received = await this.#received(id)
      if (offset !== received) throw new XenosError('INVALID_STATE', `upload ${id} holds ${received} bytes: send the rest from offset ${received}`, { offset: received })
      const fh = await open(this.#partOf(id), 'r+')
      let position = received
      try {
        for await (const piece of body) {
          if (position + piece.byteLength > u.size) throw new XenosError('INVALID_ARGUMENT', `upload ${id} was declared ${u.size} bytes long; these bytes would make it longer`)
          await fh.write(piece, 0, piece.byteLength, position)
          position += piece.byteLength
        }
      } finally {
        // What arrived stays, even when the sender went away: the upload resumes from there.
        await fh.sync().catch(() => {})
        await fh.close()
      }
      return { ...this.#viewOfUpload(u), offset: position }
    })
  }

  /** Turns a fully received upload into a file, if its bytes hash to what was declared. */
  async complete (requester: string, id: string): Promise<DataFileView> {
    const u = this.#upload(requester, id)
    return await this.#exclusive(id, async () => {
      const received = await this.#received(id)
      if (received !== u.size) throw new XenosError('INVALID_STATE', `upload ${id} holds ${received} of its ${u.size} bytes: send the rest from offset ${received}`, { offset: received })
      // The part file becomes the blob: its bytes are not copied again.
      let file: DataFileRecord | undefined
      let replaced: DataFileRecord | undefined
      await this.#init.blobs.adopt(this.#partOf(id), u.sha256, (blob, sha256) => {
        file = { owner: u.owner, path: u.path, blob, size: u.size, sha256, updatedAt: Date.now() }
        const stored = file
        replaced = this.#init.store.transaction(() => {
          const before = this.#init.store.data.file(u.owner, u.path)
          this.#init.store.data.putFile(stored)
          this.#init.store.data.removeUpload(id)
          return before
        })
      }).catch(async (err: unknown) => {
        if (!(err instanceof XenosError)) throw err
        await this.#discard(id)
        throw new XenosError('INVALID_ARGUMENT', `upload ${id} is not the file declared (${err.message}): the upload is dropped; upload the file again`)
      })
      if (file === undefined) throw new XenosError('INTERNAL', `upload ${id} was stored without a record`)
      await rm(this.#partOf(id), { force: true })
      this.#stored(file, replaced)
      return this.#viewOfFile(file)
    })
  }

  /** Stores the local file `file` (a task's output, moved into the blob store) as `path` in `owner`'s namespace, by `requester`. */
  async storeLocal (requester: string, owner: string, path: string, file: string, size: number): Promise<DataFileView> {
    checkDataPath(path)
    this.#authorise(requester, owner, path, 'write')
    this.#checkQuota(owner, path, size)
    let record: DataFileRecord | undefined
    let replaced: DataFileRecord | undefined
    await this.#init.blobs.adopt(file, undefined, (blob, sha256) => {
      record = { owner, path, blob, size, sha256, updatedAt: Date.now() }
      replaced = this.#init.store.data.file(owner, path)
      this.#init.store.data.putFile(record)
    })
    if (record === undefined) throw new XenosError('INTERNAL', `${formatDataUri({ owner, path })} was stored without a record`)
    this.#stored(record, replaced)
    return this.#viewOfFile(record)
  }

  /** A file is stored, maybe in place of another whose content may now be needed by nothing. */
  #stored (file: DataFileRecord, replaced: DataFileRecord | undefined): void {
    this.#init.onStored(file)
    if (replaced !== undefined && replaced.blob !== file.blob) this.#init.onRemoved(replaced)
  }

  async cancel (requester: string, id: string): Promise<void> {
    this.#upload(requester, id)
    await this.#exclusive(id, async () => { await this.#discard(id) })
  }

  file (requester: string, owner: string, path: string): DataFileView {
    return this.#viewOfFile(this.#file(requester, owner, path))
  }

  /** The file, the blob holding its bytes and where that is on this host. */
  content (requester: string, owner: string, path: string): DataContent {
    const f = this.#file(requester, owner, path)
    return { file: this.#viewOfFile(f), blob: f.blob, blobPath: this.#init.blobs.path(f.blob) }
  }

  /** Every file here, for announcing them on the overlay. */
  all (): Array<{ owner: string, path: string }> {
    return this.#init.store.data.everyFile()
  }

  list (requester: string, owner: string, prefix: string, limit: number): DataFileView[] {
    checkDataPath(prefix, true)
    this.#authorise(requester, owner, prefix, 'read')
    return this.#init.store.data.files(owner, prefix, limit).map(f => this.#viewOfFile(f))
  }

  remove (requester: string, owner: string, path: string): void {
    checkDataPath(path)
    this.#authorise(requester, owner, path, 'write')
    const f = this.#init.store.data.file(owner, path)
    if (f === undefined || !this.#init.store.data.removeFile(owner, path)) throw this.#notFound(owner, path)
    this.#init.onRemoved(f)
  }

  /** Lets `grantee` read (or also write) everything in `owner`'s namespace on this host; signed by the owner. */
  grant (owner: string, grantee: string, rights: DataRights): DataGrantRecord {
    if (grantee === owner) throw new XenosError('INVALID_ARGUMENT', 'an owner needs no grant for its own data')
    const g: DataGrantRecord = { owner, grantee, rights, createdAt: Date.now() }
    this.#init.store.data.putGrant(g)
    return g
  }

  revoke (owner: string, grantee: string): void {
    if (!this.#init.store.data.removeGrant(owner, grantee)) throw new XenosError('DATA_NOT_FOUND', `${grantee} holds no grant to ${owner}'s data on host ${this.#init.hostId}`)
  }

  grants (owner: string): DataGrantRecord[] {
    return this.#init.store.data.grants(owner)
  }

  /** Blobs the repository's files name, which the blob store must keep. */
  blobsInUse (): Set<string> {
    return this.#init.store.data.blobs()
  }

  #file (requester: string, owner: string, path: string): DataFileRecord {
    checkDataPath(path)
    this.#authorise(requester, owner, path, 'read')
    const f = this.#init.store.data.file(owner, path)
    if (f === undefined) throw this.#notFound(owner, path)
    return f
  }

  #upload (requester: string, id: string): DataUploadRecord {
    if (!UPLOAD_ID_PATTERN.test(id)) throw new XenosError('INVALID_ARGUMENT', `"${id.slice(0, 40)}" is not an upload id`)
    const u = this.#init.store.data.upload(id)
    if (u === undefined) throw new XenosError('DATA_NOT_FOUND', `no upload ${id} is under way on host ${this.#init.hostId}: it completed, was dropped, or began elsewhere`)
    this.#authorise(requester, u.owner, u.path, 'write')
    return u
  }

  #checkQuota (owner: string, path: string, size: number): void {
    // What the file replaces stops counting once it is stored.
    const replaced = this.#init.store.data.file(owner, path)?.size ?? 0
    this.#init.quota(owner, Math.max(0, size - replaced), formatDataUri({ owner, path }))
  }

  #authorise (requester: string, owner: string, path: string, need: DataRights): void {
    if (requester === owner) return
    const g = this.#init.store.data.grant(owner, requester)
    if (g !== undefined && (need === 'read' || g.rights === 'write')) return
    throw new XenosError('FORBIDDEN', `${formatDataUri({ owner, path })} belongs to another owner, who has not granted your key (${requester}) ${need} access`)
  }

  async #exclusive<T> (id: string, fn: () => Promise<T>): Promise<T> {
    if (this.#busy.has(id)) throw new XenosError('INVALID_STATE', `upload ${id} is being written or completed by another request: wait for it, then ask where it stands`)
    this.#busy.add(id)
    try {
      return await fn()
    } finally {
      this.#busy.delete(id)
    }
  }

  async #received (id: string): Promise<number> {
    return await stat(this.#partOf(id)).then(s => s.size, () => 0)
  }

  async #discard (id: string): Promise<void> {
    this.#init.store.data.removeUpload(id)
    await rm(this.#partOf(id), { force: true })
  }

  #partOf (id: string): string {
    return join(this.#init.uploadsDir, id)
  }

  #notFound (owner: string, path: string): XenosError {
    return new XenosError('DATA_NOT_FOUND', `there is no ${formatDataUri({ owner, path })} on host ${this.#init.hostId}: list the owner's files with "xenos data ls"`)
  }

  #viewOfUpload (u: DataUploadRecord): Omit<DataUploadView, 'offset'> {
    return { id: u.id, uri: formatDataUri(u), size: u.size, sha256: u.sha256 }
  }

  #viewOfFile (f: DataFileRecord): DataFileView {
    return { uri: formatDataUri(f), owner: f.owner, path: f.path, size: f.size, sha256: f.sha256, host: this.#init.hostId, updatedAt: f.updatedAt }
  }
}


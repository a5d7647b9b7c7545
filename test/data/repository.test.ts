import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { generateOwnerKey, parseDataUri, XenosError } from '../../src/core/index.ts'
import { DataRepository } from '../../src/data/index.ts'
import { BlobStore } from '../../src/images/index.ts'
import { openStore, type Store } from '../../src/store/index.ts'
import { tempDir } from '../helpers/cluster.ts'

const alice = generateOwnerKey().id
const bob = generateOwnerKey().id
const mallory = generateOwnerKey().id

/** A repository on a fresh host directory; `open` again on the same directory is the host after a restart. */
async function host (quotaBytes = 64 * 2 ** 20): Promise<{ dir: string, open: () => Promise<{ repo: DataRepository, store: Store }> }> {
  const dir = await tempDir('data')
  return {
    dir,
    open: async () => {
      const store = openStore(join(dir, 'state.db'))
      const quota = (owner: string, bytes: number, what: string): void => {
        if (store.data.bytesOf(owner) + bytes > quotaBytes) throw new XenosError('QUOTA_EXCEEDED', `${what} does not fit in the quota`)
      }
      const repo = new DataRepository({ store, blobs: new BlobStore(join(dir, 'blobs')), uploadsDir: join(dir, 'uploads'), quota, hostId: 'host-1', onStored: () => {}, onRemoved: () => {} })
      await repo.recover()
      return { repo, store }
    },
  }
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')
async function * bytes (b: Buffer): AsyncGenerator<Uint8Array> { yield b }

describe('data repository', () => {
  it('stores a file uploaded in pieces, reads it back whole, and lists it', async () => {
    const { repo } = await (await host()).open()
    const content = randomBytes(3 * 2 ** 20 + 17)
    const up = await repo.startUpload(alice, alice, 'inputs/video.bin', content.length, sha(content))
    assert.equal(up.offset, 0)
    assert.equal(up.uri, `data://${alice}/inputs/video.bin`)
    const half = await repo.write(alice, up.id, 0, bytes(content.subarray(0, 2 ** 20)))
    assert.equal(half.offset, 2 ** 20)
    await repo.write(alice, up.id, half.offset, bytes(content.subarray(half.offset)))
    const file = await repo.complete(alice, up.id)
    assert.equal(file.size, content.length)
    assert.equal(file.sha256, sha(content))
    assert.ok((await readFile(repo.content(alice, alice, 'inputs/video.bin').blobPath)).equals(content))
    assert.deepEqual(repo.list(alice, alice, '', 100).map(f => f.path), ['inputs/video.bin'])
    assert.deepEqual(repo.list(alice, alice, 'inputs', 100).map(f => f.path), ['inputs/video.bin'])
    assert.deepEqual(repo.list(alice, alice, 'input', 100), [], 'a prefix is a whole directory, not part of a name')
    assert.ok(repo.blobsInUse().size === 1)
    await assert.rejects(repo.upload(alice, up.id), /DATA_NOT_FOUND|no upload/)
  })

  it('refuses a write at the wrong offset, bytes beyond the declared size, and content that does not hash as declared', async () => {
    const { repo } = await (await host()).open()
    const content = randomBytes(1000)
    const up = await repo.startUpload(alice, alice, 'a.bin', content.length, sha(content))
    await assert.rejects(repo.write(alice, up.id, 10, bytes(content)), (err: any) => err.code === 'INVALID_STATE' && err.details.offset === 0)
    await assert.rejects(repo.write(alice, up.id, 0, bytes(Buffer.concat([content, Buffer.from('x')]))), /declared 1000 bytes/)
    await assert.rejects(repo.complete(alice, up.id), /holds 0 of its 1000 bytes|holds \d+ of its 1000/)
    const wrong = await repo.startUpload(alice, alice, 'b.bin', content.length, sha(Buffer.from('something else')))
    await repo.write(alice, wrong.id, 0, bytes(content))
    await assert.rejects(repo.complete(alice, wrong.id), /hash to/)
    assert.throws(() => repo.file(alice, alice, 'b.bin'), /DATA_NOT_FOUND|there is no/)
  })

  it('resumes an upload after a restart and never shows a half-uploaded file', async () => {
    const h = await host()
    const first = await h.open()
    const content = randomBytes(2 * 2 ** 20)
    const up = await first.repo.startUpload(alice, alice, 'big.bin', content.length, sha(content))
    // The sender is cut off halfway: what arrived is kept.
    async function * cut (): AsyncGenerator<Uint8Array> {
      yield content.subarray(0, 700_000)
      throw new Error('connection reset')
    }
    await assert.rejects(first.repo.write(alice, up.id, 0, cut()), /connection reset/)
    first.store.close()

    const { repo } = await h.open()
    assert.throws(() => repo.file(alice, alice, 'big.bin'), /there is no/)
    assert.deepEqual(repo.list(alice, alice, '', 10), [])
    const status = await repo.upload(alice, up.id)
    assert.equal(status.offset, 700_000)
    await repo.write(alice, up.id, status.offset, bytes(content.subarray(status.offset)))
    assert.equal((await repo.complete(alice, up.id)).sha256, sha(content))
  })

  it('removes part files no upload names when the host starts', async () => {
    const h = await host()
    const { store } = await h.open()
    store.close()
    await writeFile(join(h.dir, 'uploads', 'u-00000000000000000000000000000000'), 'debris')
    await h.open()
    assert.deepEqual(await readdir(join(h.dir, 'uploads')), [])
  })

  it('drops an upload whose part file had moved into the blob store when the host stopped, so that it is sent again', async () => {
    const h = await host()
    const first = await h.open()
    const content = Buffer.from('cut short while completing')
    const up = await first.repo.startUpload(alice, alice, 'cut.txt', content.length, sha(content))
    await first.repo.write(alice, up.id, 0, bytes(content))
    // As a kill between the move of the part file and the transaction that records the file leaves it.
    await rm(join(h.dir, 'uploads', up.id))
    first.store.close()
    const { repo } = await h.open()
    const again = await repo.startUpload(alice, alice, 'cut.txt', content.length, sha(content))
    assert.notEqual(again.id, up.id)
    assert.equal(again.offset, 0)
    await repo.write(alice, again.id, 0, bytes(content))
    assert.equal((await repo.complete(alice, again.id)).sha256, sha(content))
  })

  it('lets only the owner and the keys it granted list, read, write or delete', async () => {
    const { repo } = await (await host()).open()
    const content = Buffer.from('secret')
    const up = await repo.startUpload(alice, alice, 'secret.txt', content.length, sha(content))
    await repo.write(alice, up.id, 0, bytes(content))
    await repo.complete(alice, up.id)
    assert.throws(() => repo.list(mallory, alice, '', 10), /FORBIDDEN|not granted/)
    assert.throws(() => repo.file(mallory, alice, 'secret.txt'), /not granted/)
    assert.throws(() => repo.remove(mallory, alice, 'secret.txt'), /not granted/)
    await assert.rejects(repo.startUpload(mallory, alice, 'secret.txt', 1, sha(Buffer.from('x'))), /not granted/)
    const pending = await repo.startUpload(alice, alice, 'later.txt', 1, sha(Buffer.from('x')))
    await assert.rejects(repo.write(mallory, pending.id, 0, bytes(Buffer.from('x'))), /not granted/)
    await assert.rejects(repo.complete(mallory, pending.id), /not granted/)

    repo.grant(alice, bob, 'read')
    assert.equal(repo.file(bob, alice, 'secret.txt').size, content.length)
    assert.equal(repo.list(bob, alice, '', 10).length, 1)
    assert.throws(() => repo.remove(bob, alice, 'secret.txt'), /write access/)
    repo.grant(alice, bob, 'write')
    repo.remove(bob, alice, 'secret.txt')
    repo.revoke(alice, bob)
    assert.throws(() => repo.list(bob, alice, '', 10), /not granted/)
    assert.throws(() => repo.grant(alice, alice, 'read'), /needs no grant/)
  })

  it('refuses paths that could reach outside a namespace or mean two files', async () => {
    const { repo } = await (await host()).open()
    for (const path of ['../x', 'a/../b', '/abs', 'a//b', 'a/', '.', 'a/./b', 'a\\b', 'a\u0000b', 'a\u0085b', 'invoice\u202efdp.exe', 'a\u2066b', 'x'.repeat(256), Array(40).fill('d').join('/'), '']) {
      await assert.rejects(repo.startUpload(alice, alice, path, 1, sha(Buffer.from('x'))), /INVALID_ARGUMENT|not a data path/, JSON.stringify(path))
    }
    assert.deepEqual(parseDataUri(`data://${alice}/a/b.txt`), { owner: alice, path: 'a/b.txt' })
    assert.deepEqual(parseDataUri('data://me/a/', alice, true), { owner: alice, path: 'a' })
    assert.throws(() => parseDataUri('data://me/../etc/passwd', alice), /".." segment/)
    assert.throws(() => parseDataUri('data://someone/x'), /not an owner id/)
    assert.throws(() => parseDataUri('file:///etc/passwd'), /data:\/\//)
  })

  it('says which content a deleted or replaced file no longer needs', async () => {
    const dir = await tempDir('data')
    const store = openStore(join(dir, 'state.db'))
    const removed: string[] = []
    const repo = new DataRepository({ store, blobs: new BlobStore(join(dir, 'blobs')), uploadsDir: join(dir, 'uploads'), quota: () => {}, hostId: 'host-1', onStored: () => {}, onRemoved: f => { removed.push(f.blob) } })
    await repo.recover()
    const put = async (content: Buffer): Promise<string> => {
      const up = await repo.startUpload(alice, alice, 'f', content.length, sha(content))
      await repo.write(alice, up.id, 0, bytes(content))
      await repo.complete(alice, up.id)
      return store.data.file(alice, 'f')?.blob ?? ''
    }
    const first = await put(randomBytes(100))
    const second = await put(randomBytes(100))
    assert.deepEqual(removed, [first], 'the content it replaced')
    repo.remove(alice, alice, 'f')
    assert.deepEqual(removed, [first, second])
    await rm(dir, { recursive: true, force: true })
  })

  it('lists a directory whose name is not ASCII', async () => {
    const { repo } = await (await host()).open()
    for (const path of ['ünïcode-🎞/a.txt', 'ünïcode-🎞/b/c.txt', 'ünïcode-🎞x/d.txt']) {
      const content = Buffer.from(path)
      const up = await repo.startUpload(alice, alice, path, content.length, sha(content))
      await repo.write(alice, up.id, 0, bytes(content))
      await repo.complete(alice, up.id)
    }
    assert.deepEqual(repo.list(alice, alice, 'ünïcode-🎞', 100).map(f => f.path), ['ünïcode-🎞/a.txt', 'ünïcode-🎞/b/c.txt'])
  })

  it('keeps each owner within its quota, counting uploads under way', async () => {
    const { repo } = await (await host(1000)).open()
    const up = await repo.startUpload(alice, alice, 'a', 600, sha(Buffer.alloc(600)))
    await assert.rejects(repo.startUpload(alice, alice, 'b', 600, sha(Buffer.alloc(600))), /QUOTA_EXCEEDED|quota/)
    await repo.startUpload(bob, bob, 'b', 600, sha(Buffer.alloc(600)))
    await repo.cancel(alice, up.id)
    await repo.startUpload(alice, alice, 'b', 600, sha(Buffer.alloc(600)))
  })
})

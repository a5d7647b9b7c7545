import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { chmod, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { describe, it } from 'node:test'
import { CHUNK_SIZE, blobIdOf, type ChunkIndex } from '../../src/core/index.ts'
import { BlobStore, blobIdOfFile } from '../../src/images/index.ts'
import { tempDir } from '../helpers/cluster.ts'

/** 3.5 chunks: random, zeros, random, a short random tail. */
function sample (): Buffer {
  return Buffer.concat([randomBytes(CHUNK_SIZE), Buffer.alloc(CHUNK_SIZE), randomBytes(CHUNK_SIZE), randomBytes(CHUNK_SIZE / 2)])
}

async function storeWith (data: Buffer): Promise<{ store: BlobStore, id: string, index: ChunkIndex, dir: string }> {
  const dir = await tempDir('blobstore')
  const file = join(dir, 'input')
  await writeFile(file, data)
  const store = new BlobStore(join(dir, 'blobs'))
  const id = await store.putFile(file)
  return { store, id, index: (await store.index(id))!, dir }
}

describe('blob store', () => {
  it('stores a file under the id of its chunk index, byte for byte, with zero chunks as holes', async () => {
    const data = sample()
    const { store, id, index, dir } = await storeWith(data)
    assert.equal(id, await blobIdOfFile(join(dir, 'input')))
    assert.equal(id, blobIdOf(index))
    assert.equal(index.chunks.length, 4)
    assert.equal(index.size, data.length)
    assert.deepEqual(await readFile(store.path(id)), data)
    const blocks = (await stat(store.path(id))).blocks * 512
    assert.ok(blocks <= data.length - CHUNK_SIZE, `the zero chunk takes no space (${blocks} bytes allocated)`)
    assert.deepEqual(await store.holding(id), [true, true, true, true])
  })

  it('refuses an upload whose data is not the blob named, and keeps nothing of it', async () => {
    const dir = await tempDir('blobstore')
    const store = new BlobStore(dir)
    const wrong = `sha256:${'0'.repeat(64)}`
    await assert.rejects(store.put(wrong, Readable.from([randomBytes(1000)])), /not sha256:0000/)
    assert.equal(await store.has(wrong), false)
    assert.deepEqual((await readdir(dir)).filter(n => n.startsWith('.incoming')), [])
  })

  it('checks every chunk it reads against the index', async () => {
    const { store, id } = await storeWith(sample())
    assert.equal((await store.readChunk(id, 0))!.length, CHUNK_SIZE)
    await chmod(store.path(id), 0o644)
    const bytes = await readFile(store.path(id))
    bytes[5] = bytes[5]! ^ 0xff
    await writeFile(store.path(id), bytes)
    await assert.rejects(store.readChunk(id, 0), (err: Error & { code?: string }) => err.code === 'BLOB_CORRUPT')
    assert.ok(await store.readChunk(id, 2), 'other chunks still serve')
  })

  it('fills a partial blob only with matching chunks, resumes it after a restart and completes it', async () => {
    const data = sample()
    const { index, id } = await storeWith(data)
    const dir = await tempDir('blobstore')
    const first = new BlobStore(dir)
    const partial = await first.openPartial(id, index)
    assert.deepEqual(partial.have, [false, true, false, false], 'a zero chunk is held from the start')
    await assert.rejects(partial.write(0, randomBytes(CHUNK_SIZE)), /does not match/)
    await partial.write(0, data.subarray(0, CHUNK_SIZE))
    assert.equal(await first.has(id), false)
    assert.equal((await first.readChunk(id, 0))!.length, CHUNK_SIZE, 'a partial blob serves what it holds')
    assert.equal(await first.readChunk(id, 2), undefined)
    await first.close()

    const restarted = new BlobStore(dir)
    const resumed = await restarted.openPartial(id, (await restarted.index(id))!)
    assert.deepEqual(resumed.missing, [2, 3])
    await resumed.write(2, data.subarray(2 * CHUNK_SIZE, 3 * CHUNK_SIZE))
    await resumed.write(3, data.subarray(3 * CHUNK_SIZE))
    await resumed.complete()
    assert.deepEqual(await readFile(restarted.path(id)), data)
    assert.deepEqual(await restarted.holding(id), [true, true, true, true])
  })

  it('takes chunks it already holds in another blob from there', async () => {
    const shared = randomBytes(CHUNK_SIZE)
    const { store, dir } = await storeWith(Buffer.concat([shared, randomBytes(CHUNK_SIZE)]))
    const other = join(dir, 'other')
    await writeFile(other, Buffer.concat([randomBytes(CHUNK_SIZE), shared]))
    const scratch = new BlobStore(join(dir, 'scratch'))
    const id = await scratch.putFile(other)
    const partial = await store.openPartial(id, (await scratch.index(id))!)
    assert.deepEqual(partial.have, [false, true])
    await store.close()
  })

  it('collects blobs nothing keeps, and only those', async () => {
    const { store, id, dir } = await storeWith(sample())
    await writeFile(join(dir, 'second'), randomBytes(100))
    const second = await store.putFile(join(dir, 'second'))
    const gone = await store.gc(() => new Set([id]))
    assert.deepEqual(gone.removed, [second])
    assert.equal(await store.has(id), true)
    assert.equal(await store.has(second), false)
    assert.equal(await store.index(second), undefined)
  })
})

import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import pino from 'pino'
import { BlobStore } from '../../src/images/index.ts'
import { createXenosLibp2p, type XenosLibp2p } from '../../src/overlay/libp2p.ts'
import { fetchBlob, serveBlobs } from '../../src/transfer/index.ts'
import { hostKey } from '../helpers/adverts.ts'
import { tempDir } from '../helpers/cluster.ts'

/** Blob transfer between two real libp2p nodes; the serving side is not trusted. */
describe('blob transfer', () => {
  let server: XenosLibp2p
  let client: XenosLibp2p
  let serverId: string
  let source: BlobStore
  const data = randomBytes(3 * 1024 * 1024 + 17)
  const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`

  before(async () => {
    const ks = await hostKey()
    const kc = await hostKey()
    serverId = ks.id
    server = await createXenosLibp2p({ privateKey: ks.key, listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], mdns: false })
    client = await createXenosLibp2p({ privateKey: kc.key, listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], mdns: false })
    await server.start()
    await client.start()
    source = new BlobStore(await tempDir('blobs-src'))
    await source.put(digest, Readable.from([data]))
    await serveBlobs(server, source, pino({ level: 'silent' }))
    await client.dial(server.getMultiaddrs()[0]!)
  })

  after(async () => {
    await client.stop()
    await server.stop()
  })

  it('fetches a blob whole and verified, reporting progress', async () => {
    const sink = new BlobStore(await tempDir('blobs-dst'))
    let last = 0
    await fetchBlob(client, serverId, digest, sink, data.length, p => { last = p.received })
    assert.equal(last, data.length)
    assert.equal(await sink.size(digest), data.length)
  })

  it('refuses a blob larger than expected before writing anything', async () => {
    const sink = new BlobStore(await tempDir('blobs-dst'))
    await assert.rejects(fetchBlob(client, serverId, digest, sink, 1024), /more than the 1024 expected/)
    assert.equal(await sink.has(digest), false)
  })

  it('keeps nothing when the peer sends bytes that do not match the digest', async () => {
    // The serving host's copy is corrupted on disk: it still serves it under the digest.
    const forged = `sha256:${'0'.repeat(64)}`
    await mkdir(join(source.path(forged), '..'), { recursive: true })
    await writeFile(source.path(forged), data)
    const sink = new BlobStore(await tempDir('blobs-dst'))
    await assert.rejects(fetchBlob(client, serverId, forged, sink, data.length), /hashes to/)
    assert.equal(await sink.has(forged), false)
  })

  it('reports a blob the peer does not hold', async () => {
    const sink = new BlobStore(await tempDir('blobs-dst'))
    await assert.rejects(fetchBlob(client, serverId, `sha256:${'1'.repeat(64)}`, sink, 10), /no blob/)
  })
})

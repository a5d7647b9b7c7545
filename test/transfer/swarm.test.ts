import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import pino from 'pino'
import { CHUNK_SIZE, chunkLength, type ChunkIndex } from '../../src/core/index.ts'
import { BlobStore } from '../../src/images/index.ts'
import { createXenosLibp2p, type XenosLibp2p } from '../../src/overlay/libp2p.ts'
import { fetchIndex, serveChunks, swarmFetch, type SwarmFetchInit } from '../../src/transfer/index.ts'
import { hostKey } from '../helpers/adverts.ts'
import { corrupting } from '../helpers/chunks.ts'
import { tempDir } from '../helpers/cluster.ts'

const log = pino({ level: 'silent' })
const CHUNKS = 24

async function node (): Promise<{ node: XenosLibp2p, id: string }> {
  const k = await hostKey()
  const n = await createXenosLibp2p({ privateKey: k.key, listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], mdns: false })
  await n.start()
  return { node: n, id: k.id }
}

/** Swarm transfer between real libp2p nodes: two honest seeds, a peer that lies, and fetchers. */
describe('swarm transfer', () => {
  const data = randomBytes(CHUNKS * CHUNK_SIZE - 1000)
  let blob: string
  let index: ChunkIndex
  const seeds: Array<{ node: XenosLibp2p, id: string }> = []
  let liar: { node: XenosLibp2p, id: string }
  const fetchers: XenosLibp2p[] = []

  before(async () => {
    const dir = await tempDir('swarm')
    await writeFile(join(dir, 'image'), data)
    const store = new BlobStore(join(dir, 'seed'))
    blob = await store.putFile(join(dir, 'image'))
    index = (await store.index(blob))!
    for (let i = 0; i < 2; i++) {
      const seed = await node()
      await serveChunks(seed.node, store, log)
      seeds.push(seed)
    }
    // Honest about what it holds, but every chunk it sends has a flipped byte.
    liar = await node()
    const lying = corrupting(store)
    await serveChunks(liar.node, lying, log)
  })

  after(async () => {
    for (const n of [...seeds.map(s => s.node), liar.node, ...fetchers]) await n.stop()
  })

  async function fetcher (): Promise<{ node: XenosLibp2p, store: BlobStore }> {
    const { node: n } = await node()
    fetchers.push(n)
    for (const peer of [...seeds, liar]) await n.peerStore.merge(peer.node.peerId, { multiaddrs: peer.node.getMultiaddrs() })
    return { node: n, store: new BlobStore(await tempDir('swarm-dst')) }
  }

  function pull (n: XenosLibp2p, store: BlobStore, providers: string[], over: Partial<SwarmFetchInit> = {}): ReturnType<typeof swarmFetch> {
    return swarmFetch({ node: n, sink: store, blob, maxBytes: data.length, providers: async () => providers, log, ...over })
  }

  it('fetches from several peers at once and keeps exactly the blob', async () => {
    const { node: n, store } = await fetcher()
    const seen: number[] = []
    const result = await pull(n, store, seeds.map(s => s.id), { onProgress: p => seen.push(p.held) })
    assert.deepEqual(await readFile(store.path(blob)), data)
    assert.equal(result.fetched, data.length)
    assert.equal(Object.keys(result.fromPeers).length, 2, `both seeds sent chunks: ${JSON.stringify(result.fromPeers)}`)
    assert.equal(seen.at(-1), data.length)
  })

  it('drops a peer that sends bad chunks and completes from the honest ones', async () => {
    const { node: n, store } = await fetcher()
    const penalties: string[] = []
    const result = await pull(n, store, [liar.id, seeds[0]!.id], { onPenalty: p => penalties.push(p) })
    assert.deepEqual(await readFile(store.path(blob)), data)
    assert.deepEqual(result.penalised, [liar.id])
    assert.deepEqual(penalties, [liar.id])
    assert.equal(result.fromPeers[liar.id], undefined, 'nothing the liar sent was kept')
  })

  it('fails, keeping nothing, when only a liar holds the blob', async () => {
    const { node: n, store } = await fetcher()
    await assert.rejects(pull(n, store, [liar.id], { stallMs: 1500 }), /no chunk of blob/)
    assert.equal(await store.has(blob), false)
  })

  it('refuses a blob larger than the template declares', async () => {
    const { node: n, store } = await fetcher()
    await assert.rejects(pull(n, store, [seeds[0]!.id], { maxBytes: 1024 }), /more than the 1024/)
  })

  it('refuses an index that is not the blob asked for', async () => {
    const { node: n } = await fetcher()
    const other = `sha256:${'1'.repeat(64)}`
    await assert.rejects(fetchIndex(n, seeds[0]!.id, other), /no blob/)
  })

  it('resumes an interrupted pull, fetching only what was missing, and serves chunks while fetching', async () => {
    const { node: n, store } = await fetcher()
    const stop = new AbortController()
    const first = pull(n, store, [seeds[0]!.id], {
      perPeer: 1,
      onProgress: p => { if (p.fetched >= 8 * CHUNK_SIZE) stop.abort() },
      signal: stop.signal,
    })
    await assert.rejects(first)
    const holding = (await store.holding(blob))!
    const held = holding.filter(Boolean).length
    const heldBytes = holding.reduce((n, h, i) => h ? n + chunkLength(index, i) : n, 0)
    assert.ok(held >= 8 && held < CHUNKS, `held ${held} chunks after the interruption`)

    // A third host fetching at the same time can take chunks from the partial holder.
    await serveChunks(n, store, log)
    const { node: other, store: otherStore } = await fetcher()
    await other.peerStore.merge(n.peerId, { multiaddrs: n.getMultiaddrs() })
    const fromPartial = await pull(other, otherStore, [n.peerId.toString()], { stallMs: 1500 }).catch((err: unknown) => err)
    assert.ok(fromPartial instanceof Error, 'the partial holder alone cannot complete it')
    assert.equal((await otherStore.holding(blob))!.filter(Boolean).length, held, 'but it served every chunk it held')

    await store.close()
    const resumedStore = new BlobStore(join(store.path(blob), '..', '..'))
    const second = await pull(n, resumedStore, [seeds[0]!.id])
    assert.equal(second.fetched, data.length - heldBytes, 'only the missing chunks were fetched')
    assert.deepEqual(await readFile(resumedStore.path(blob)), data)
  })
})

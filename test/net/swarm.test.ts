import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { multiaddr } from '@multiformats/multiaddr'
import pino from 'pino'
import type { TemplateManifest } from '../../src/core/index.ts'
import { BlobStore } from '../../src/images/index.ts'
import { ADVERT_TOPIC, encodeAdvert, signAdvert } from '../../src/overlay/index.ts'
import { createXenosLibp2p, type XenosLibp2p } from '../../src/overlay/libp2p.ts'
import { serveChunks } from '../../src/transfer/index.ts'
import { hostKey, templateAdvert } from '../helpers/adverts.ts'
import { corrupting } from '../helpers/chunks.ts'
import { ApiClient } from '../../src/cli/index.ts'
import { apiOf, cli, eventually, operatorOf, startHost, stopHost, tempDir, type TestHost } from '../helpers/cluster.ts'

const DISK_MIB = 256

async function metric (h: TestHost, name: string): Promise<number> {
  const text = await (await fetch(`${h.api}/metrics`)).text()
  return Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1])
}

/**
 * Template pulls between real xenosd processes: a rogue peer that claims the template and sends
 * corrupted chunks, and a host killed half-way through a pull.
 */
describe('pulling templates from a swarm', () => {
  const hosts: TestHost[] = []
  let seed: TestHost
  let templateId: string
  let manifest: TemplateManifest
  let rogue: XenosLibp2p
  let claiming: NodeJS.Timeout | undefined
  let user: string

  before(async () => {
    user = join(await tempDir('keys'), 'user.pem')
    seed = await startHost({ name: 'seed' })
    hosts.push(seed)
    // A VM template with a large disk of random data (it is pulled, never booted).
    const dir = await tempDir('swarm-files')
    const store = new BlobStore(join(dir, 'blobs'))
    const ids: string[] = []
    for (const [name, bytes] of [['kernel', 1 << 20], ['initrd', 1 << 20], ['disk', DISK_MIB << 20]] as const) {
      await writeFile(join(dir, name), randomBytes(bytes))
      ids.push(await store.putFile(join(dir, name)))
    }
    const api = await apiOf(seed, operatorOf(seed))
    for (const id of ids) await api.signedUpload(`/v1/blobs/${id}`, 'blob.put', id, {}, createReadStream(store.path(id)), await store.size(id))
    const [kernel = '', initrd = '', disk = ''] = ids
    manifest = { name: 'big', version: '1', driver: 'qemu', env: {}, ports: [], tags: {}, resources: { cpu: 1, memory: 64 }, image: { kernel, initrd, disk, diskFormat: 'raw', diskBytes: DISK_MIB << 20 } }
    templateId = (await api.signed<{ id: string }>('POST', '/v1/templates', 'template.import', 'templates', { manifest }, { manifest })).id

    // The rogue holds the template too, advertises it, and flips a byte in every chunk it sends.
    const key = await hostKey()
    rogue = await createXenosLibp2p({ privateKey: key.key, listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], mdns: false })
    const lying = corrupting(store)
    await serveChunks(rogue, lying, pino({ level: 'silent' }))
    await rogue.start()
    rogue.services.pubsub.subscribe(ADVERT_TOPIC)
    const claim = await signAdvert(key.key, templateAdvert(key.id, { id: templateId, body: { name: 'big', version: '1', driver: 'qemu', tags: {}, resources: { cpu: 1, memory: 64 }, ports: [] } }))
    claiming = setInterval(() => { void rogue.services.pubsub.publish(ADVERT_TOPIC, encodeAdvert(claim)).catch(() => {}) }, 500)
  })

  after(async () => {
    clearInterval(claiming)
    await rogue.stop()
    await Promise.all(hosts.map(async h => { await stopHost(h, 'SIGKILL') }))
  })

  it('completes a pull from honest hosts when a peer sends corrupted chunks, keeping none of them', async () => {
    const b = await startHost({ name: 'puller', bootstrap: [seed] })
    hosts.push(b)
    await rogue.dial(multiaddr(b.info.multiaddrs[0] ?? ''))
    await eventually(async () => {
      const r = await cli(b, user, ['search', '--kind', 'template'])
      return r.filter((x: any) => x.id === templateId).length === 2 || undefined
    }, 15_000, 'both claims to reach the puller')
    // The host's transfer events show the pull as it goes.
    const stop = new AbortController()
    const events: Array<{ event: string, data: any }> = []
    const listening = (async () => {
      try {
        for await (const e of new ApiClient({ api: b.api }).events('/v1/transfers/events', stop.signal)) events.push(e)
      } catch {}
    })()
    await sleep(200)
    const pulled = await cli(b, operatorOf(b), ['template', 'pull', templateId])
    assert.equal(pulled.id, templateId)
    await eventually(async () => events.some(e => e.event === 'done' && e.data.blob === manifest.image!.disk) || undefined, 5000, 'the done event')
    stop.abort()
    await listening
    const progress = events.filter(e => e.event === 'progress' && e.data.blob === manifest.image!.disk)
    assert.ok(progress.length > 3, `${progress.length} progress events`)
    assert.ok(progress.every((e, i) => i === 0 || e.data.held >= progress[i - 1]!.data.held), 'held bytes only grow')
    assert.equal(events.find(e => e.event === 'done' && e.data.blob === manifest.image!.disk)!.data.error, null)
    assert.ok(await metric(b, 'xenos_blob_bad_chunks_total') >= 1, 'the rogue was caught')
    assert.equal(await metric(b, 'xenos_blob_fetched_bytes_total'), (DISK_MIB + 2) << 20, 'every byte kept came from the honest seed')
    const local = new BlobStore(join(b.dataDir, 'blobs'))
    for (const [id, chunks] of [[manifest.image!.kernel, 1], [manifest.image!.disk, DISK_MIB]] as const) {
      for (let i = 0; i < chunks; i += 17) assert.ok(await local.readChunk(id, i), `chunk ${i} of ${id} reads back verified`)
    }
  })

  it('resumes a pull cut by kill -9, fetching only the chunks it did not have', async () => {
    const dataDir = await tempDir('killed')
    let c = await startHost({ name: 'killed', bootstrap: [seed], dataDir })
    hosts.push(c)
    const disk = manifest.image!.disk
    const pulling = cli(c, operatorOf(c), ['template', 'pull', templateId]).catch(() => undefined)
    await eventually(async () => {
      const { transfers } = await (await fetch(`${c.api}/v1/transfers`)).json() as { transfers: Array<{ blob: string, held: number, size: number }> }
      const t = transfers.find(x => x.blob === disk)
      return t !== undefined && t.held > t.size / 10 && t.held < t.size / 2 ? t : undefined
    }, 30_000, 'the pull to be under way', 20)
    await stopHost(c, 'SIGKILL')
    await pulling
    // What the killed host kept: complete files, and the verified chunks of partial ones.
    const store = new BlobStore(join(dataDir, 'blobs'))
    let held = 0
    let total = 0
    for (const id of [manifest.image!.kernel, manifest.image!.initrd, disk]) {
      const index = (await store.index(id)) ?? (await new BlobStore(join(seed.dataDir, 'blobs')).index(id))!
      total += index.size
      if (await store.has(id)) held += index.size
      else if (await store.index(id) !== undefined) held += (await store.openPartial(id, index)).heldBytes
    }
    await store.close()
    assert.ok(held > 0 && held < total / 2, `held ${held} of ${total} bytes after the kill`)

    c = await startHost({ name: 'killed', bootstrap: [seed], dataDir })
    hosts.push(c)
    await cli(c, operatorOf(c), ['template', 'pull', templateId])
    assert.equal(await metric(c, 'xenos_blob_fetched_bytes_total'), total - held, 'only what was missing was fetched')
  })
})

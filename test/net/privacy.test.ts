import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createReadStream, existsSync } from 'node:fs'
import { chmod, mkdir, readdir, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { multiaddr } from '@multiformats/multiaddr'
import { ApiClient } from '../../src/cli/index.ts'
import { blobIdOfFile } from '../../src/images/index.ts'
import { fetchIndex } from '../../src/transfer/index.ts'
import { apiOf, cli, eventually, startHost, stopHosts, tempDir, type TestHost } from '../helpers/cluster.ts'
import { startRogue } from '../helpers/rogue.ts'

const MiB = 2 ** 20

async function bytesUnder (dir: string): Promise<number> {
  let total = 0
  for (const name of await readdir(dir, { recursive: true }).catch(() => [])) {
    const s = await stat(join(dir, name)).catch(() => undefined)
    if (s?.isFile() === true) total += s.blocks * 512
  }
  return total
}

/** Events of a host's transfer stream (signed `transfers` for that host, when `host` is given), read while `work` runs. */
async function transferEvents (api: ApiClient, host: string | undefined, work: () => Promise<unknown>): Promise<Array<{ event: string, data: any }>> {
  const stop = new AbortController()
  const events: Array<{ event: string, data: any }> = []
  const reading = (async () => {
    try {
      const signed = host === undefined ? undefined : { action: 'transfers', target: host, params: {} }
      for await (const e of api.events('/v1/transfers/events', stop.signal, signed)) events.push(e)
    } catch {}
  })()
  try {
    await work()
  } finally {
    stop.abort()
    await reading
  }
  return events
}

/**
 * Owners' data kept from everyone else, as real xenosd processes see it: other users, other hosts,
 * rogue peers and the instances a host runs; and owners held to quotas that free on delete.
 */
describe('owners\' data, kept to them', () => {
  const running: TestHost[] = []
  let dir: string
  let alice: string, bob: string, carol: string, mallory: string

  before(async () => {
    dir = await tempDir('privacy')
    for (const who of ['alice', 'bob', 'carol', 'mallory']) await writeFile(join(dir, `${who}.txt`), `${who}'s\n`)
    alice = join(dir, 'alice.pem')
    bob = join(dir, 'bob.pem')
    carol = join(dir, 'carol.pem')
    mallory = join(dir, 'mallory.pem')
  })

  after(async () => {
    await stopHosts(running)
  })

  it('shows a file moving between hosts to its owner only, serves its chunks only to the host the holder gave a ticket, and keeps no copy on the way', async () => {
    const holder = await startHost({ name: 'holder' })
    const relay = await startHost({ name: 'relay', bootstrap: [holder] })
    running.push(holder, relay)
    const file = join(dir, 'secret.bin')
    await writeFile(file, randomBytes(8 * MiB))
    const put = await cli(holder, alice, ['data', 'put', file, 'data://me/secret.bin'])
    const blob = await blobIdOfFile(file)
    const hex = blob.slice(7)

    // Through the relay, Alice reads it; the relay's transfer stream shows it to her, to nobody else.
    const aliceApi = await apiOf(relay, alice)
    const relayId = await aliceApi.hostId()
    const anyone = new ApiClient({ api: relay.api })
    const malloryApi = await apiOf(relay, mallory)
    let mine: Array<{ event: string, data: any }> = []
    let hers: Array<{ event: string, data: any }> = []
    const theirs = await transferEvents(anyone, undefined, async () => {
      hers = await transferEvents(malloryApi, relayId, async () => {
        mine = await transferEvents(aliceApi, relayId, async () => {
          await eventually(async () => await cli(relay, alice, ['data', 'get', put.uri, join(dir, 'back.bin')], false).then(() => true, () => undefined), 30_000, 'the relay to find the file')
        })
      })
    })
    assert.ok(mine.some(e => e.data.template === put.uri && e.data.blob === blob), 'its owner watches it come')
    for (const [who, seen] of [['an unsigned watcher', theirs], ['another user', hers]] as const) {
      assert.equal(seen.filter(e => e.data.blob === blob || e.data.template === put.uri).length, 0, `${who} sees nothing of it`)
    }
    await eventually(async () => !existsSync(join(relay.dataDir, 'blobs', 'sha256', hex)) || undefined, 10_000, 'the relay to drop its copy')

    // Nobody gets its bytes by blob id: not over HTTP from either host, not over the chunk protocol.
    for (const h of [holder, relay]) {
      assert.equal((await fetch(`${h.api}/v1/blobs/${blob}`)).status, 404, `GET /v1/blobs on ${h.name}`)
      assert.equal((await fetch(`${h.api}/v1/blobs/${blob}`, { method: 'HEAD' })).status, 404, `HEAD /v1/blobs on ${h.name}`)
    }
    const rogue = await startRogue(relay)
    await rogue.node.dial(multiaddr(holder.info.multiaddrs[0] ?? ''))
    await assert.rejects(fetchIndex(rogue.node, holder.info.peerId, blob), /no blob/)
    await rogue.stop()
    // Another user, through the relay, is refused by the holder.
    await assert.rejects(cli(relay, mallory, ['data', 'get', put.uri, join(dir, 'stolen.bin')]), /FORBIDDEN/)

    // Deleted, its content goes from the holder.
    await cli(holder, alice, ['data', 'rm', put.uri])
    await eventually(async () => !existsSync(join(holder.dataDir, 'blobs', 'sha256', hex)) || undefined, 10_000, 'the holder to drop the deleted file\'s content')
  })

  it('holds each owner to its quota and all owners to the host\'s, freeing what is deleted, image files uploaded included', async () => {
    const q = await startHost({ name: 'quota', extraArgs: ['--data-quota', '50', '--host-quota', '100'] })
    running.push(q)
    const forty = join(dir, 'forty.bin')
    for (let round = 0; round < 3; round++) {
      await writeFile(forty, randomBytes(40 * MiB))
      const put = await cli(q, alice, ['data', 'put', forty, 'data://me/forty.bin'])
      await cli(q, alice, ['data', 'rm', put.uri])
      await eventually(async () => await bytesUnder(join(q.dataDir, 'blobs')) < MiB || undefined, 10_000, `round ${round}: the deleted file's content to go`)
    }
    await writeFile(forty, randomBytes(40 * MiB))
    await cli(q, alice, ['data', 'put', forty, 'data://me/a.bin'])
    await writeFile(forty, randomBytes(40 * MiB))
    await cli(q, bob, ['data', 'put', forty, 'data://me/b.bin'])
    await writeFile(forty, randomBytes(40 * MiB))
    await assert.rejects(cli(q, carol, ['data', 'put', forty, 'data://me/c.bin']), /QUOTA_EXCEEDED.*offers them/s, 'a fresh key meets the host\'s quota')

    // Image files an owner uploads count against its quota; an unsigned upload is refused.
    const image = join(dir, 'image.bin')
    await writeFile(image, randomBytes(30 * MiB))
    const id = await blobIdOfFile(image)
    assert.equal((await fetch(`${q.api}/v1/blobs/${id}`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: 'x' })).status, 401)
    const api = await apiOf(q, bob)
    await assert.rejects(api.signedUpload(`/v1/blobs/${id}`, 'blob.put', id, {}, createReadStream(image), 30 * MiB), (e: any) => e.code === 'QUOTA_EXCEEDED', 'bob has 40 of his 50 MiB')
    assert.equal(await bytesUnder(join(q.dataDir, 'blobs')) < 100 * MiB, true)
  })

  it('gives a process instance nothing of its host\'s data dir, whatever made the directory', async () => {
    const data = join(dir, 'open-data')
    await mkdir(data, { mode: 0o755 })
    await chmod(data, 0o755)
    const p = await startHost({ name: 'sandbox', dataDir: data })
    running.push(p)
    assert.equal((await stat(data)).mode & 0o777, 0o700, 'only the host reads its data dir')
    assert.equal((await stat(join(data, 'state.db'))).mode & 0o777, 0o600)
    const secret = `alice-secret-${randomBytes(6).toString('hex')}`
    await writeFile(join(dir, 'alice-secret.txt'), secret)
    await cli(p, alice, ['data', 'put', join(dir, 'alice-secret.txt'), 'data://me/secret.txt'])
    const snoop = join(dir, 'snoop.yaml')
    await writeFile(snoop, [
      'name: snoop', 'version: "1"', 'driver: process',
      `command: "ls -a ${data}; cat ${data}/blobs/sha256/* ${data}/state.db ${data}/operator.pem 2>&1 | head -c 4000; echo; echo snooped; sleep 600"`,
      'resources: {cpu: 0.05, memory: 16}',
    ].join('\n') + '\n')
    await cli(p, mallory, ['template', 'import', snoop])
    const inst = (await cli(p, mallory, ['deploy', 'snoop', '--host', 'sandbox'])).instances[0]
    const logs = await eventually(async () => {
      const text = (await cli(p, mallory, ['instance', 'logs', inst.id])).text as string
      return text.includes('snooped') ? text : undefined
    }, 15_000, 'the snooping instance to have tried')
    assert.ok(!logs.includes(secret), `it read another owner's file:\n${logs}`)
    assert.ok(!/PRIVATE KEY|SQLite format/.test(logs), `it read the host's keys or database:\n${logs}`)
    await cli(p, mallory, ['instance', 'destroy', inst.id])
  })
})

import assert from 'node:assert/strict'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import pino from 'pino'
import { after, before, describe, it } from 'node:test'
import { ADVERT_TOPIC, DOWN_TOPIC, downNoticeBytes, encodeAdvert, Rpc, serveSync, signAdvert } from '../../src/overlay/index.ts'
import { createXenosLibp2p, type XenosLibp2p } from '../../src/overlay/libp2p.ts'
import { hostKey, templateAdvert } from '../helpers/adverts.ts'
import { eventually, getJson, startHost, stopHost, stopHosts, type TestHost } from '../helpers/cluster.ts'
import { startRogue, type Rogue } from '../helpers/rogue.ts'

async function rejected (h: TestHost, reason: string): Promise<number> {
  const text = await (await fetch(`${h.api}/metrics`)).text()
  return Number(new RegExp(`xenos_adverts_rejected_total\\{reason="${reason}"\\} (\\d+)`).exec(text)?.[1] ?? NaN)
}

/** A rogue peer speaks the overlay's protocols to a real xenosd and tries to plant adverts. */
describe('a host facing a rogue peer', () => {
  let host: TestHost
  let rogue: XenosLibp2p
  let rogueId: string
  const forged: Uint8Array[] = []
  const forgedIds: string[] = []
  let honestId: string

  before(async () => {
    host = await startHost({ name: 'victim' })
    const me = await hostKey()
    const victim = await hostKey()
    rogueId = me.id
    rogue = await createXenosLibp2p({ privateKey: me.key, listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], mdns: false })
    const now = Date.now()
    const id = (n: number): string => `sha256:${String(n).repeat(64).slice(0, 64)}`
    const make = async (n: number, f: (a: ReturnType<typeof templateAdvert>) => Promise<Uint8Array>): Promise<void> => {
      forgedIds.push(id(n))
      forged.push(await f(templateAdvert(me.id, { id: id(n) })))
    }
    // Claims to come from the victim host, signed with the rogue's key.
    await make(1, async a => encodeAdvert(await signAdvert(me.key, { ...a, host: victim.id })))
    // Signed, then altered.
    await make(2, async a => { const s = await signAdvert(me.key, a); return encodeAdvert({ ...s, body: { ...s.body, name: 'altered' } } as never) })
    await make(3, async a => encodeAdvert(await signAdvert(me.key, { ...a, issuedAt: now - 120_000, expiresAt: now - 60_000 })))
    await make(4, async a => encodeAdvert(await signAdvert(me.key, { ...a, body: { ...a.body, description: 'x'.repeat(1000), tags: Object.fromEntries(Array.from({ length: 80 }, (_, i) => [`k${i}`, 'v'.repeat(250)])) } } as never)))
    honestId = id(5)
    const honest = encodeAdvert(await signAdvert(me.key, templateAdvert(me.id, { id: honestId })))

    const rpc = new Rpc(rogue, pino({ level: 'silent' }))
    // The rogue's sync answers offer the forgeries, under keys that sort after anything the host holds.
    const offered = forged.map(b => JSON.parse(new TextDecoder().decode(b)) as unknown)
    const keys = offered.map((_, i) => `~forged/${i}`)
    serveSync(rpc, () => ({
      digest: after => after === null ? keys.map(k => [k, 1] as [string, number]) : [],
      pick: wanted => ({ records: wanted.map(k => offered[keys.indexOf(k)]), taken: wanted.length }),
      version: () => undefined,
      receive: async () => {},
    }))
    await rpc.start()
    await rogue.start()
    rogue.services.pubsub.subscribe(ADVERT_TOPIC)
    await rogue.dial(multiaddr(host.info.multiaddrs[0] ?? ''))
    await eventually(async () => rogue.services.pubsub.getSubscribers(ADVERT_TOPIC).some(p => p.equals(peerIdFromString(host.info.peerId))), 10_000, 'the host to subscribe')
    for (const bytes of [...forged, honest]) await rogue.services.pubsub.publish(ADVERT_TOPIC, bytes)
  })

  after(async () => {
    await rogue.stop()
    await stopHost(host)
  })

  it('stores the honest advert and none of the forged ones, counting each by reason', async () => {
    await eventually(async () => (await getJson(host, '/v1/search?kind=template')).results.some((r: any) => r.id === honestId), 10_000, 'the honest advert')
    const { results } = await getJson(host, '/v1/search')
    for (const id of forgedIds) assert.ok(!results.some((r: any) => r.id === id), `forged advert ${id} is not searchable`)
    await eventually(async () => await rejected(host, 'bad-signature') >= 2, 5000, 'bad-signature rejections')
    assert.ok(await rejected(host, 'expired') >= 1)
    assert.ok(await rejected(host, 'oversized') >= 1)
    assert.ok(results.every((r: any) => r.host !== rogueId || r.id === honestId))
  })

  it('rejects the same forgeries when they arrive through a sync', async () => {
    // The host synced with the rogue when it connected: both paths count, neither stores.
    assert.ok(await rejected(host, 'bad-signature') >= 4, 'gossip and sync each rejected both signature forgeries')
  })
})

describe('a host told by a rogue peer that others are dead', () => {
  let a: TestHost, b: TestHost
  let rogue: Rogue
  const hostAdvertOf = async (on: TestHost, of: TestHost): Promise<any> => (await getJson(on, `/v1/search?kind=host&host=${of.info.peerId}`)).results[0]
  const downs = async (h: TestHost): Promise<number> => {
    const text = await (await fetch(`${h.api}/metrics`)).text()
    return [...text.matchAll(/xenos_hosts_down_total\{how="\w+"\} (\d+)/g)].reduce((n, m) => n + Number(m[1]), 0)
  }
  const tell = async (about: string, by: string, upTo = Date.now() + 60_000): Promise<void> => {
    const unsigned = { v: 1 as const, host: about, upTo, by, at: Date.now() }
    const sig = Buffer.from(await rogue.key.sign(downNoticeBytes(unsigned))).toString('base64url')
    await rogue.node.services.pubsub.publish(DOWN_TOPIC, new TextEncoder().encode(JSON.stringify({ ...unsigned, sig })))
  }

  before(async () => {
    a = await startHost({ name: 'a', advertTtl: 600 })
    b = await startHost({ name: 'b', bootstrap: [a], advertTtl: 600 })
    rogue = await startRogue(a)
    rogue.node.services.pubsub.subscribe(DOWN_TOPIC)
    await eventually(async () => await hostAdvertOf(a, b) !== undefined, 10_000, 'A to know B')
    await eventually(async () => rogue.node.services.pubsub.getSubscribers(DOWN_TOPIC).some(p => p.equals(peerIdFromString(a.info.peerId))), 10_000, 'A to take down notices')
  })

  after(async () => {
    await rogue.stop()
    await stopHosts([a, b])
  })

  it('keeps a live host that a notice calls dead, after its own ping, and a notice signed in another host\'s name changes nothing', async () => {
    await tell(b.info.peerId, rogue.id)
    await tell(b.info.peerId, a.info.peerId) // signed by the rogue, in A's name
    await tell(rogue.id, rogue.id) // about itself
    await new Promise(resolve => setTimeout(resolve, 3000))
    assert.ok(await hostAdvertOf(a, b) !== undefined, 'B is still found on A')
    assert.equal(await downs(a), 0)
    assert.equal(await downs(b), 0, 'and the notice did not go on to B')
  })

  it('answers a notice about itself by announcing itself again, newer than the notice', async () => {
    const before = (await hostAdvertOf(b, a)).issuedAt as number
    await tell(a.info.peerId, rogue.id)
    await eventually(async () => (await hostAdvertOf(b, a))?.issuedAt > before, 10_000, 'A\'s refreshed advert on B')
  })
})

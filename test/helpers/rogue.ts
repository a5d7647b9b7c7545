import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import pino from 'pino'
import { z } from 'zod'
import type { UnsignedAdvert } from '../../src/core/index.ts'
import { ADVERT_TOPIC, encodeAdvert, Probes, Rpc, serveSync, signAdvert, type Syncable } from '../../src/overlay/index.ts'
import { createXenosLibp2p, type XenosLibp2p } from '../../src/overlay/libp2p.ts'
import { hostKey } from './adverts.ts'
import { eventually, type TestHost } from './cluster.ts'

/**
 * A peer that speaks the overlay's protocols with a key of its own, as an attacker on the same
 * overlay would: it gossips what it likes, answers syncs with what it likes, and records every
 * RPC hosts send it.
 */
export interface Rogue {
  node: XenosLibp2p
  id: string
  key: PrivateKey
  rpc: Rpc
  /** Every RPC method a host called on it, in order. */
  calls: string[]
  /** Signs `a` with the rogue's key and gossips it. */
  gossip: (a: UnsignedAdvert) => Promise<void>
  /** What it answers to a host's sync of `topic`. */
  offer: (topic: string, records: Array<{ key: string, record: unknown }>) => void
  /** Connects to the host anew, which makes it sync with the rogue at once. */
  redial: () => Promise<void>
  stop: () => Promise<void>
}

export async function startRogue (join: TestHost, o: { rpcMethods?: string[], serve?: boolean } = {}): Promise<Rogue> {
  const me = await hostKey()
  const node = await createXenosLibp2p({ privateKey: me.key, listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], mdns: false })
  const rpc = new Rpc(node, pino({ level: 'silent' }))
  const calls: string[] = []
  for (const method of o.rpcMethods ?? []) rpc.handle(method, z.unknown(), async () => { calls.push(method); return null })
  const offers = new Map<string, Array<{ key: string, record: unknown }>>()
  const syncable = (topic: string): Syncable => {
    const records = offers.get(topic) ?? []
    return {
      digest: (after, limit) => records.filter(r => after === null || r.key > after).slice(0, limit).map(r => [r.key, 1] as [string, number]),
      pick: keys => {
        const byKey = new Map(records.map(r => [r.key, r.record]))
        return { records: keys.map(k => byKey.get(k)), taken: keys.length }
      },
      version: () => undefined,
      receive: async () => {},
    }
  }
  serveSync(rpc, syncable)
  // A rogue that serves no RPC at all: nothing sent to it is carried out. It answers probes, as
  // any attacker that wants to stay in the overlay would.
  if (o.serve !== false) await rpc.start()
  await new Probes(node).start()
  await node.start()
  node.services.pubsub.subscribe(ADVERT_TOPIC)
  const host = multiaddr(join.info.multiaddrs[0] ?? '')
  await node.dial(host)
  await eventually(async () => node.services.pubsub.getSubscribers(ADVERT_TOPIC).some(p => p.equals(peerIdFromString(join.info.peerId))), 10_000, 'the host to subscribe')
  return {
    node,
    id: me.id,
    key: me.key,
    rpc,
    calls,
    gossip: async a => { await node.services.pubsub.publish(ADVERT_TOPIC, encodeAdvert(await signAdvert(me.key, a))) },
    offer: (topic, records) => { offers.set(topic, [...records].sort((x, y) => x.key < y.key ? -1 : 1)) },
    redial: async () => {
      await node.hangUp(peerIdFromString(join.info.peerId))
      await node.dial(host)
    },
    stop: async () => { await node.stop() },
  }
}

import { createHash } from 'node:crypto'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { bootstrap } from '@libp2p/bootstrap'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import type { Identify } from '@libp2p/identify'
import type { PeerDiscovery, PrivateKey } from '@libp2p/interface'
import { kadDHT, passthroughMapper, type KadDHT } from '@libp2p/kad-dht'
import { mdns } from '@libp2p/mdns'
import { ping, type Ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { createLibp2p, type Libp2p, type Libp2pOptions } from 'libp2p'
import { dhtSelector, dhtValidator } from './dht.ts'
import { creditHalfWindows } from './window-updates.ts'

export type XenosServices = { identify: Identify, ping: Ping, dht: KadDHT, pubsub: GossipSub }
export type XenosLibp2p = Libp2p<XenosServices>

export interface Libp2pInit {
  privateKey: PrivateKey
  listen: string[]
  bootstrap: string[]
  mdns: boolean
  /**
   * How hosts reach each other: TCP with Yamux unless given. bench/overlay-sim.ts runs many
   * hosts in one process over an in-memory transport, counting what each host sends.
   */
  network?: Pick<Libp2pOptions<XenosServices>, 'transports' | 'streamMuxers'> | undefined
}

/**
 * Yamux as the overlay runs it. Yamux pings every connection every 30 s to find dead ones, a
 * cost that grows with the connections; the overlay's probes (liveness.ts) reach every
 * connected host's in turn, and TCP's own keepalive is on for the rest. Window updates go once
 * half a window is used, not after every frame (window-updates.ts).
 */
export function xenosMuxer (): ReturnType<typeof yamux> {
  creditHalfWindows()
  return yamux({ enableKeepAlive: false })
}

/** A gossip message's identity for spotting copies: a hash of all it carries, signature included. */
export function messageBytesId (msg: { from?: Uint8Array, seqno?: Uint8Array, topic: string, data?: Uint8Array, signature?: Uint8Array }): string {
  const h = createHash('sha256')
  for (const part of [msg.from, msg.seqno, Buffer.from(msg.topic), msg.data, msg.signature]) {
    const bytes = part ?? new Uint8Array()
    h.update(Buffer.from(Uint32Array.of(bytes.byteLength).buffer)).update(bytes)
  }
  return h.digest('base64')
}

/**
 * The overlay's libp2p node: TCP + Noise + Yamux, identify, ping, a Kademlia DHT under Xenos's own
 * protocol id (so it never mixes with another network's DHT), and gossipsub.
 */
export async function createXenosLibp2p (init: Libp2pInit): Promise<XenosLibp2p> {
  const peerDiscovery: Array<(components: any) => PeerDiscovery> = []
  if (init.bootstrap.length > 0) peerDiscovery.push(bootstrap({ list: init.bootstrap, timeout: 100 }))
  if (init.mdns) peerDiscovery.push(mdns({ serviceTag: 'xenos.local' }))
  return await createLibp2p({
    // Started by Overlay.start once its handlers are in place, so the first peers already get answers.
    start: false,
    privateKey: init.privateKey,
    addresses: { listen: init.listen },
    transports: init.network?.transports ?? [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: init.network?.streamMuxers ?? [xenosMuxer()],
    peerDiscovery,
    // Many hosts can share one address (loopback, a NAT, a lab switch); libp2p's default of 5
    // inbound connections per second per address would turn all but the first few away.
    connectionManager: { maxConnections: 300, inboundConnectionThreshold: 1000, maxIncomingPendingConnections: 64 },
    // libp2p pings every connection every 10 s on a new stream, a dozen packets each, growing
    // with the number of peers; the overlay's own probes (liveness.ts) cover what it found out.
    connectionMonitor: { enabled: false },
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: '/xenos/kad/1.0.0',
        clientMode: false,
        // Xenos pools machines on private networks and loopback: keep every address.
        peerInfoMapper: passthroughMapper,
        validators: { xenos: dhtValidator },
        selectors: { xenos: dhtSelector },
        initialQuerySelfInterval: 100,
      }),
      pubsub: gossipsub({
        allowPublishToZeroTopicPeers: true,
        emitSelf: false,
        // Peer scoring penalises many peers behind one IP address; hosts on one machine or
        // behind one NAT are normal here, and adverts are verified one by one anyway.
        scoreParams: { IPColocationFactorWeight: 0 },
        // Each host hears every message from several mesh peers; without this, gossipsub checks
        // every copy's signature before it finds the copy is one it has (most of an idle
        // cloud's signature checks). Only a message that passed is remembered under its bytes.
        fastMsgIdFn: messageBytesId,
      }),
    },
  })
}

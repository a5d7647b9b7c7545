import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { Logger } from 'pino'
import { z } from 'zod'
import { type Advert, type AdvertKind, type AdvertOf, type UnsignedAdvert } from '../core/index.ts'
import { encodeAdvert, signAdvert, verifyAdvert, type RejectReason } from './adverts.ts'
import { AdvertCache, type AdvertQuery } from './cache.ts'
import { idKey, keysOf, nameKey } from './dht.ts'
import { createXenosLibp2p, type XenosLibp2p } from './libp2p.ts'
import { Rpc, RPC_PROTOCOL } from './rpc.ts'

export const ADVERT_TOPIC = 'xenos/adverts/1'

export interface OverlayInit {
  privateKey: PrivateKey
  /** Multiaddrs to listen on. @default ['/ip4/0.0.0.0/tcp/7381'] */
  listen: string[]
  /** Multiaddrs (with `/p2p/<id>`) of hosts to join through. */
  bootstrap: string[]
  /** Discover hosts on the local network with mDNS. @default false */
  mdns: boolean
  /** Lifetime of this host's adverts; they are re-published every third of it. @default 30_000 */
  advertTtlMs: number
  log: Logger
}

export const DEFAULT_ADVERT_TTL_MS = 30_000

type BodyOf<K extends AdvertKind> = AdvertOf<K>['body']

export interface OverlayCounters {
  accepted: number
  stale: number
  rejected: Record<RejectReason, number>
}

/**
 * One host's place in the overlay: the libp2p node, the adverts it publishes (signed, refreshed,
 * withdrawn), the cache of everyone else's (filled by gossip and by a sync with every new peer),
 * DHT lookups for what the cache lacks, and RPC to other hosts.
 */
export class Overlay {
  readonly node: XenosLibp2p
  readonly rpc: Rpc
  readonly cache = new AdvertCache()
  readonly counters: OverlayCounters = {
    accepted: 0,
    stale: 0,
    rejected: { oversized: 0, malformed: 0, 'bad-signature': 0, 'wrong-host': 0, expired: 0, future: 0, 'ttl-too-long': 0 },
  }

  readonly #init: OverlayInit
  readonly #own = new Map<string, UnsignedAdvert>()
  readonly #synced = new Set<string>()
  #seq = 0
  #timers: NodeJS.Timeout[] = []

  private constructor (node: XenosLibp2p, init: OverlayInit) {
    this.node = node
    this.#init = init
    this.rpc = new Rpc(node, init.log)
  }

  static async create (init: OverlayInit): Promise<Overlay> {
    const node = await createXenosLibp2p(init)
    return new Overlay(node, init)
  }

  get peerId (): string {
    return this.node.peerId.toString()
  }

  multiaddrs (): string[] {
    return this.node.getMultiaddrs().map(m => m.toString())
  }

  async start (): Promise<void> {
    this.rpc.handle('adverts.sync', z.strictObject({}), async () => this.cache.snapshot())
    await this.rpc.start()
    const pubsub = this.node.services.pubsub
    pubsub.topicValidators.set(ADVERT_TOPIC, async (_peer, msg) => {
      const changed = await this.receive(msg.data)
      return changed === undefined ? TopicValidatorResult.Reject : changed ? TopicValidatorResult.Accept : TopicValidatorResult.Ignore
    })
    pubsub.subscribe(ADVERT_TOPIC)
    this.node.addEventListener('peer:identify', evt => {
      const { peerId, protocols } = evt.detail
      if (protocols.includes(RPC_PROTOCOL)) void this.#syncWith(peerId)
    })
    this.node.addEventListener('peer:disconnect', evt => { this.#synced.delete(evt.detail.toString()) })
    const ttl = this.#init.advertTtlMs
    this.#timers.push(setInterval(() => { void this.#refresh() }, Math.max(200, Math.floor(ttl / 3))))
    this.#timers.push(setInterval(() => { this.cache.sweep() }, 1000))
    this.#timers.push(setInterval(() => { void this.#redialBootstrap() }, 5000))
  }

  async stop (): Promise<void> {
    for (const t of this.#timers) clearInterval(t)
    this.#timers = []
    await this.node.stop()
  }

  /**
   * Verifies an advert from a peer and caches it. Returns undefined when it was rejected, else
   * whether it told us something new.
   */
  async receive (data: unknown): Promise<boolean | undefined> {
    const result = await verifyAdvert(data)
    if (!result.ok) {
      this.counters.rejected[result.reason]++
      this.#init.log.debug({ reason: result.reason, detail: result.detail }, 'advert rejected')
      return undefined
    }
    if (result.advert.host === this.peerId) return false
    const changed = this.cache.offer(result.advert)
    if (changed) this.counters.accepted++
    else this.counters.stale++
    return changed
  }

  /** Publishes (or republishes with a new body) this host's advert about `kind`/`id`. */
  async publish<K extends AdvertKind>(kind: K, id: string, body: BodyOf<K>): Promise<void> {
    const now = Date.now()
    const unsigned = { v: 1, kind, id, host: this.peerId, seq: this.#seq++, issuedAt: now, expiresAt: now + this.#init.advertTtlMs, body } as UnsignedAdvert
    this.#own.set(`${kind}/${id}`, unsigned)
    await this.#announce(unsigned)
  }

  /** Withdraws an advert: peers drop it now instead of when it would have expired. */
  async withdraw (kind: AdvertKind, id: string): Promise<void> {
    const known = this.#own.get(`${kind}/${id}`)
    if (known === undefined) return
    this.#own.delete(`${kind}/${id}`)
    const now = Date.now()
    await this.#announce({ ...known, seq: this.#seq++, issuedAt: now, expiresAt: now + this.#init.advertTtlMs, withdrawn: true }, false)
  }

  async #announce (unsigned: UnsignedAdvert, toDht = true): Promise<void> {
    const advert = await signAdvert(this.#init.privateKey, unsigned)
    this.cache.offer(advert)
    const bytes = encodeAdvert(advert)
    try {
      await this.node.services.pubsub.publish(ADVERT_TOPIC, bytes)
    } catch (err) {
      this.#init.log.debug({ err }, 'gossip publish failed')
    }
    if (toDht) void this.#putDht(advert, bytes)
  }

  async #putDht (advert: Advert, bytes: Uint8Array): Promise<void> {
    if (this.node.getPeers().length === 0) return
    for (const key of keysOf(advert)) {
      try {
        await this.node.contentRouting.put(key, bytes, { signal: AbortSignal.timeout(5000) })
      } catch (err) {
        this.#init.log.debug({ err }, 'dht put failed')
      }
    }
  }

  async #refresh (): Promise<void> {
    const now = Date.now()
    for (const [key, a] of this.#own) {
      const next = { ...a, seq: this.#seq++, issuedAt: now, expiresAt: now + this.#init.advertTtlMs } as UnsignedAdvert
      this.#own.set(key, next)
      await this.#announce(next)
    }
  }

  async #syncWith (peer: PeerId): Promise<void> {
    const id = peer.toString()
    if (this.#synced.has(id)) return
    this.#synced.add(id)
    try {
      const adverts = await this.rpc.call(peer, 'adverts.sync', {}, { timeoutMs: 10_000 })
      if (!Array.isArray(adverts)) throw new Error('sync reply is not a list')
      for (const a of adverts.slice(0, 10_000)) await this.receive(a)
    } catch (err) {
      this.#synced.delete(id)
      this.#init.log.debug({ err, peer: id }, 'advert sync failed')
    }
  }

  /** A bootstrap host that was down when we started is retried until it answers. */
  async #redialBootstrap (): Promise<void> {
    const connected = new Set(this.node.getPeers().map(p => p.toString()))
    for (const addr of this.#init.bootstrap) {
      const ma = multiaddr(addr)
      const peer = ma.getComponents().findLast(c => c.name === 'p2p')?.value
      if (peer === undefined || connected.has(peer)) continue
      await this.node.dial(ma, { signal: AbortSignal.timeout(3000) }).catch(() => {})
    }
  }

  search (q: AdvertQuery): Advert[] {
    return this.cache.search(q)
  }

  /** Finds the advert about `kind`/`id`: the cache first, then the DHT. */
  async lookup<K extends AdvertKind>(kind: K, id: string, signal?: AbortSignal): Promise<AdvertOf<K> | undefined> {
    return (this.cache.get(kind, id) ?? await this.#dhtGet(idKey(kind, id), signal)) as AdvertOf<K> | undefined
  }

  /** Finds the newest advert of `kind` with this name: the cache first, then the DHT. */
  async lookupName<K extends 'template' | 'instance'>(kind: K, name: string, signal?: AbortSignal): Promise<AdvertOf<K> | undefined> {
    const cached = this.cache.search({ kind }).find(a => a.kind !== 'host' && a.body.name === name)
    return (cached ?? await this.#dhtGet(nameKey(kind, name), signal)) as AdvertOf<K> | undefined
  }

  async #dhtGet (key: Uint8Array, signal?: AbortSignal): Promise<Advert | undefined> {
    if (this.node.getPeers().length === 0) return undefined
    try {
      const timeout = AbortSignal.timeout(5000)
      const value = await this.node.contentRouting.get(key, { signal: signal === undefined ? timeout : AbortSignal.any([signal, timeout]) })
      const result = await verifyAdvert(value)
      if (!result.ok || result.advert.withdrawn === true) return undefined
      this.cache.offer(result.advert)
      return result.advert
    } catch {
      return undefined
    }
  }

  /** Makes the host's advertised addresses dialable before an RPC to it. */
  async learnAddresses (peer: string, addrs: string[]): Promise<void> {
    if (addrs.length === 0 || peer === this.peerId) return
    await this.node.peerStore.merge(peerIdFromString(peer), { multiaddrs: addrs.map(a => multiaddr(a)) })
  }
}

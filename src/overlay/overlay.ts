import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import type { Logger } from 'pino'
import { isMoreRecent, type Advert, type AdvertKind, type AdvertOf, type UnsignedAdvert } from '../core/index.ts'
import { encodeAdvert, REJECT_REASONS, signAdvert, verifyAdvert, type RejectReason } from './adverts.ts'
import { AdvertCache, type AdvertQuery, type CacheLimits } from './cache.ts'
import { idKey, keysOf, nameKey } from './dht.ts'
import { createXenosLibp2p, type XenosLibp2p } from './libp2p.ts'
import { Rpc, RPC_PROTOCOL } from './rpc.ts'
import { pullFrom, Refused, serveSync, type Syncable } from './sync.ts'

export const ADVERT_TOPIC = 'xenos/adverts/1'
/** How often a host pulls what it lacks from a random peer (anti-entropy behind gossip). */
export const SYNC_INTERVAL_MS = 5000

/** The sync topic of the adverts themselves (other topics are shared records). */
const ADVERTS_SYNC_TOPIC = 'adverts'

/**
 * Records every host keeps a whole copy of (template names), unlike adverts, which expire: spread
 * by gossip, pulled in pages from every new peer and from a random one now and then.
 */
export interface SharedRecords extends Omit<Syncable, 'receive'> {
  /** Checks and keeps a record from a peer: undefined if invalid, else whether it was new. */
  receive: (record: unknown) => boolean | undefined
}

/** Largest shared record accepted from gossip. */
const MAX_SHARED_RECORD_BYTES = 64 * 1024
/** How long after a host joins the keys that waited for peers are provided (the DHT takes the host in first). */
const PROVIDE_AGAIN_MS = 1000

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
  /** How much of the advert cache one host, and all, may take. @default DEFAULT_CACHE_LIMITS */
  cacheLimits?: Partial<CacheLimits>
  log: Logger
}

export const DEFAULT_ADVERT_TTL_MS = 30_000
/**
 * DHT copies of adverts are republished less often than gossip ones (a DHT put costs a query to
 * the closest peers, and the DHT only answers what the gossip-fed cache lacks), but live no
 * longer than any advert may: a host that is gone leaves the DHT within five minutes too.
 */
export const DHT_ADVERT_TTL_MS = 5 * 60_000
export const DHT_REPUBLISH_MS = 2 * 60_000
/** How long a DHT lookup keeps gathering answers after the first valid one, to find the newest (the closest peers answer within it). */
const DHT_GATHER_MS = 150

type BodyOf<K extends AdvertKind> = AdvertOf<K>['body']

export interface LookupOptions {
  signal?: AbortSignal
  /** Set to false to ask the DHT even when the cache knows the answer. @default true */
  fromCache?: boolean
}

export interface OverlayCounters {
  /** New, valid adverts by the path they came on. */
  acceptedVia: { gossip: number, sync: number }
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
  readonly cache: AdvertCache
  readonly counters: OverlayCounters = {
    acceptedVia: { gossip: 0, sync: 0 },
    accepted: 0,
    stale: 0,
    rejected: Object.fromEntries(REJECT_REASONS.map(r => [r, 0])) as Record<RejectReason, number>,
  }

  readonly #init: OverlayInit
  readonly #own = new Map<string, UnsignedAdvert>()
  readonly #shared = new Map<string, SharedRecords>()
  #seq = 0
  #timers: NodeJS.Timeout[] = []
  #reannounceTimer: NodeJS.Timeout | undefined
  /** Keys this host provides on the DHT, and whether some of them still wait for peers to hold them. */
  readonly #provided = new Set<string>()
  #provideLater = false
  /** What peers offered in syncs and was refused: not asked for again. */
  readonly #refused = new Refused()
  /** Adverts (withdrawals too: a restarted host withdraws what it destroyed) that waited for a host to join to reach the DHT. */
  readonly #putLater = new Map<string, UnsignedAdvert>()
  #providing = false

  private constructor (node: XenosLibp2p, init: OverlayInit) {
    this.node = node
    this.#init = init
    this.rpc = new Rpc(node, init.log)
    this.cache = new AdvertCache(init.cacheLimits)
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

  /** Keeps `records` in step with every other host on `topic`. Call before start. */
  share (topic: string, records: SharedRecords): void {
    this.#shared.set(topic, records)
  }

  /** Sends a record this host just accepted to every host sharing `topic`. */
  async broadcast (topic: string, record: unknown): Promise<void> {
    try {
      await this.node.services.pubsub.publish(topic, new TextEncoder().encode(JSON.stringify(record)))
    } catch (err) {
      this.#init.log.debug({ err, topic }, 'gossip publish failed')
    }
  }

  /** Signs `data` with this host's key (base64url): what only this host can say. */
  async sign (data: Uint8Array): Promise<string> {
    return Buffer.from(await this.#init.privateKey.sign(data)).toString('base64url')
  }

  /** The adverts as the sync protocol sees them. */
  get #advertSync (): Syncable {
    return {
      digest: (after, limit) => this.cache.digest(after, limit),
      pick: (keys, maxBytes) => this.cache.pick(keys, maxBytes),
      version: key => this.cache.version(key),
      // What a full share of the cache would refuse is not even asked for (and checked).
      hasRoomFor: key => this.cache.hasRoomFor(key),
      receive: async record => { await this.receive(record, 'sync') },
    }
  }

  async start (): Promise<void> {
    serveSync(this.rpc, topic => topic === ADVERTS_SYNC_TOPIC ? this.#advertSync : this.#shared.get(topic) as Syncable | undefined)
    await this.rpc.start()
    const pubsub = this.node.services.pubsub
    pubsub.topicValidators.set(ADVERT_TOPIC, async (_peer, msg) => {
      const changed = await this.receive(msg.data, 'gossip')
      return changed === undefined ? TopicValidatorResult.Reject : changed ? TopicValidatorResult.Accept : TopicValidatorResult.Ignore
    })
    for (const [topic, records] of this.#shared) {
      pubsub.topicValidators.set(topic, (_peer, msg) => {
        if (msg.data.byteLength > MAX_SHARED_RECORD_BYTES) return TopicValidatorResult.Reject
        let changed: boolean | undefined
        try {
          changed = records.receive(JSON.parse(new TextDecoder().decode(msg.data)))
        } catch {
          changed = undefined
        }
        return changed === undefined ? TopicValidatorResult.Reject : changed ? TopicValidatorResult.Accept : TopicValidatorResult.Ignore
      })
    }
    // A peer that just subscribed missed what we published before: tell it soon.
    pubsub.addEventListener('subscription-change', evt => {
      if (evt.detail.subscriptions.some(s => s.topic === ADVERT_TOPIC && s.subscribe)) this.#reannounceSoon()
    })
    this.node.addEventListener('peer:identify', evt => {
      const { peerId, protocols } = evt.detail
      if (!protocols.includes(RPC_PROTOCOL)) return
      void this.#syncWith(peerId)
      // Once the DHT has taken the new host into its routing table.
      if (this.#provideLater) setTimeout(() => { void this.#provideAgain() }, PROVIDE_AGAIN_MS).unref()
      if (this.#putLater.size > 0) setTimeout(() => { void this.#putAgain() }, PROVIDE_AGAIN_MS).unref()
    })
    const ttl = this.#init.advertTtlMs
    this.#timers.push(setInterval(() => { void this.#refresh() }, Math.max(200, Math.floor(ttl / 3))))
    this.#timers.push(setInterval(() => { this.cache.sweep() }, 1000))
    this.#timers.push(setInterval(() => { for (const a of this.#own.values()) void this.#putDht(a) }, DHT_REPUBLISH_MS))
    await this.node.start()
    pubsub.subscribe(ADVERT_TOPIC)
    for (const topic of this.#shared.keys()) pubsub.subscribe(topic)
    this.#timers.push(setInterval(() => {
      void this.#redialBootstrap()
      void this.#syncWithRandomPeer()
    }, SYNC_INTERVAL_MS))
  }

  async stop (): Promise<void> {
    for (const t of this.#timers) clearInterval(t)
    this.#timers = []
    clearTimeout(this.#reannounceTimer)
    await this.node.stop()
  }

  /**
   * Verifies an advert from a peer and caches it. Returns undefined when it was rejected, else
   * whether it told us something new.
   */
  async receive (data: unknown, via: keyof OverlayCounters['acceptedVia']): Promise<boolean | undefined> {
    const result = await verifyAdvert(data)
    if (!result.ok) {
      this.counters.rejected[result.reason]++
      this.#init.log.debug({ reason: result.reason, detail: result.detail }, 'advert rejected')
      return undefined
    }
    if (result.advert.host === this.peerId) return false
    const offered = this.cache.offer(result.advert)
    if (offered === 'new') {
      this.counters.accepted++
      this.counters.acceptedVia[via]++
    } else if (offered === 'stale') {
      this.counters.stale++
    } else {
      this.counters.rejected['over-cap']++
    }
    return offered === 'new'
  }

  /** Publishes (or republishes with a new body) this host's advert about `kind`/`id`. */
  async publish<K extends AdvertKind>(kind: K, id: string, body: BodyOf<K>): Promise<void> {
    const now = Date.now()
    const unsigned = { v: 1, kind, id, host: this.peerId, seq: this.#seq++, issuedAt: now, expiresAt: now + this.#init.advertTtlMs, body } as UnsignedAdvert
    this.#own.set(`${kind}/${id}`, unsigned)
    await this.#announce(unsigned)
    void this.#putDht(unsigned)
  }

  /**
   * Withdraws an advert: peers drop it now instead of when it would have expired. `body` is
   * what it said, for one published before this host restarted (whose copies may live on in
   * the DHT) and not published since.
   */
  async withdraw<K extends AdvertKind>(kind: K, id: string, body?: BodyOf<K>): Promise<void> {
    const known = this.#own.get(`${kind}/${id}`) ?? (body === undefined ? undefined : { v: 1, kind, id, host: this.peerId, seq: 0, issuedAt: 0, expiresAt: 0, body } as UnsignedAdvert)
    if (known === undefined) return
    this.#own.delete(`${kind}/${id}`)
    const now = Date.now()
    const tombstone = { ...known, seq: this.#seq++, issuedAt: now, expiresAt: now + this.#init.advertTtlMs, withdrawn: true } as UnsignedAdvert
    await this.#announce(tombstone)
    void this.#putDht(tombstone)
  }

  /** Signs and gossips an advert (and keeps it in this host's own cache). */
  async #announce (unsigned: UnsignedAdvert): Promise<void> {
    const advert = await signAdvert(this.#init.privateKey, unsigned)
    this.cache.offer(advert)
    const bytes = encodeAdvert(advert)
    try {
      await this.node.services.pubsub.publish(ADVERT_TOPIC, bytes)
    } catch (err) {
      this.#init.log.debug({ err }, 'gossip publish failed')
    }
  }

  /** Stores a long-lived copy of an advert in the DHT under its id and name keys (once a host joins, if none has). */
  async #putDht (unsigned: UnsignedAdvert): Promise<void> {
    if (this.node.getPeers().length === 0) {
      this.#putLater.set(`${unsigned.kind}/${unsigned.id}`, unsigned)
      return
    }
    const now = Date.now()
    const advert = await signAdvert(this.#init.privateKey, { ...unsigned, seq: this.#seq++, issuedAt: now, expiresAt: now + DHT_ADVERT_TTL_MS })
    const bytes = encodeAdvert(advert)
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

  #reannounceSoon (): void {
    if (this.#reannounceTimer !== undefined) return
    this.#reannounceTimer = setTimeout(() => {
      this.#reannounceTimer = undefined
      void this.#refresh()
    }, 200)
  }

  /** Pulls from `peer` every advert and shared record it holds that is newer than ours (or that we lack). */
  async #syncWith (peer: PeerId): Promise<void> {
    try {
      await pullFrom(this.rpc, peer, ADVERTS_SYNC_TOPIC, this.#advertSync, this.#refused)
      for (const [topic, records] of this.#shared) {
        await pullFrom(this.rpc, peer, topic, { ...records, receive: async r => { records.receive(r) } }, this.#refused)
      }
    } catch (err) {
      this.#init.log.debug({ err, peer: peer.toString() }, 'sync failed')
    }
  }

  async #syncWithRandomPeer (): Promise<void> {
    const peers = this.node.getPeers()
    const peer = peers[Math.floor(Math.random() * peers.length)]
    if (peer !== undefined) await this.#syncWith(peer)
  }

  /** A bootstrap host that was down when we started is retried until it answers. */
  async #redialBootstrap (): Promise<void> {
    const connected = new Set(this.node.getPeers().map(p => p.toString()))
    for (const addr of this.#init.bootstrap) {
      const ma = multiaddr(addr)
      const peer = ma.getComponents().findLast(c => c.name === 'p2p')?.value
      if (peer === undefined || connected.has(peer)) continue
      await this.node.dial(ma, { signal: AbortSignal.timeout(10_000) }).catch(() => {})
    }
  }

  /** The peers this host is connected to now, with the addresses of those connections. */
  connectedPeers (): Array<{ id: string, addrs: string[] }> {
    return this.node.getPeers().map(p => ({ id: p.toString(), addrs: this.node.getConnections(p).map(c => c.remoteAddr.toString()) }))
  }

  /** Peers known to subscribe to the advert topic. */
  gossipSubscribers (): number {
    return this.node.services.pubsub.getSubscribers(ADVERT_TOPIC).length
  }

  search (q: AdvertQuery, limit?: number): Advert[] {
    return this.cache.search(q, limit)
  }

  /** Finds the advert about `kind`/`id`: the cache first (unless `fromCache` is false), then the DHT. */
  async lookup<K extends AdvertKind>(kind: K, id: string, options: LookupOptions = {}): Promise<AdvertOf<K> | undefined> {
    const cached = options.fromCache === false ? undefined : this.cache.get(kind, id)
    return (cached ?? await this.#dhtGet(idKey(kind, id), options.signal)) as AdvertOf<K> | undefined
  }

  /** Finds the newest advert of `kind` with this name: the cache first (unless `fromCache` is false), then the DHT. */
  async lookupName<K extends 'template' | 'instance'>(kind: K, name: string, options: LookupOptions = {}): Promise<AdvertOf<K> | undefined> {
    const cached = options.fromCache === false ? undefined : this.cache.search({ kind }).find(a => a.kind !== 'host' && a.body.name === name)
    return (cached ?? await this.#dhtGet(nameKey(kind, name), options.signal)) as AdvertOf<K> | undefined
  }

  /**
   * Asks the DHT for `key` and keeps, of the records that verify, the most recent (a withdrawal
   * included, which then means the thing is gone): for a moment after the first, then returns.
   * DHT copies outlive gossip adverts, so they are returned but not cached (a dead host must
   * still leave search results within the gossip TTL).
   */
  async #dhtGet (key: Uint8Array, signal?: AbortSignal): Promise<Advert | undefined> {
    if (this.node.getPeers().length === 0) return undefined
    const stop = new AbortController()
    const signals = [stop.signal, AbortSignal.timeout(5000), ...(signal === undefined ? [] : [signal])]
    let best: Advert | undefined
    try {
      for await (const event of this.node.services.dht.get(key, { signal: AbortSignal.any(signals) })) {
        const value = event.name === 'PEER_RESPONSE' ? event.record?.value : event.name === 'VALUE' ? event.value : undefined
        if (value === undefined) continue
        const result = await verifyAdvert(value)
        if (!result.ok) continue
        if (best === undefined) setTimeout(() => { stop.abort() }, DHT_GATHER_MS).unref()
        if (best === undefined || isMoreRecent(result.advert, best)) best = result.advert
      }
    } catch (err) {
      if (best === undefined) this.#init.log.debug({ err }, 'dht get failed')
    } finally {
      stop.abort()
    }
    return best?.withdrawn === true ? undefined : best
  }

  /** Tells the DHT this host holds content `key` (a blob id), so others fetching it find us. */
  async provide (key: string): Promise<void> {
    this.#provided.add(key)
    if (!await this.#provideNow(key)) this.#provideLater = true
  }

  async #provideNow (key: string): Promise<boolean> {
    if (this.node.getPeers().length === 0) return false
    try {
      await this.node.contentRouting.provide(await contentCid(key), { signal: AbortSignal.timeout(10_000) })
      return true
    } catch (err) {
      this.#init.log.debug({ err, key }, 'dht provide failed')
      return false
    }
  }

  async #putAgain (): Promise<void> {
    const waiting = [...this.#putLater.values()]
    this.#putLater.clear()
    for (const a of waiting) await this.#putDht(a)
  }

  /** Provides again what could not be provided (no peers yet, as after a restart) once a host joins. */
  async #provideAgain (): Promise<void> {
    if (!this.#provideLater || this.#providing) return
    this.#provideLater = false
    this.#providing = true
    try {
      for (const key of this.#provided) if (!await this.#provideNow(key)) this.#provideLater = true
    } finally {
      this.#providing = false
    }
    if (this.#provideLater) setTimeout(() => { void this.#provideAgain() }, PROVIDE_AGAIN_MS * 10).unref()
  }

  /** Hosts the DHT knows to hold content `key`, gathered for at most `timeoutMs`. */
  async findProviders (key: string, timeoutMs = 2000): Promise<string[]> {
    const found = new Set<string>()
    if (this.node.getPeers().length === 0) return []
    try {
      for await (const provider of this.node.contentRouting.findProviders(await contentCid(key), { signal: AbortSignal.timeout(timeoutMs) })) {
        const id = provider.id.toString()
        if (id === this.peerId) continue
        found.add(id)
        if (provider.multiaddrs.length > 0) await this.node.peerStore.merge(provider.id, { multiaddrs: provider.multiaddrs }).catch(() => {})
      }
    } catch (err) {
      this.#init.log.debug({ err, key }, 'dht findProviders ended')
    }
    return [...found]
  }

  /** The IP address this host reaches `peer` at over a direct TCP connection, if it has one (not relayed). */
  directAddress (peer: string): string | undefined {
    for (const c of this.node.getConnections(peerIdFromString(peer))) {
      const ip = /^\/ip[46]\/([^/]+)\/tcp\/\d+(\/p2p\/[^/]+)?$/.exec(c.remoteAddr.toString())?.[1]
      if (ip !== undefined) return ip
    }
    return undefined
  }

  /**
   * Makes a host dialable by the addresses it advertises (before an RPC or a transfer to it);
   * false when it is neither connected nor advertised, so nothing could reach it.
   */
  async learnHost (peer: string): Promise<boolean> {
    if (peer === this.peerId) return true
    const addrs = (await this.lookup('host', peer))?.body.addrs ?? []
    if (addrs.length > 0) await this.node.peerStore.merge(peerIdFromString(peer), { multiaddrs: addrs.map(a => multiaddr(a)) })
    return addrs.length > 0 || this.node.getConnections(peerIdFromString(peer)).length > 0
  }
}

/** The DHT's name for a piece of Xenos content, kept apart from anyone else's CIDs. */
async function contentCid (key: string): Promise<CID> {
  return CID.createV1(raw.code, await sha256.digest(new TextEncoder().encode(`xenos-content:${key}`)))
}

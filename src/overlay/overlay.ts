import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { PeerQueue } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import type { Logger } from 'pino'
import { isMoreRecent, MAX_ADVERT_TTL_MS, type Advert, type AdvertKind, type AdvertOf, type UnsignedAdvert } from '../core/index.ts'
import { z } from 'zod'
import { encodeAdvert, REJECT_REASONS, signAdvert, verifyAdvert, verifyHostSignature, type RejectReason } from './adverts.ts'
import { AdvertCache, type AdvertQuery, type CacheLimits } from './cache.ts'
import { idKey, keysOf, nameKey } from './dht.ts'
import { createXenosLibp2p, type Libp2pInit, type XenosLibp2p } from './libp2p.ts'
import { downNoticeBytes, downNoticeSchema, Liveness, type DownNotice } from './liveness.ts'
import { Probes } from './probe.ts'
import { Rpc, RPC_PROTOCOL } from './rpc.ts'
import { Soon } from './soon.ts'
import { pullFrom, Refused, serveSync, type Syncable } from './sync.ts'

export const ADVERT_TOPIC = 'xenos/adverts/1'
/** Where hosts tell each other of a host they took for dead (see liveness.ts). */
export const DOWN_TOPIC = 'xenos/down/1'
/** Largest down notice accepted from gossip. */
const MAX_DOWN_NOTICE_BYTES = 1024
/** Pings this host makes at once for others (indirect probes): more are refused. */
const MAX_PINGS_FOR_OTHERS = 8
/**
 * How often a host pulls what it lacks from a random peer (anti-entropy behind gossip; Serf's
 * push-pull runs every 30 s too). A new peer is pulled from at once.
 */
export const SYNC_INTERVAL_MS = 30_000
/** Syncs with peers that run at once (two, so that one slow peer holds up none). */
const SYNCS_AT_ONCE = 2
/** How often a bootstrap host that is not connected is dialled again. */
const REDIAL_INTERVAL_MS = 5000

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
  /** Lifetime of this host's adverts; they are re-published every third of it. @default DEFAULT_ADVERT_TTL_MS */
  advertTtlMs: number
  /** How much of the advert cache one host, and all, may take. @default DEFAULT_CACHE_LIMITS */
  cacheLimits?: Partial<CacheLimits>
  /** How hosts reach each other: TCP with Yamux unless given (see Libp2pInit). */
  network?: Libp2pInit['network'] | undefined
  log: Logger
}

/**
 * Adverts are sent when they change; a refresh every ten minutes only heals what gossip and
 * anti-entropy missed, since a host's death is found by probing, not by its adverts running out.
 */
export const DEFAULT_ADVERT_TTL_MS = 30 * 60_000
/**
 * A withdrawal lives long enough to reach every host (gossip, then anti-entropy every 30
 * seconds) and no longer, or a host that makes and ends many instances would fill its share of
 * every cache with them.
 */
const WITHDRAWAL_TTL_MS = 5 * 60_000
/**
 * DHT copies of adverts live as long as any advert may and are put again every third of that
 * (a put costs a query to the closest peers, and the DHT only answers what the gossip-fed cache
 * lacks). A copy from a host this one has no live advert of is believed only if the host answers
 * a ping.
 */
export const DHT_ADVERT_TTL_MS = MAX_ADVERT_TTL_MS
export const DHT_REPUBLISH_MS = DHT_ADVERT_TTL_MS / 3
/** How long the host of a DHT copy, not known live here, has to answer before the copy is believed. */
const DHT_PING_MS = 1500
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
  /** Hosts taken for dead: by this host's probes, or on another's notice after this host's own ping. */
  hostsDown: { probed: number, notice: number }
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
    hostsDown: { probed: 0, notice: 0 },
    accepted: 0,
    stale: 0,
    rejected: Object.fromEntries(REJECT_REASONS.map(r => [r, 0])) as Record<RejectReason, number>,
  }

  readonly #init: OverlayInit
  readonly #own = new Map<string, UnsignedAdvert>()
  readonly #shared = new Map<string, SharedRecords>()
  #seq = 0
  #timers: NodeJS.Timeout[] = []
  /** A new signature of every advert of this host's, soon after a peer said it was down. */
  readonly #reannounce = new Soon(200, () => { void this.#refresh() })
  /** This host's adverts, signed, that reached no peer (none took gossip yet): sent again when one does. */
  readonly #unsent = new Map<string, Uint8Array>()
  readonly #resendUnsent = new Soon(200, () => { for (const [key, bytes] of this.#unsent) void this.#send(key, bytes) })
  /** The copy of each advert whose publishing is under way, the latest: it alone decides whether the advert is left unsent. */
  readonly #sending = new Map<string, Uint8Array>()
  /** Keys this host provides on the DHT, and whether some of them still wait for peers to hold them. */
  readonly #provided = new Set<string>()
  #provideLater = false
  /** What peers offered in syncs and was refused: not asked for again. */
  readonly #refused = new Refused()
  /** Adverts (withdrawals too: a restarted host withdraws what it destroyed) that waited for a host to join to reach the DHT. */
  readonly #putLater = new Map<string, UnsignedAdvert>()
  #providing = false
  readonly #liveness: Liveness
  readonly #probes: Probes
  #pingsForOthers = 0
  /**
   * Syncs run a few at a time: a joining host differs from each of its new peers at first, and
   * pulling from them all at once, it would be sent everything by each. One after another, the
   * later ones find the same root hash and cost a message each way.
   */
  readonly #syncs = new PeerQueue({ concurrency: SYNCS_AT_ONCE })

  private constructor (node: XenosLibp2p, init: OverlayInit) {
    this.node = node
    this.#init = init
    this.rpc = new Rpc(node, init.log)
    this.cache = new AdvertCache(init.cacheLimits)
    this.#probes = new Probes(node)
    this.#liveness = new Liveness({
      self: this.peerId,
      hosts: () => {
        const advertised = new Set(this.cache.search({ kind: 'host' }).map(a => a.host))
        return this.node.getPeers().map(p => p.toString()).filter(p => advertised.has(p))
      },
      ping: async (peer, timeoutMs) => await this.#ping(peer, timeoutMs),
      pingVia: async (via, peer, timeoutMs) => {
        const reply = await this.rpc.call(peerIdFromString(via), 'liveness.ping', { peer, timeoutMs }, { timeoutMs: timeoutMs + 1000 })
        return pingReplySchema.parse(reply).answered
      },
      connected: () => this.node.getPeers().map(p => p.toString()),
      newestOf: host => this.cache.newestOf(host),
      forget: (host, upTo) => {
        this.cache.forgetHost(host, upTo)
        // Its connections are dead too; if it was only busy, it dials back and is taken back.
        void this.node.hangUp(peerIdFromString(host)).catch(() => {})
      },
      tell: async (host, upTo) => {
        this.counters.hostsDown.probed++
        await this.#tellDown(host, upTo)
      },
      // Asked every probe period: from the (mostly empty) list of forgotten hosts, not from every
      // connection (libp2p rebuilds and prints each peer id to list them).
      forgotten: () => this.cache.forgottenHosts().filter(h => this.#isConnected(h)),
      revive: host => {
        this.cache.unforget(host)
        void this.#syncWith(peerIdFromString(host))
      },
      refute: () => { this.#reannounce.ask() },
      log: init.log.child({ part: 'liveness' }),
    })
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
    this.rpc.handle('liveness.ping', pingRequestSchema, async ({ peer, timeoutMs }) => {
      if (this.#pingsForOthers >= MAX_PINGS_FOR_OTHERS) return { answered: false }
      this.#pingsForOthers++
      try {
        return { answered: await this.#ping(peer, timeoutMs) }
      } finally {
        this.#pingsForOthers--
      }
    })
    await this.rpc.start()
    await this.#probes.start()
    const pubsub = this.node.services.pubsub
    pubsub.topicValidators.set(DOWN_TOPIC, async (_peer, msg) => {
      const notice = await this.#downNotice(msg.data)
      if (notice === undefined) return TopicValidatorResult.Reject
      if (!await this.#liveness.heard(notice)) return TopicValidatorResult.Ignore
      this.counters.hostsDown.notice++
      return TopicValidatorResult.Accept
    })
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
    // A new peer pulls what it lacks (below, on identify); only adverts that reached nobody,
    // published before any peer took gossip, go out again, once one does. Signing them anew
    // instead would send every host's adverts through the whole cloud at every join.
    pubsub.addEventListener('subscription-change', evt => {
      if (this.#unsent.size > 0 && evt.detail.subscriptions.some(s => s.topic === ADVERT_TOPIC && s.subscribe)) this.#resendUnsent.ask()
    })
    this.node.addEventListener('peer:disconnect', evt => { this.#liveness.disconnected(evt.detail.toString()) })
    this.node.addEventListener('peer:identify', evt => {
      const { peerId, protocols } = evt.detail
      if (!protocols.includes(RPC_PROTOCOL)) return
      // A host taken for dead that connects again is alive after all.
      this.cache.unforget(peerId.toString())
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
    pubsub.subscribe(DOWN_TOPIC)
    for (const topic of this.#shared.keys()) pubsub.subscribe(topic)
    this.#liveness.start()
    this.#timers.push(setInterval(() => { void this.#redialBootstrap() }, REDIAL_INTERVAL_MS))
    this.#timers.push(setInterval(() => { void this.#syncWithRandomPeer() }, SYNC_INTERVAL_MS))
  }

  async stop (): Promise<void> {
    this.#liveness.stop()
    for (const t of this.#timers) clearInterval(t)
    this.#timers = []
    this.#reannounce.cancel()
    this.#resendUnsent.cancel()
    this.#syncs.abort()
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
    const tombstone = { ...known, seq: this.#seq++, issuedAt: now, expiresAt: now + Math.min(this.#init.advertTtlMs, WITHDRAWAL_TTL_MS), withdrawn: true } as UnsignedAdvert
    await this.#announce(tombstone)
    void this.#putDht(tombstone)
  }

  /** Whether `peer` answers a probe within `timeoutMs` (dialled, if need be, at the addresses its cached advert or an earlier connection gave). */
  async #ping (peer: string, timeoutMs: number): Promise<boolean> {
    try {
      const id = peerIdFromString(peer)
      const addrs = (this.cache.get('host', peer) as AdvertOf<'host'> | undefined)?.body.addrs ?? []
      if (this.node.getConnections(id).length === 0) await this.#dialableAt(id, addrs)
      return await this.#probes.probe(id, timeoutMs)
    } catch {
      return false
    }
  }

  /** Tells libp2p the addresses an advert gives for `peer`, so it can be dialled there. */
  async #dialableAt (peer: PeerId, addrs: string[]): Promise<void> {
    if (addrs.length > 0) await this.node.peerStore.merge(peer, { multiaddrs: addrs.map(a => multiaddr(a)) })
  }

  /** Signs and gossips a notice that this host took `host` for dead. */
  async #tellDown (host: string, upTo: number): Promise<void> {
    const unsigned = { v: 1 as const, host, upTo, by: this.peerId, at: Date.now() }
    const notice: DownNotice = { ...unsigned, sig: await this.sign(downNoticeBytes(unsigned)) }
    try {
      await this.node.services.pubsub.publish(DOWN_TOPIC, new TextEncoder().encode(JSON.stringify(notice)))
    } catch (err) {
      this.#init.log.debug({ err }, 'gossip publish failed')
    }
  }

  /** A down notice from gossip, if it is well formed and signed by the host it names as its reporter. */
  async #downNotice (data: Uint8Array): Promise<DownNotice | undefined> {
    if (data.byteLength > MAX_DOWN_NOTICE_BYTES) return undefined
    let parsed
    try {
      parsed = downNoticeSchema.safeParse(JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(data)))
    } catch {
      return undefined
    }
    if (!parsed.success || parsed.data.by === parsed.data.host) return undefined
    const { sig, ...unsigned } = parsed.data
    return await verifyHostSignature(unsigned.by, downNoticeBytes(unsigned), sig) ? parsed.data : undefined
  }

  /** Signs and gossips an advert (and keeps it in this host's own cache). */
  async #announce (unsigned: UnsignedAdvert): Promise<void> {
    const advert = await signAdvert(this.#init.privateKey, unsigned)
    this.cache.offer(advert)
    await this.#send(`${advert.kind}/${advert.id}`, encodeAdvert(advert))
  }

  async #send (key: string, bytes: Uint8Array): Promise<void> {
    this.#sending.set(key, bytes)
    let sent = false
    try {
      sent = (await this.node.services.pubsub.publish(ADVERT_TOPIC, bytes)).recipients.length > 0
    } catch (err) {
      this.#init.log.debug({ err }, 'gossip publish failed')
    }
    // An older copy that ends after a newer one began says nothing about the newer.
    if (this.#sending.get(key) !== bytes) return
    this.#sending.delete(key)
    if (sent) this.#unsent.delete(key)
    else this.#unsent.set(key, bytes)
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

  /** Pulls from `peer` every advert and shared record it holds that is newer than ours (or that we lack). */
  async #syncWith (peer: PeerId): Promise<void> {
    if (this.#syncs.has(peer)) return
    await this.#syncs.add(async () => {
      try {
        await pullFrom(this.rpc, peer, ADVERTS_SYNC_TOPIC, this.#advertSync, this.#refused)
        for (const [topic, records] of this.#shared) {
          await pullFrom(this.rpc, peer, topic, { ...records, receive: async r => { records.receive(r) } }, this.#refused)
        }
      } catch (err) {
        this.#init.log.debug({ err, peer: peer.toString() }, 'sync failed')
      }
    }, { peerId: peer }).catch(() => {})
  }

  async #syncWithRandomPeer (): Promise<void> {
    const peers = this.node.getPeers()
    const peer = peers[Math.floor(Math.random() * peers.length)]
    if (peer !== undefined) await this.#syncWith(peer)
  }

  /** A bootstrap host that was down when we started is retried until it answers. */
  async #redialBootstrap (): Promise<void> {
    for (const addr of this.#init.bootstrap) {
      const ma = multiaddr(addr)
      const peer = ma.getComponents().findLast(c => c.name === 'p2p')?.value
      if (peer === undefined || this.#isConnected(peer)) continue
      await this.node.dial(ma, { signal: AbortSignal.timeout(10_000) }).catch(() => {})
    }
  }

  #isConnected (peer: string): boolean {
    try {
      return this.node.getConnections(peerIdFromString(peer)).length > 0
    } catch {
      return false
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
  async #dhtGet (key: Uint8Array, signal?: AbortSignal, checkHost = true): Promise<Advert | undefined> {
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
    if (best === undefined || best.withdrawn === true) return undefined
    // A copy of a host that is gone may outlive it in the DHT.
    if (checkHost && this.cache.get('host', best.host) === undefined && !await this.#answersAtDhtAddress(best)) return undefined
    return best
  }

  /** Whether the host of a DHT copy answers a ping at the addresses of its own advert's DHT copy. */
  async #answersAtDhtAddress (advert: Advert): Promise<boolean> {
    const hostAdvert = advert.kind === 'host' ? advert : await this.#dhtGet(idKey('host', advert.host), undefined, false)
    const addrs = hostAdvert?.kind === 'host' ? hostAdvert.body.addrs : []
    await this.#dialableAt(peerIdFromString(advert.host), addrs).catch(() => {})
    return await this.#ping(advert.host, DHT_PING_MS)
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
    await this.#dialableAt(peerIdFromString(peer), addrs)
    return addrs.length > 0 || this.#isConnected(peer)
  }
}

const pingRequestSchema = z.strictObject({ peer: z.string().min(1).max(128), timeoutMs: z.number().int().min(100).max(5000) })
const pingReplySchema = z.strictObject({ answered: z.boolean() })

/** The DHT's name for a piece of Xenos content, kept apart from anyone else's CIDs. */
async function contentCid (key: string): Promise<CID> {
  return CID.createV1(raw.code, await sha256.digest(new TextEncoder().encode(`xenos-content:${key}`)))
}

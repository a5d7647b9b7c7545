/**
 * @packageDocumentation
 * The peer-to-peer overlay between hosts, on js-libp2p: signed, expiring adverts spread by
 * gossip and stored in the DHT, a local advert cache for searches, and RPC between hosts.
 * Everything a peer sends is verified before it is used.
 *
 * @example
 * ```ts
 * const overlay = await Overlay.create({ privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], mdns: false, advertTtlMs: 30 * 60_000, log })
 * await overlay.start()
 * await overlay.publish('template', id, body)
 * overlay.search({ kind: 'template', text: 'web' })
 * ```
 */
export { Overlay, ADVERT_TOPIC, DOWN_TOPIC, DEFAULT_ADVERT_TTL_MS, type OverlayInit, type OverlayCounters, type LookupOptions } from './overlay.ts'
export { Rpc, RPC_PROTOCOL, type CallOptions, type RpcObservation } from './rpc.ts'
export { signAdvert, verifyAdvert, verifyHostSignature, encodeAdvert, REJECT_REASONS, type RejectReason } from './adverts.ts'
export { AdvertCache, DEFAULT_CACHE_LIMITS, type AdvertQuery, type CacheLimits } from './cache.ts'
export { serveSync, pullFrom, DIGEST_PAGE, type Syncable } from './sync.ts'
export { Liveness, downNoticeBytes, SUSPECT_MS, type DownNotice, type LivenessInit } from './liveness.ts'
export { Probes, PROBE_PROTOCOL } from './probe.ts'
export { loadOrCreateHostKey } from './identity.ts'

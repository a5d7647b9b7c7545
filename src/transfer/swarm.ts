import type { Libp2p } from '@libp2p/interface'
import type { Logger } from 'pino'
import { setTimeout as sleep } from 'node:timers/promises'
import { XenosError, type ChunkIndex } from '../core/index.ts'
import { fetchChunk, fetchHave, fetchIndex } from './protocol.ts'

/** A blob being filled, as the swarm sees it (images/BlobStore's PartialBlob). */
export interface PartialSink {
  readonly have: boolean[]
  readonly missing: number[]
  readonly heldBytes: number
  write: (i: number, data: Uint8Array) => Promise<void>
  complete: () => Promise<void>
}

/** Where fetched blobs go. */
export interface ChunkSink {
  has: (blob: string) => Promise<boolean>
  index: (blob: string) => Promise<ChunkIndex | undefined>
  openPartial: (blob: string, index: ChunkIndex) => Promise<PartialSink>
}

export interface SwarmProgress {
  blob: string
  size: number
  /** Bytes held: resumed, copied from local blobs, or fetched. */
  held: number
  /** Bytes fetched from peers in this pull. */
  fetched: number
  /** Peers that sent at least one chunk in this pull. */
  peers: number
}

export interface SwarmResult {
  fetched: number
  /** Bytes received from each peer. */
  fromPeers: Record<string, number>
  /** Peers that sent data not matching the index, dropped from this pull. */
  penalised: string[]
}

export interface SwarmFetchInit {
  node: Libp2p
  sink: ChunkSink
  blob: string
  /** Refuse blobs larger than this (the size the template declares). */
  maxBytes: number
  /** Hosts that may hold the blob or part of it; asked again while the pull runs. */
  providers: () => Promise<string[]>
  /** Called once this host holds a chunk of the blob, so it can offer it to others. */
  onHolding?: () => void
  onProgress?: (p: SwarmProgress) => void
  /** A peer sent a chunk that does not match the index. */
  onPenalty?: (peer: string) => void
  /** The ticket a peer gave this host to read the blob, if it needs one (see ServeOptions.admit). */
  ticketFor?: (peer: string) => string | undefined
  log: Logger
  /** Chunk requests in flight per peer. @default 4 */
  perPeer?: number
  /** Give up when no chunk arrives for this long. @default 60 s */
  stallMs?: number
  signal?: AbortSignal
}

interface PeerState {
  have: boolean[] | undefined
  complete: boolean
  inflight: number
  failures: number
  /** When its `have` map was last asked for, or it may be tried again after failures. */
  checkedAt: number
  retryAt: number
  banned: boolean
}

const PROVIDER_REFRESH_MS = 1000
const HAVE_REFRESH_MS = 1000

/**
 * Fetches a blob from every peer that holds any of it at once. The index comes from any peer and
 * is checked against the blob id; each chunk is checked against the index before it is kept.
 * Rarest chunks go first (random among equals), a peer has a few requests in flight at most, a
 * chunk that fails or times out goes back to the pool for another peer, and a peer that sends bad
 * data is dropped from the pull. Chunks already held (from an interrupted pull, as zeros, or in
 * other local blobs) are never fetched.
 */
export async function swarmFetch (init: SwarmFetchInit): Promise<SwarmResult> {
  const result: SwarmResult = { fetched: 0, fromPeers: {}, penalised: [] }
  if (await init.sink.has(init.blob)) return result
  const perPeer = init.perPeer ?? 4
  const stallMs = init.stallMs ?? 60_000
  const peers = new Map<string, PeerState>()
  let providersAt = 0

  async function refreshProviders (): Promise<void> {
    if (Date.now() - providersAt < PROVIDER_REFRESH_MS) return
    providersAt = Date.now()
    for (const p of await init.providers().catch(() => [])) {
      if (!peers.has(p)) peers.set(p, { have: undefined, complete: false, inflight: 0, failures: 0, checkedAt: 0, retryAt: 0, banned: false })
    }
  }

  function penalise (peer: string, why: string): void {
    const s = peers.get(peer)
    if (s === undefined || s.banned) return
    s.banned = true
    result.penalised.push(peer)
    init.onPenalty?.(peer)
    init.log.warn({ peer, blob: init.blob, why }, 'peer sent bad data: dropped from this pull')
  }

  function failed (peer: string, err: unknown): void {
    const s = peers.get(peer)
    if (s === undefined) return
    if (err instanceof XenosError && err.code === 'PEER_PROTOCOL') {
      penalise(peer, err.message)
      return
    }
    s.failures++
    s.retryAt = Date.now() + Math.min(10_000, 250 * 2 ** s.failures)
  }

  const index = await obtainIndex()
  if (index.size > init.maxBytes) throw new XenosError('PEER_PROTOCOL', `blob ${init.blob} is ${index.size} bytes, more than the ${init.maxBytes} its template declares`)
  const partial = await init.sink.openPartial(init.blob, index)
  let announced = false
  const progress = (): void => {
    if (!announced && partial.heldBytes > 0) {
      announced = true
      init.onHolding?.()
    }
    init.onProgress?.({ blob: init.blob, size: index.size, held: partial.heldBytes, fetched: result.fetched, peers: Object.keys(result.fromPeers).length })
  }
  progress()

  async function obtainIndex (): Promise<ChunkIndex> {
    const local = await init.sink.index(init.blob)
    if (local !== undefined) return local
    const deadline = Date.now() + stallMs
    while (Date.now() < deadline) {
      init.signal?.throwIfAborted()
      await refreshProviders()
      for (const [peer, s] of peers) {
        if (s.banned || s.retryAt > Date.now()) continue
        try {
          return await fetchIndex(init.node, peer, init.blob, init.signal, init.ticketFor?.(peer))
        } catch (err) {
          failed(peer, err)
        }
      }
      await sleep(250)
    }
    throw new XenosError('TEMPLATE_NOT_FOUND', `no reachable host holds blob ${init.blob}`)
  }

  const inflight = new Map<number, Set<string>>()
  const running = new Set<Promise<void>>()
  const writing = new Set<number>()
  let lastChunkAt = Date.now()

  async function refreshHave (peer: string, s: PeerState): Promise<void> {
    s.checkedAt = Date.now()
    try {
      const { have, complete } = await fetchHave(init.node, peer, init.blob, index.chunks.length, init.signal, init.ticketFor?.(peer))
      s.have = have
      s.complete = complete
      s.failures = 0
    } catch (err) {
      failed(peer, err)
    }
  }

  function rarity (i: number): number {
    let n = 0
    for (const s of peers.values()) if (!s.banned && s.have?.[i] === true) n++
    return n
  }

  /** The chunk `s` should fetch next: rarest first, random among equals; in the end game a chunk already in flight elsewhere. */
  function pick (peer: string, s: PeerState): number | undefined {
    const candidates = partial.missing.filter(i => s.have?.[i] === true && inflight.get(i)?.has(peer) !== true)
    const fresh = candidates.filter(i => !inflight.has(i))
    const pool = fresh.length > 0 ? fresh : candidates.filter(i => (inflight.get(i)?.size ?? 0) < 2)
    if (pool.length === 0) return undefined
    let best: number[] = []
    let bestRarity = Infinity
    for (const i of pool) {
      const r = rarity(i)
      if (r < bestRarity) {
        bestRarity = r
        best = [i]
      } else if (r === bestRarity) best.push(i)
    }
    return best[Math.floor(Math.random() * best.length)]
  }

  function start (peer: string, s: PeerState, i: number): void {
    s.inflight++
    const holders = inflight.get(i) ?? new Set<string>()
    holders.add(peer)
    inflight.set(i, holders)
    const task = (async () => {
      try {
        const data = await fetchChunk(init.node, peer, index, init.blob, i, AbortSignal.any([AbortSignal.timeout(30_000), ...(init.signal === undefined ? [] : [init.signal])]), init.ticketFor?.(peer))
        // The end game may bring a chunk twice: keep and count the first.
        if (partial.have[i] === true || writing.has(i)) return
        writing.add(i)
        await partial.write(i, data).finally(() => writing.delete(i))
        result.fetched += data.byteLength
        result.fromPeers[peer] = (result.fromPeers[peer] ?? 0) + data.byteLength
        s.failures = 0
        lastChunkAt = Date.now()
        progress()
      } catch (err) {
        failed(peer, err)
      } finally {
        s.inflight--
        holders.delete(peer)
        if (holders.size === 0) inflight.delete(i)
      }
    })()
    running.add(task)
    void task.finally(() => running.delete(task))
  }

  try {
    while (partial.missing.length > 0) {
      init.signal?.throwIfAborted()
      await refreshProviders()
      const now = Date.now()
      const checks: Array<Promise<void>> = []
      for (const [peer, s] of peers) {
        if (s.banned || s.retryAt > now) continue
        if (!s.complete && now - s.checkedAt >= HAVE_REFRESH_MS && s.inflight === 0) checks.push(refreshHave(peer, s))
      }
      await Promise.all(checks)
      for (const [peer, s] of peers) {
        while (!s.banned && s.retryAt <= Date.now() && s.inflight < perPeer) {
          const i = pick(peer, s)
          if (i === undefined) break
          start(peer, s, i)
        }
      }
      if (Date.now() - lastChunkAt > stallMs) {
        const missing = partial.missing.length
        throw new XenosError('TIMEOUT', `no chunk of blob ${init.blob} arrived for ${Math.round(stallMs / 1000)} s; ${missing} of ${index.chunks.length} chunk(s) missing (${peers.size} host(s) asked): it resumes from here on the next try`)
      }
      await Promise.race([...running, sleep(running.size === 0 ? 250 : HAVE_REFRESH_MS)])
    }
  } finally {
    // Nothing is written to the blob once the pull has returned or failed.
    await Promise.allSettled(running)
  }
  await partial.complete()
  init.log.info({ blob: init.blob, bytes: index.size, fetched: result.fetched, peers: result.fromPeers, penalised: result.penalised }, 'blob fetched')
  return result
}

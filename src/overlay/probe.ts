import type { Libp2p, PeerId, Stream } from '@libp2p/interface'
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import { randomBytes } from 'node:crypto'

export const PROBE_PROTOCOL = '/xenos/probe/1.0.0'
const NONCE_BYTES = 8
/** Probe streams a peer may hold open to this host on one connection. */
const MAX_INBOUND_PROBE_STREAMS = 2

interface Open {
  stream: Stream
  lp: LengthPrefixedStream
  /** Probes on one stream go one after another, so each echo answers its own nonce. */
  turn: Promise<unknown>
}

/**
 * Liveness probes on one long-lived stream per peer: a probe is one 8-byte nonce each way, two
 * small frames on the connection, where a libp2p ping opens and negotiates a new stream each
 * time (a dozen packets). A probe that fails or times out drops its stream; the next one opens
 * a new one.
 */
export class Probes {
  readonly #node: Libp2p
  readonly #open = new Map<string, Open>()

  constructor (node: Libp2p) {
    this.#node = node
  }

  async start (): Promise<void> {
    await this.#node.handle(PROBE_PROTOCOL, async stream => { await echo(stream) }, { maxInboundStreams: MAX_INBOUND_PROBE_STREAMS })
  }

  /** Whether `peer` echoes a nonce within `timeoutMs` (over its connection, dialled if need be). */
  async probe (peer: PeerId, timeoutMs: number): Promise<boolean> {
    const signal = AbortSignal.timeout(timeoutMs)
    const reused = this.#open.has(peer.toString())
    if (await this.#probeOnce(peer, signal)) return true
    // A stream kept open may have been closed for inactivity by the other side: one more, on a new one.
    return reused && !signal.aborted && await this.#probeOnce(peer, signal)
  }

  async #probeOnce (peer: PeerId, signal: AbortSignal): Promise<boolean> {
    const key = peer.toString()
    let open = this.#open.get(key)
    try {
      if (open === undefined) {
        const stream = await this.#node.dialProtocol(peer, PROBE_PROTOCOL, { signal })
        open = { stream, lp: lpStream(stream, { maxDataLength: NONCE_BYTES }), turn: Promise.resolve() }
        this.#open.set(key, open)
        stream.addEventListener('close', () => { if (this.#open.get(key)?.stream === stream) this.#open.delete(key) })
      }
      const o = open
      const answer = o.turn.then(async () => {
        const nonce = randomBytes(NONCE_BYTES)
        await o.lp.write(nonce, { signal })
        return Buffer.from((await o.lp.read({ signal })).subarray()).equals(nonce)
      })
      o.turn = answer.catch(() => {})
      if (await answer) return true
      throw new Error('wrong echo')
    } catch {
      if (open !== undefined && this.#open.get(key) === open) {
        this.#open.delete(key)
        open.stream.abort(new Error('probe failed'))
      }
      return false
    }
  }
}

/** Echoes every nonce a peer sends on `stream` until it closes it. */
async function echo (stream: Stream): Promise<void> {
  const lp = lpStream(stream, { maxDataLength: NONCE_BYTES })
  try {
    for (;;) await lp.write(await lp.read())
  } catch {
    stream.abort(new Error('probe stream ended'))
  }
}

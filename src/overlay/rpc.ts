import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { lpStream } from '@libp2p/utils'
import type { Logger } from 'pino'
import { z } from 'zod'
import { isErrorCode, toXenosError, XenosError } from '../core/index.ts'

export const RPC_PROTOCOL = '/xenos/rpc/1.0.0'
/** Largest request or response either side accepts. */
export const RPC_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
export const RPC_DEFAULT_TIMEOUT_MS = 10_000

const requestSchema = z.strictObject({
  method: z.string().max(64),
  params: z.unknown(),
})

const responseSchema = z.union([
  z.strictObject({ ok: z.literal(true), result: z.unknown() }),
  z.strictObject({ ok: z.literal(false), error: z.strictObject({ code: z.string().max(64), message: z.string().max(4096) }) }),
])

type Handler = (params: unknown, from: PeerId) => Promise<unknown>

/** One call as its caller (client) or its server saw it: `code` is `ok` or the error's code. */
export interface RpcObservation {
  method: string
  side: 'client' | 'server'
  code: string
  seconds: number
}

export interface CallOptions {
  timeoutMs?: number
  signal?: AbortSignal
}

/**
 * Request/response between hosts: one libp2p stream per call, one length-prefixed JSON message
 * each way. Every handler declares a zod schema, so a peer's malformed request is refused before
 * any handler code sees it; errors travel back with their code.
 */
export class Rpc {
  readonly #node: Libp2p
  readonly #log: Logger
  readonly #handlers = new Map<string, Handler>()
  readonly #observers: Array<(o: RpcObservation) => void> = []

  constructor (node: Libp2p, log: Logger) {
    this.#node = node
    this.#log = log
  }

  async start (): Promise<void> {
    await this.#node.handle(RPC_PROTOCOL, async (stream, connection) => { await this.#serve(stream, connection) }, { maxInboundStreams: 256 })
  }

  /** Calls `fn` after every call this host makes or serves (metrics). */
  observe (fn: (o: RpcObservation) => void): void {
    this.#observers.push(fn)
  }

  #observed (method: string, side: RpcObservation['side'], code: string, since: number): void {
    const o = { method, side, code, seconds: (performance.now() - since) / 1000 }
    for (const fn of this.#observers) fn(o)
  }

  handle<S extends z.ZodType>(method: string, schema: S, fn: (params: z.output<S>, from: PeerId) => Promise<unknown>): void {
    this.#handlers.set(method, async (raw, from) => {
      const parsed = schema.safeParse(raw)
      if (!parsed.success) throw new XenosError('INVALID_ARGUMENT', `bad parameters for ${method}: ${parsed.error.issues[0]?.message ?? 'invalid'}`)
      return await fn(parsed.data, from)
    })
  }

  async #serve (stream: Stream, connection: Connection): Promise<void> {
    const lp = lpStream(stream, { maxDataLength: RPC_MAX_MESSAGE_BYTES, maxBufferSize: RPC_MAX_MESSAGE_BYTES + 16 })
    let raw: Uint8Array
    try {
      raw = (await lp.read({ signal: AbortSignal.timeout(RPC_DEFAULT_TIMEOUT_MS) })).subarray()
    } catch (err) {
      // The caller went away (closed, reset, timed out) before sending a whole request.
      this.#log.debug({ err, peer: connection.remotePeer.toString() }, 'rpc request not received')
      stream.abort(err as Error)
      return
    }
    let reply: unknown
    const since = performance.now()
    // A method no handler has is counted as one name, so that a peer cannot make up label values.
    let method = 'unknown'
    try {
      const request = requestSchema.parse(JSON.parse(new TextDecoder().decode(raw)))
      const handler = this.#handlers.get(request.method)
      if (handler === undefined) throw new XenosError('INVALID_ARGUMENT', `unknown method ${request.method}`)
      method = request.method
      reply = { ok: true, result: await handler(request.params, connection.remotePeer) }
      this.#observed(method, 'server', 'ok', since)
    } catch (err) {
      const e = err instanceof SyntaxError || err instanceof z.ZodError ? new XenosError('PEER_PROTOCOL', 'malformed request') : toXenosError(err)
      if (e.code === 'INTERNAL') this.#log.warn({ err, peer: connection.remotePeer.toString() }, 'rpc handler failed')
      reply = { ok: false, error: { code: e.code, message: e.message } }
      this.#observed(method, 'server', e.code, since)
    }
    try {
      await lp.write(new TextEncoder().encode(JSON.stringify(reply)))
      await stream.close()
    } catch (err) {
      stream.abort(err as Error)
    }
  }

  /** Calls `method` on `peer`; resolves with its (still unvalidated) result or throws a XenosError. */
  async call (peer: string | PeerId, method: string, params: unknown, options: CallOptions = {}): Promise<unknown> {
    const since = performance.now()
    try {
      const result = await this.#call(peer, method, params, options)
      this.#observed(method, 'client', 'ok', since)
      return result
    } catch (err) {
      this.#observed(method, 'client', err instanceof XenosError ? err.code : 'INTERNAL', since)
      throw err
    }
  }

  async #call (peer: string | PeerId, method: string, params: unknown, options: CallOptions): Promise<unknown> {
    const timeout = AbortSignal.timeout(options.timeoutMs ?? RPC_DEFAULT_TIMEOUT_MS)
    const signal = options.signal === undefined ? timeout : AbortSignal.any([timeout, options.signal])
    const peerId = typeof peer === 'string' ? peerIdFromString(peer) : peer
    let stream: Stream
    try {
      stream = await this.#node.dialProtocol(peerId, RPC_PROTOCOL, { signal })
    } catch (err) {
      if (timeout.aborted) throw new XenosError('TIMEOUT', `host ${peerId.toString()} did not answer within ${options.timeoutMs ?? RPC_DEFAULT_TIMEOUT_MS} ms`)
      throw new XenosError('PEER_UNREACHABLE', `cannot reach host ${peerId.toString()}: ${(err as Error).message}`)
    }
    let raw: Uint8Array
    try {
      const lp = lpStream(stream, { maxDataLength: RPC_MAX_MESSAGE_BYTES, maxBufferSize: RPC_MAX_MESSAGE_BYTES + 16 })
      await lp.write(new TextEncoder().encode(JSON.stringify({ method, params })), { signal })
      raw = (await lp.read({ signal })).subarray()
      await stream.close({ signal }).catch(() => {})
    } catch (err) {
      stream.abort(err as Error)
      if (timeout.aborted) throw new XenosError('TIMEOUT', `host ${peerId.toString()} did not answer ${method} within ${options.timeoutMs ?? RPC_DEFAULT_TIMEOUT_MS} ms`)
      throw new XenosError('PEER_UNREACHABLE', `call ${method} to ${peerId.toString()} failed: ${(err as Error).message}`)
    }
    let response: z.infer<typeof responseSchema>
    try {
      response = responseSchema.parse(JSON.parse(new TextDecoder().decode(raw)))
    } catch {
      throw new XenosError('PEER_PROTOCOL', `host ${peerId.toString()} sent a malformed reply to ${method}`)
    }
    if (response.ok) return response.result
    throw new XenosError(isErrorCode(response.error.code) ? response.error.code : 'PEER_PROTOCOL', response.error.message)
  }
}

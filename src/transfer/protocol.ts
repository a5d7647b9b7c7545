import type { Connection, Libp2p, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { lpStream } from '@libp2p/utils'
import type { Logger } from 'pino'
import { z } from 'zod'
import { CHUNK_SIZE, XenosError, blobIdOf, blobIdSchema, chunkIndexSchema, chunkLength, type ChunkIndex } from '../core/index.ts'

/**
 * The chunk protocol: one request per stream, a JSON header each way, then for `chunk` the bytes.
 * `index` gives a blob's chunk index, `have` which chunks the host holds (a host still fetching a
 * blob serves the chunks it has), `chunk` one chunk.
 */
export const CHUNK_PROTOCOL = '/xenos/chunks/1.0.0'

/** What a host serves chunks from. */
export interface ChunkSource {
  index: (blob: string) => Promise<ChunkIndex | undefined>
  holding: (blob: string) => Promise<boolean[] | undefined>
  readChunk: (blob: string, i: number) => Promise<Uint8Array | undefined>
}

/** What a holder gives a host it lets read a blob not every host may: see `ServeOptions.admit`. */
export const ticketSchema = z.string().regex(/^[0-9a-f]{32}$/)
const ticket = ticketSchema.optional()

const requestSchema = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('index'), blob: blobIdSchema, ticket }),
  z.strictObject({ op: z.literal('have'), blob: blobIdSchema, ticket }),
  z.strictObject({ op: z.literal('chunk'), blob: blobIdSchema, i: z.number().int().nonnegative(), ticket }),
])
type ChunkRequest = z.infer<typeof requestSchema>

const failureSchema = z.strictObject({ ok: z.literal(false), message: z.string().max(1000) })
const indexReplySchema = z.union([z.strictObject({ ok: z.literal(true), index: chunkIndexSchema }), failureSchema])
const haveReplySchema = z.union([z.strictObject({ ok: z.literal(true), have: z.string().max(20_000), complete: z.boolean() }), failureSchema])
const chunkReplySchema = z.union([z.strictObject({ ok: z.literal(true), size: z.number().int().nonnegative().max(CHUNK_SIZE) }), failureSchema])

/** An index holds ~67 bytes a chunk; 8 MiB covers the largest blob allowed. */
const MAX_HEADER_BYTES = 8 * 1024 * 1024
const REQUEST_TIMEOUT_MS = 10_000

const encode = (value: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(value))
const decode = (bytes: { subarray: () => Uint8Array }): unknown => JSON.parse(new TextDecoder().decode(bytes.subarray()))

export function encodeHave (have: boolean[]): string {
  const bits = new Uint8Array(Math.ceil(have.length / 8))
  have.forEach((held, i) => { if (held) bits[i >> 3] = (bits[i >> 3] ?? 0) | (1 << (i & 7)) })
  return Buffer.from(bits).toString('base64')
}

export function decodeHave (encoded: string, chunks: number): boolean[] {
  const bits = Buffer.from(encoded, 'base64')
  return Array.from({ length: chunks }, (_, i) => ((bits[i >> 3] ?? 0) & (1 << (i & 7))) !== 0)
}

/** Limits how many chunks this host sends at once, so serving never starves the host itself. */
class Slots {
  #free: number
  readonly #waiting: Array<() => void> = []
  constructor (n: number) { this.#free = n }
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#free > 0) this.#free--
    else await new Promise<void>(resolve => this.#waiting.push(resolve))
    try {
      return await fn()
    } finally {
      const next = this.#waiting.shift()
      if (next !== undefined) next()
      else this.#free++
    }
  }
}

export interface ServeOptions {
  /** Chunks sent at once by this host. @default 16 */
  uploads?: number
  /** Streams one peer may hold open to this host at once. @default 8 */
  perPeer?: number
  /** Whether `peer` may read `blob` (with the ticket it brings); a blob it may not read is not here, as far as it can tell. @default every blob */
  admit?: (blob: string, peer: string, ticket: string | undefined) => boolean
}

/** Serves this host's blobs, complete or partial, to the peers `admit` lets read them. */
export async function serveChunks (node: Libp2p, source: ChunkSource, log: Logger, o: ServeOptions = {}): Promise<void> {
  const slots = new Slots(o.uploads ?? 16)
  const admit = o.admit ?? (() => true)
  await node.handle(CHUNK_PROTOCOL, async (stream: Stream, connection: Connection) => {
    const lp = lpStream(stream, { maxDataLength: 4096 })
    try {
      const request = requestSchema.parse(decode(await lp.read({ signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })))
      const admitted = admit(request.blob, connection.remotePeer.toString(), request.ticket)
      await answer(request, admitted ? source : NOTHING, slots, async (header, data) => {
        await lp.write(encode(header), { signal: AbortSignal.timeout(60_000) })
        if (data !== undefined) await lp.write(data, { signal: AbortSignal.timeout(60_000) })
      })
      await stream.close()
    } catch (err) {
      log.debug({ err }, 'serving a chunk request failed')
      stream.abort(err as Error)
    }
  }, { maxInboundStreams: o.perPeer ?? 8 })
}

/** What a peer that may not read a blob is served. */
const NOTHING: ChunkSource = { index: async () => undefined, holding: async () => undefined, readChunk: async () => undefined }

async function answer (r: ChunkRequest, source: ChunkSource, slots: Slots, reply: (header: unknown, data?: Uint8Array) => Promise<void>): Promise<void> {
  const missing = { ok: false, message: `no blob ${r.blob} here` }
  if (r.op === 'index') {
    const index = await source.index(r.blob)
    await reply(index === undefined ? missing : { ok: true, index })
    return
  }
  const have = await source.holding(r.blob)
  if (have === undefined) {
    await reply(missing)
    return
  }
  if (r.op === 'have') {
    await reply({ ok: true, have: encodeHave(have), complete: have.every(Boolean) })
    return
  }
  await slots.run(async () => {
    const data = await source.readChunk(r.blob, r.i)
    await (data === undefined ? reply({ ok: false, message: `chunk ${r.i} of ${r.blob} is not held here` }) : reply({ ok: true, size: data.byteLength }, data))
  })
}

async function request<T> (node: Libp2p, peer: string, body: ChunkRequest, schema: z.ZodType<T>, signal?: AbortSignal): Promise<{ header: T, lp: ReturnType<typeof lpStream>, stream: Stream }> {
  let stream: Stream
  const timeout = AbortSignal.timeout(REQUEST_TIMEOUT_MS)
  try {
    stream = await node.dialProtocol(peerIdFromString(peer), CHUNK_PROTOCOL, { signal: signal === undefined ? timeout : AbortSignal.any([signal, timeout]) })
  } catch (err) {
    throw new XenosError('PEER_UNREACHABLE', `cannot reach host ${peer}: ${(err as Error).message}`)
  }
  stream.maxReadBufferLength = 32 * 1024 * 1024
  const lp = lpStream(stream, { maxDataLength: MAX_HEADER_BYTES, maxBufferSize: MAX_HEADER_BYTES + 65_536 })
  try {
    await lp.write(encode(body))
    const parsed = schema.safeParse(decode(await lp.read({ signal: signal === undefined ? timeout : AbortSignal.any([signal, timeout]) })))
    if (!parsed.success) throw new XenosError('PEER_PROTOCOL', `host ${peer} answered a ${body.op} request with a malformed message`)
    return { header: parsed.data, lp, stream }
  } catch (err) {
    stream.abort(err as Error)
    if (err instanceof XenosError) throw err
    throw new XenosError('PEER_UNREACHABLE', `host ${peer} did not answer a ${body.op} request: ${(err as Error).message}`)
  }
}

function refused (peer: string, reply: { ok: false, message: string }): XenosError {
  return new XenosError('TEMPLATE_NOT_FOUND', `host ${peer}: ${reply.message}`)
}

/** Asks `peer` for the chunk index of `blob`; an index that is not the blob's is refused. */
export async function fetchIndex (node: Libp2p, peer: string, blob: string, signal?: AbortSignal, ticket?: string): Promise<ChunkIndex> {
  const { header, stream } = await request(node, peer, { op: 'index', blob, ticket }, indexReplySchema, signal)
  await stream.close().catch(() => {})
  if (!header.ok) throw refused(peer, header)
  if (blobIdOf(header.index) !== blob) throw new XenosError('PEER_PROTOCOL', `host ${peer} sent a chunk index that is not blob ${blob}'s`)
  return header.index
}

/** Which chunks of `blob` `peer` holds. */
export async function fetchHave (node: Libp2p, peer: string, blob: string, chunks: number, signal?: AbortSignal, ticket?: string): Promise<{ have: boolean[], complete: boolean }> {
  const { header, stream } = await request(node, peer, { op: 'have', blob, ticket }, haveReplySchema, signal)
  await stream.close().catch(() => {})
  if (!header.ok) throw refused(peer, header)
  return { have: decodeHave(header.have, chunks), complete: header.complete }
}

/** Fetches chunk `i` of `blob` from `peer`. The caller checks it against the index. */
export async function fetchChunk (node: Libp2p, peer: string, index: ChunkIndex, blob: string, i: number, signal?: AbortSignal, ticket?: string): Promise<Uint8Array> {
  const { header, lp, stream } = await request(node, peer, { op: 'chunk', blob, i, ticket }, chunkReplySchema, signal)
  try {
    if (!header.ok) throw refused(peer, header)
    if (header.size !== chunkLength(index, i)) throw new XenosError('PEER_PROTOCOL', `host ${peer} offers ${header.size} bytes for chunk ${i} of ${blob}, not ${chunkLength(index, i)}`)
    const data = await lp.read({ signal: signal ?? AbortSignal.timeout(60_000) })
    if (data.byteLength !== header.size) throw new XenosError('PEER_PROTOCOL', `host ${peer} sent ${data.byteLength} bytes for chunk ${i} of ${blob}, not ${header.size}`)
    await stream.close().catch(() => {})
    return data.subarray()
  } catch (err) {
    stream.abort(err as Error)
    throw err
  }
}

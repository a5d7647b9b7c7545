import type { Connection, Libp2p, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { lpStream } from '@libp2p/utils'
import { z } from 'zod'

/**
 * The opening of a spliced stream: the dialer sends one JSON header, the listener answers yes or
 * no (and may point elsewhere), and from then on the stream carries raw bytes.
 */
const HEADER_TIMEOUT_MS = 10_000
const MAX_HEADER_BYTES = 1024

const replySchema = z.union([
  z.strictObject({ ok: z.literal(true) }),
  z.strictObject({ ok: z.literal(false), message: z.string().max(500), movedTo: z.string().min(1).max(128).optional() }),
])

/** The listener said no; `movedTo` names the host to ask instead, when it knows one. */
export class HandshakeRefused extends Error {
  readonly movedTo: string | undefined

  constructor (message: string, movedTo?: string) {
    super(message)
    this.movedTo = movedTo
  }
}

const encode = (value: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(value))
const decode = (bytes: { subarray: () => Uint8Array }): unknown => JSON.parse(new TextDecoder().decode(bytes.subarray()))

/** Opens a `protocol` stream to `peer` with `header`; the bare stream once the peer accepted, or HandshakeRefused. */
export async function dialWithHeader (node: Libp2p, peer: string, protocol: string, header: unknown): Promise<Stream> {
  const stream = await node.dialProtocol(peerIdFromString(peer), protocol, { signal: AbortSignal.timeout(HEADER_TIMEOUT_MS) })
  const lp = lpStream(stream, { maxDataLength: MAX_HEADER_BYTES })
  try {
    await lp.write(encode(header))
    const reply = replySchema.parse(decode(await lp.read({ signal: AbortSignal.timeout(HEADER_TIMEOUT_MS) })))
    if (!reply.ok) throw new HandshakeRefused(`host ${peer} refused: ${reply.message}`, reply.movedTo)
    return lp.unwrap()
  } catch (err) {
    stream.abort(err as Error)
    throw err
  }
}

export interface IncomingHandshake<T> {
  header: T
  peer: string
  /** Answers yes; the bare stream. */
  accept: () => Promise<Stream>
  refuse: (message: string, movedTo?: string) => Promise<void>
}

/** Reads the header of an incoming stream, checked against `schema` (a bad one aborts the stream and throws). */
export async function readHeader<T> (stream: Stream, connection: Connection, schema: z.ZodType<T>): Promise<IncomingHandshake<T>> {
  const lp = lpStream(stream, { maxDataLength: MAX_HEADER_BYTES })
  try {
    const header = schema.parse(decode(await lp.read({ signal: AbortSignal.timeout(HEADER_TIMEOUT_MS) })))
    return {
      header,
      peer: connection.remotePeer.toString(),
      accept: async () => {
        await lp.write(encode({ ok: true }))
        return lp.unwrap()
      },
      refuse: async (message, movedTo) => {
        await lp.write(encode({ ok: false, message: message.slice(0, 500), ...(movedTo === undefined ? {} : { movedTo }) }))
        await stream.close()
      },
    }
  } catch (err) {
    stream.abort(err as Error)
    throw err
  }
}

import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import type { Libp2p, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { lpStream } from '@libp2p/utils'
import type { Logger } from 'pino'
import { z } from 'zod'
import { XenosError } from '../core/index.ts'

export const BLOB_PROTOCOL = '/xenos/blob/1.0.0'
/** A transfer that receives nothing for this long is abandoned (and retried elsewhere). */
const STALL_TIMEOUT_MS = 30_000

async function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([p, new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new XenosError('TIMEOUT', message)) }, ms) })])
  } finally {
    clearTimeout(timer)
  }
}

const requestSchema = z.strictObject({ digest: z.string().regex(/^sha256:[0-9a-f]{64}$/) })
const headerSchema = z.union([
  z.strictObject({ ok: z.literal(true), size: z.number().int().nonnegative() }),
  z.strictObject({ ok: z.literal(false), message: z.string().max(1000) }),
])

/** What the transfer layer needs from a blob store. */
export interface BlobSource {
  has: (digest: string) => Promise<boolean>
  path: (digest: string) => string
}

export interface BlobSink {
  put: (digest: string, source: AsyncIterable<Uint8Array>) => Promise<void>
}

export interface FetchProgress {
  digest: string
  received: number
  size: number
}

/** Serves this host's blobs to peers: one stream per blob, the size first, then the bytes. */
export async function serveBlobs (node: Libp2p, blobs: BlobSource, log: Logger): Promise<void> {
  await node.handle(BLOB_PROTOCOL, async (stream: Stream) => {
    const lp = lpStream(stream, { maxDataLength: 4096 })
    try {
      const { digest } = requestSchema.parse(JSON.parse(new TextDecoder().decode((await lp.read({ signal: AbortSignal.timeout(10_000) })).subarray())))
      if (!await blobs.has(digest)) {
        await lp.write(new TextEncoder().encode(JSON.stringify({ ok: false, message: `no blob ${digest} here` })))
        await stream.close()
        return
      }
      const path = blobs.path(digest)
      await lp.write(new TextEncoder().encode(JSON.stringify({ ok: true, size: (await stat(path)).size })))
      const raw = lp.unwrap()
      for await (const chunk of createReadStream(path, { highWaterMark: 256 * 1024 })) {
        if (!raw.send(chunk as Buffer)) await raw.onDrain({ signal: AbortSignal.timeout(60_000) })
      }
      await raw.close()
    } catch (err) {
      log.debug({ err }, 'serving a blob failed')
      stream.abort(err as Error)
    }
  }, { maxInboundStreams: 64 })
}

/**
 * Fetches blob `digest` from `peer` into `sink`, which verifies the digest before keeping it, so
 * a peer that sends wrong bytes cannot plant anything; a peer that announces more than
 * `maxBytes` is refused before anything is written.
 */
export async function fetchBlob (node: Libp2p, peer: string, digest: string, sink: BlobSink, maxBytes: number, onProgress?: (p: FetchProgress) => void): Promise<void> {
  let stream: Stream
  try {
    stream = await node.dialProtocol(peerIdFromString(peer), BLOB_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
  } catch (err) {
    throw new XenosError('PEER_UNREACHABLE', `cannot reach host ${peer} for blob ${digest}: ${(err as Error).message}`)
  }
  stream.maxReadBufferLength = 32 * 1024 * 1024
  const lp = lpStream(stream, { maxDataLength: 4096 })
  await lp.write(new TextEncoder().encode(JSON.stringify({ digest })))
  const header = headerSchema.parse(JSON.parse(new TextDecoder().decode((await lp.read({ signal: AbortSignal.timeout(10_000) })).subarray())))
  if (!header.ok) throw new XenosError('TEMPLATE_NOT_FOUND', `host ${peer}: ${header.message}`)
  const size = header.size
  if (size > maxBytes) {
    stream.abort(new Error('too large'))
    throw new XenosError('PEER_PROTOCOL', `host ${peer} offers ${size} bytes for ${digest}, more than the ${maxBytes} expected`)
  }
  const raw = lp.unwrap()
  // Attach to the stream now: bytes that arrived with the header are re-emitted on the next
  // microtask and would be lost if the first read waited for the sink to open its file.
  const chunks = raw[Symbol.asyncIterator]()
  let received = 0
  async function * bytes (): AsyncGenerator<Uint8Array> {
    for (;;) {
      const next = await withTimeout(chunks.next(), STALL_TIMEOUT_MS, `host ${peer} stopped sending ${digest}`)
      if (next.done === true) break
      const chunk = next.value
      const data = chunk instanceof Uint8Array ? chunk : chunk.subarray()
      received += data.byteLength
      if (received > size) throw new XenosError('PEER_PROTOCOL', `host ${peer} sent more than the ${size} bytes of ${digest}`)
      onProgress?.({ digest, received, size: size })
      yield data
    }
    if (received !== size) throw new XenosError('PEER_UNREACHABLE', `host ${peer} sent ${received} of ${size} bytes of ${digest}`)
  }
  try {
    await sink.put(digest, bytes())
  } catch (err) {
    stream.abort(err as Error)
    throw err
  }
}

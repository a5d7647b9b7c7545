import { randomBytes } from 'node:crypto'
import { chmod, rm } from 'node:fs/promises'
import { connect, createServer, type Server, type Socket } from 'node:net'
import type { Connection, Libp2p, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { lpStream } from '@libp2p/utils'
import type { Logger } from 'pino'
import { z } from 'zod'

/**
 * Byte streams between a unix socket on one host and a unix socket on another, carried over
 * libp2p streams: how hosts move a VM's memory and reach each other's disks without opening a
 * port to anyone. The host that owns the target socket issues a ticket (a random token that only
 * one peer may present); the other host listens on a local socket and, for each connection made
 * to it, opens a stream that presents the token.
 */
export const TUNNEL_PROTOCOL = '/xenos/tunnel/1.0.0'

const openSchema = z.strictObject({ token: z.string().regex(/^[0-9a-f]{64}$/) })
const replySchema = z.union([z.strictObject({ ok: z.literal(true) }), z.strictObject({ ok: z.literal(false), message: z.string().max(500) })])
const HEADER_TIMEOUT_MS = 10_000
/** Unread bytes a tunnel's stream may hold before the socket reading it catches up. */
const READ_BUFFER_BYTES = 32 * 1024 * 1024

interface Ticket {
  peer: string
  path: string
}

/** A local socket whose connections reach a socket on another host. */
export interface TunnelListener {
  path: string
  close: () => Promise<void>
}

export class Tunnels {
  readonly #node: Libp2p
  readonly #log: Logger
  readonly #tickets = new Map<string, Ticket>()

  constructor (node: Libp2p, log: Logger) {
    this.#node = node
    this.#log = log
  }

  async start (): Promise<void> {
    await this.#node.handle(TUNNEL_PROTOCOL, async (stream: Stream, connection: Connection) => { await this.#accept(stream, connection) }, { maxInboundStreams: 64 })
  }

  /** Lets `peer` reach the unix socket at `path`; returns the token it must present (or reuses `token`). */
  issue (peer: string, path: string, token = randomBytes(32).toString('hex')): string {
    this.#tickets.set(token, { peer, path })
    return token
  }

  revoke (token: string): void {
    this.#tickets.delete(token)
  }

  /** Listens on the unix socket `path`; every connection to it is carried to `peer`'s socket named by `token`. */
  async listen (path: string, peer: string, token: string): Promise<TunnelListener> {
    await rm(path, { force: true })
    const sockets = new Set<Socket>()
    const server: Server = createServer({ allowHalfOpen: true }, socket => {
      sockets.add(socket)
      socket.once('close', () => sockets.delete(socket))
      this.#dial(peer, token).then(stream => { splice(stream, socket) }, (err: unknown) => {
        this.#log.debug({ err, peer }, 'a tunnel could not reach its peer')
        socket.destroy()
      })
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(path, () => { server.off('error', reject); resolve() })
    })
    await chmod(path, 0o600)
    return {
      path,
      close: async () => {
        for (const s of sockets) s.destroy()
        await new Promise<void>(resolve => server.close(() => { resolve() }))
        await rm(path, { force: true })
      },
    }
  }

  async #dial (peer: string, token: string): Promise<Stream> {
    const stream = await this.#node.dialProtocol(peerIdFromString(peer), TUNNEL_PROTOCOL, { signal: AbortSignal.timeout(HEADER_TIMEOUT_MS) })
    const lp = lpStream(stream, { maxDataLength: 1024 })
    try {
      await lp.write(new TextEncoder().encode(JSON.stringify({ token })))
      const reply = replySchema.parse(JSON.parse(new TextDecoder().decode((await lp.read({ signal: AbortSignal.timeout(HEADER_TIMEOUT_MS) })).subarray())))
      if (!reply.ok) throw new Error(`host ${peer} refused the tunnel: ${reply.message}`)
      return lp.unwrap()
    } catch (err) {
      stream.abort(err as Error)
      throw err
    }
  }

  async #accept (stream: Stream, connection: Connection): Promise<void> {
    const lp = lpStream(stream, { maxDataLength: 1024 })
    const refuse = async (message: string): Promise<void> => {
      await lp.write(new TextEncoder().encode(JSON.stringify({ ok: false, message })))
      await stream.close()
    }
    try {
      const { token } = openSchema.parse(JSON.parse(new TextDecoder().decode((await lp.read({ signal: AbortSignal.timeout(HEADER_TIMEOUT_MS) })).subarray())))
      const ticket = this.#tickets.get(token)
      if (ticket === undefined || ticket.peer !== connection.remotePeer.toString()) {
        await refuse('no such tunnel for this peer')
        return
      }
      const socket = connect({ path: ticket.path, allowHalfOpen: true })
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve)
        socket.once('error', reject)
      }).catch(async (err: unknown) => {
        await refuse(`the tunnel's target is not listening (${(err as Error).message})`)
        throw err
      })
      await lp.write(new TextEncoder().encode(JSON.stringify({ ok: true })))
      splice(lp.unwrap(), socket)
    } catch (err) {
      this.#log.debug({ err, peer: connection.remotePeer.toString() }, 'a tunnel request failed')
      stream.abort(err as Error)
    }
  }
}

/** Copies bytes both ways between a stream and a socket, with backpressure, until both ends close. */
function splice (stream: Stream, socket: Socket): void {
  stream.maxReadBufferLength = READ_BUFFER_BYTES
  let paused = false
  let remoteEnded = false
  // The remote's end arrives at once, even while data it sent still waits here: end the socket
  // only once all of that has been written to it.
  const endWhenWritten = (): void => {
    if (remoteEnded && !paused && stream.readBufferLength === 0 && !socket.writableEnded) socket.end()
  }
  stream.addEventListener('message', event => {
    const data = event.data
    const pieces = data instanceof Uint8Array ? [data] : [...data]
    let full = false
    // A copy: the socket may send later, and the stream's buffers are not ours to keep.
    for (const piece of pieces) full = !socket.write(Buffer.from(piece)) || full
    if (full && !paused) {
      paused = true
      // Paused a moment later: a resume() that dispatched this message re-opens the peer's send
      // window after dispatching, which would undo a pause made here and let the read buffer grow.
      queueMicrotask(() => { if (paused && stream.readStatus === 'readable') stream.pause() })
      socket.once('drain', () => {
        paused = false
        if (stream.readStatus === 'paused') stream.resume()
        endWhenWritten()
      })
    }
    endWhenWritten()
  })
  stream.addEventListener('remoteCloseWrite', () => {
    remoteEnded = true
    endWhenWritten()
  })
  stream.addEventListener('close', event => {
    if (event.error !== undefined) {
      socket.destroy()
      return
    }
    remoteEnded = true
    endWhenWritten()
  })
  socket.on('data', (buf: Buffer) => {
    if (stream.send(buf)) return
    socket.pause()
    stream.onDrain().then(() => { socket.resume() }, () => { socket.destroy() })
  })
  socket.on('end', () => { void stream.close().catch(() => {}) })
  socket.on('error', () => {})
  socket.on('close', hadError => {
    if (stream.status !== 'open') return
    if (hadError) stream.abort(new Error('the local end of the tunnel failed'))
    else void stream.close().catch(() => {})
  })
}

import { randomBytes } from 'node:crypto'
import { chmod, rm } from 'node:fs/promises'
import { connect, createServer, type Server, type Socket } from 'node:net'
import type { Connection, Libp2p, Stream } from '@libp2p/interface'
import type { Logger } from 'pino'
import { z } from 'zod'
import { dialWithHeader, readHeader } from './handshake.ts'
import { splice } from './splice.ts'

/**
 * Byte streams between a unix socket on one host and a socket on another, carried over
 * libp2p streams: how hosts reach each other's disks, and move a VM's memory where they cannot
 * connect directly, without opening a port to anyone. The host that owns the target socket issues a ticket (a random token that only
 * one peer may present); the other host listens on a local socket and, for each connection made
 * to it, opens a stream that presents the token.
 */
export const TUNNEL_PROTOCOL = '/xenos/tunnel/1.0.0'

const openSchema = z.strictObject({ token: z.string().regex(/^[0-9a-f]{64}$/) })

/** What a tunnel reaches on the host that issued it: a unix socket, or a TCP port on this host. */
export type TunnelTarget = string | { host: string, port: number }

interface Ticket {
  peer: string
  target: TunnelTarget
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

  /** Lets `peer` reach `target`; returns the token it must present (or reuses `token`). */
  issue (peer: string, target: TunnelTarget, token = randomBytes(32).toString('hex')): string {
    this.#tickets.set(token, { peer, target })
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
      dialWithHeader(this.#node, peer, TUNNEL_PROTOCOL, { token }).then(stream => { splice(stream, socket) }, (err: unknown) => {
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

  async #accept (stream: Stream, connection: Connection): Promise<void> {
    const incoming = await readHeader(stream, connection, openSchema).catch(() => undefined)
    if (incoming === undefined) return
    const ticket = this.#tickets.get(incoming.header.token)
    if (ticket === undefined || ticket.peer !== incoming.peer) {
      await incoming.refuse('no such tunnel for this peer').catch(() => {})
      return
    }
    const { target } = ticket
    const socket = connect({ ...typeof target === 'string' ? { path: target } : target, allowHalfOpen: true })
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve)
        socket.once('error', reject)
      })
    } catch (err) {
      this.#log.debug({ err, peer: incoming.peer }, "a tunnel's target is not listening")
      await incoming.refuse(`the tunnel's target is not listening (${(err as Error).message})`).catch(() => {})
      return
    }
    const spliced = await incoming.accept().catch(() => undefined)
    if (spliced === undefined) socket.destroy()
    else splice(spliced, socket)
  }
}

import type { Socket } from 'node:net'
import { logger } from '@libp2p/logger'
import { AbstractStream, type SendResult } from '@libp2p/utils'

let next = 0

/**
 * A local TCP connection with the interface of a libp2p stream, so that code relaying a client's
 * bytes treats a service on this host and one on another host the same way.
 */
export class SocketStream extends AbstractStream {
  readonly #socket: Socket

  /** With `endIsFailure`, asked when the socket ends: true makes that end a reset, as a stream to another host would report it. */
  constructor (socket: Socket, options: { endIsFailure?: () => boolean } = {}) {
    super({ id: `local-${next++}`, log: logger('xenos:socket-stream'), direction: 'outbound' })
    this.#socket = socket
    socket.on('data', (buf: Buffer) => { this.onData(buf) })
    socket.on('drain', () => { this.safeDispatchEvent('drain') })
    socket.once('end', () => {
      if (options.endIsFailure?.() === true) this.abort(new Error('the service went away'))
      else this.onRemoteCloseWrite()
    })
    socket.once('close', hadError => {
      if (hadError) this.abort(new Error('the connection to the service failed'))
      else this.onTransportClosed()
    })
    socket.on('error', () => {})
  }

  sendData (data: Parameters<AbstractStream['sendData']>[0]): SendResult {
    let sentBytes = 0
    let canSendMore = true
    for (const buf of data) {
      sentBytes += buf.byteLength
      canSendMore = this.#socket.write(buf)
      if (!canSendMore) break
    }
    return { sentBytes, canSendMore }
  }

  sendReset (): void {
    this.#socket.destroy()
  }

  sendPause (): void {
    this.#socket.pause()
  }

  sendResume (): void {
    this.#socket.resume()
  }

  async sendCloseWrite (): Promise<void> {
    this.#socket.end()
  }

  async sendCloseRead (): Promise<void> {}
}

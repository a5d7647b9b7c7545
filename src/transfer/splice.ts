import type { Socket } from 'node:net'
import type { Stream } from '@libp2p/interface'

/** Unread bytes a stream may hold before the socket reading it catches up (yamux sends at most 16 MiB ahead). */
const READ_BUFFER_BYTES = 32 * 1024 * 1024
/** Bytes of a connection kept for sending again, until the far end answers. */
const MAX_REPLAY_BYTES = 1024 * 1024
/** The most of an answer held back, and for how long, while the path may still fail (see `holdAnswer`). */
const MAX_HELD_BYTES = 1024 * 1024
const MAX_HOLD_MS = 3000

export interface SpliceOptions {
  /**
   * Asked when the socket ends: true resets the stream instead of closing it, so the far end
   * knows the bytes stopped because the path failed, not because the other side answered.
   */
  endIsFailure?: () => boolean
  /**
   * Called when the stream fails before any byte came back: another stream to send everything
   * written so far through again (the same service, reached another way), or undefined to give up.
   */
  reopen?: () => Promise<Stream | undefined>
  /**
   * Asked when the first bytes come back (with `reopen`): true holds the answer back until the far
   * end closes cleanly, or a megabyte or three seconds of it have come, so that if the path fails
   * meanwhile the connection is sent again as if nothing had come back. For a service that is
   * moving: an answer the switch-over cuts half-way is then sent again whole, not broken off.
   */
  holdAnswer?: () => boolean
}

/** Copies bytes both ways between a stream and a socket, with backpressure, until both ends close. */
export function splice (first: Stream, socket: Socket, options: SpliceOptions = {}): void {
  let stream = first
  let paused = false
  let remoteEnded = false
  let localEnded = false
  let answered = false
  let unanswered: Buffer[] | undefined = options.reopen === undefined ? undefined : []
  let unansweredBytes = 0
  let held: { pieces: Buffer[], bytes: number, timer: NodeJS.Timeout } | undefined

  // The remote's end arrives at once, even while data it sent still waits here: end the socket
  // only once all of that has been written to it.
  const endWhenWritten = (): void => {
    if (remoteEnded && !paused && stream.readBufferLength === 0 && !socket.writableEnded) socket.end()
  }

  /** Lets a held answer through: from here on it counts as answered. */
  const release = (): void => {
    if (held === undefined) return
    const { pieces, timer } = held
    held = undefined
    clearTimeout(timer)
    answered = true
    unanswered = undefined
    for (const piece of pieces) socket.write(piece)
  }

  const attach = (s: Stream): void => {
    s.maxReadBufferLength = READ_BUFFER_BYTES
    s.addEventListener('message', event => {
      if (s !== stream) return
      const data = event.data
      const pieces = data instanceof Uint8Array ? [data] : [...data]
      if (!answered && held === undefined && unanswered !== undefined && options.holdAnswer?.() === true) {
        held = { pieces: [], bytes: 0, timer: setTimeout(release, MAX_HOLD_MS) }
      }
      if (held !== undefined) {
        // A copy: the stream's buffers are not ours to keep.
        for (const piece of pieces) {
          held.pieces.push(Buffer.from(piece))
          held.bytes += piece.byteLength
        }
        if (held.bytes > MAX_HELD_BYTES) release()
        return
      }
      answered = true
      unanswered = undefined
      let full = false
      // A copy: the socket may send later, and the stream's buffers are not ours to keep.
      for (const piece of pieces) full = !socket.write(Buffer.from(piece)) || full
      if (full && !paused) {
        paused = true
        // Paused a moment later: a resume() that dispatched this message re-opens the peer's send
        // window after dispatching, which would undo a pause made here and let the read buffer grow.
        queueMicrotask(() => { if (paused && s.readStatus === 'readable') s.pause() })
        socket.once('drain', () => {
          paused = false
          if (s.readStatus === 'paused') s.resume()
          endWhenWritten()
        })
      }
      endWhenWritten()
    })
    s.addEventListener('remoteCloseWrite', () => {
      if (s !== stream) return
      release()
      remoteEnded = true
      endWhenWritten()
    })
    s.addEventListener('close', event => {
      if (s !== stream) return
      if (event.error === undefined) {
        release()
        remoteEnded = true
        endWhenWritten()
        return
      }
      // What was held back never reached the client: the connection is sent again whole.
      if (held !== undefined) {
        clearTimeout(held.timer)
        held = undefined
      }
      if (answered || unanswered === undefined || options.reopen === undefined) {
        socket.destroy()
        return
      }
      const resend = unanswered
      options.reopen().then(next => {
        // Over the replay limit meanwhile: what was kept is no longer all that was sent.
        if (next === undefined || socket.destroyed || unanswered !== resend) {
          next?.abort(new Error('the client went away'))
          socket.destroy()
          return
        }
        stream = next
        attach(next)
        for (const buf of resend) next.send(buf)
        if (localEnded) void next.close().catch(() => {})
      }, () => { socket.destroy() })
    })
  }
  attach(first)

  socket.on('data', (buf: Buffer) => {
    if (unanswered !== undefined) {
      unansweredBytes += buf.byteLength
      if (unansweredBytes > MAX_REPLAY_BYTES) unanswered = undefined
      else unanswered.push(buf)
    }
    const s = stream
    if (s.status !== 'open' || s.send(buf)) return
    socket.pause()
    // A stream that fails instead ends the socket or is replaced, by its close handler.
    s.onDrain().then(() => { socket.resume() }, () => { socket.resume() })
  })
  const finish = (failed: boolean): void => {
    localEnded = true
    if (stream.status !== 'open') return
    if (failed || options.endIsFailure?.() === true) stream.abort(new Error('the local end of the connection failed'))
    else void stream.close().catch(() => {})
  }
  socket.on('end', () => { finish(false) })
  socket.on('error', () => {})
  socket.on('close', hadError => { finish(hadError) })
}

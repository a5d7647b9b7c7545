import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream'

/** The parts of a Yamux stream's flow control this reads (private in the library's types). */
interface StreamWindow {
  state: StreamState
  recvWindow: number
  recvWindowCapacity: number
}

let installed = false

/**
 * Makes Yamux credit the sender only once half of a stream's receive window is used, as Go's and
 * Rust's Yamux do. JS Yamux sends a window update after every data frame it receives, so every
 * small message (a probe, its answer, an RPC) costs a second frame back: half of an idle host's
 * frames. The credit the sender holds never falls below half a window, so no stream waits for it.
 * Frames that carry a flag (SYN, ACK) and paused streams go through the library as before.
 */
export function creditHalfWindows (): void {
  if (installed) return
  installed = true
  const proto = YamuxStream.prototype as unknown as { sendWindowUpdate: (this: StreamWindow) => void }
  const sendEach = proto.sendWindowUpdate
  if (typeof sendEach !== 'function') throw new Error('@chainsafe/libp2p-yamux has no YamuxStream.sendWindowUpdate: check window-updates.ts against the installed version')
  proto.sendWindowUpdate = function (this: StreamWindow) {
    if (this.state === StreamState.Established && this.recvWindow - this.recvWindowCapacity < this.recvWindow / 2) return
    sendEach.call(this)
  }
}

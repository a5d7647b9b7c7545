import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import type { MultiaddrConnection, Stream, StreamMuxer } from '@libp2p/interface'
import { multiaddrConnectionPair } from '@libp2p/utils'
import { xenosMuxer } from '../../src/overlay/libp2p.ts'

/** Yamux frame types (the spec's): data, and window update. */
const DATA = 0
const WINDOW_UPDATE = 1

/** The overlay's muxer on one end of an in-memory connection, counting the frames it sends by type. */
function end (conn: MultiaddrConnection): { muxer: StreamMuxer, sent: Map<number, number> } {
  const sent = new Map<number, number>()
  const send = conn.send.bind(conn)
  conn.send = data => {
    const type = data.subarray(0, 2)[1] ?? -1
    sent.set(type, (sent.get(type) ?? 0) + 1)
    return send(data)
  }
  return { muxer: xenosMuxer()().createStreamMuxer(conn), sent }
}

async function nextMessage (s: Stream): Promise<Uint8Array> {
  return await new Promise(resolve => { s.addEventListener('message', e => { resolve(e.data.subarray()) }, { once: true }) })
}

describe('the overlay\'s muxer', () => {
  it('answers a run of small messages without a window update for each', async () => {
    const [a, b] = multiaddrConnectionPair()
    const client = end(a)
    const server = end(b)
    server.muxer.addEventListener('stream', e => {
      const s = e.detail
      s.addEventListener('message', m => { s.send(m.data) })
    })
    const s = await client.muxer.createStream()
    for (let i = 0; i < 50; i++) {
      const answer = nextMessage(s)
      s.send(Uint8Array.of(i, 1, 2, 3, 4, 5, 6, 7))
      assert.equal((await answer)[0], i)
    }
    // Each side sends its 50 messages, and at most the stream's opening and its answer besides.
    assert.equal(client.sent.get(DATA), 50)
    assert.ok((client.sent.get(WINDOW_UPDATE) ?? 0) <= 1, `client window updates: ${client.sent.get(WINDOW_UPDATE)}`)
    assert.ok((server.sent.get(WINDOW_UPDATE) ?? 0) <= 1, `server window updates: ${server.sent.get(WINDOW_UPDATE)}`)
    await client.muxer.close()
    await server.muxer.close()
  })

  it('still credits a sender that fills the window many times over: 4 MiB arrive whole', async () => {
    const [a, b] = multiaddrConnectionPair()
    const client = end(a)
    const server = end(b)
    const payload = randomBytes(4 * 2 ** 20)
    const received: Buffer[] = []
    const done = new Promise<void>(resolve => {
      server.muxer.addEventListener('stream', e => {
        e.detail.addEventListener('message', m => { received.push(Buffer.from(m.data.subarray())) })
        e.detail.addEventListener('remoteCloseWrite', () => { resolve() })
      })
    })
    const s = await client.muxer.createStream()
    for (let at = 0; at < payload.length; at += 16 * 1024) {
      if (!s.send(payload.subarray(at, at + 16 * 1024))) await s.onDrain()
    }
    await s.close()
    await done
    assert.ok(Buffer.concat(received).equals(payload), 'the bytes sent, in order')
    // A 256 KiB window credited by halves: a handful of updates for 4 MiB, not one per frame.
    const updates = server.sent.get(WINDOW_UPDATE) ?? 0
    assert.ok(updates >= 4 * 2 && updates <= 40, `receiver window updates: ${updates}`)
    await client.muxer.close()
    await server.muxer.close()
  })
})

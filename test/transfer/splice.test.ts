import assert from 'node:assert/strict'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { SocketStream, splice } from '../../src/transfer/index.ts'

async function listen (server: Server): Promise<number> {
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const a = server.address()
  return typeof a === 'object' && a !== null ? a.port : 0
}

async function open (port: number): Promise<Socket> {
  const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true })
  await new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('error', reject) })
  return s
}

/** What a client gets through a relay whose first service starts answering and is then cut off. */
async function throughCut (holdAnswer: boolean): Promise<{ got: string, failed: boolean }> {
  const cut = createServer(s => { s.once('data', () => { s.write('HTTP/1.0 200 OK\r\n'); setTimeout(() => { s.resetAndDestroy() }, 50) }) })
  const whole = createServer(s => { s.once('data', () => { s.end('HTTP/1.0 200 OK\r\n\r\nwhole answer') }) })
  const [cutPort, wholePort] = [await listen(cut), await listen(whole)]
  const relay = createServer({ allowHalfOpen: true }, socket => {
    void open(cutPort).then(first => {
      splice(new SocketStream(first), socket, { reopen: async () => new SocketStream(await open(wholePort)), holdAnswer: () => holdAnswer })
    })
  })
  const client = await open(await listen(relay))
  let got = ''
  client.on('data', (d: Buffer) => { got += d.toString() })
  const ended = new Promise<boolean>(resolve => {
    client.once('end', () => { resolve(false) })
    client.once('close', hadError => { resolve(hadError) })
    client.on('error', () => {})
  })
  client.write('GET / HTTP/1.0\r\n\r\n')
  const failed = await Promise.race([ended, sleep(5000).then(() => true)])
  client.destroy()
  for (const s of [cut, whole, relay]) s.close()
  return { got, failed: failed || !got.endsWith('whole answer') }
}

describe('splice', () => {
  it('sends a connection again whole when its answer was held back and the path failed', async () => {
    const held = await throughCut(true)
    assert.equal(held.got, 'HTTP/1.0 200 OK\r\n\r\nwhole answer')
    assert.equal(held.failed, false)
    // Without holding, the half answer went through and the connection could only fail.
    const streamed = await throughCut(false)
    assert.equal(streamed.failed, true)
    assert.equal(streamed.got, 'HTTP/1.0 200 OK\r\n')
  })
})

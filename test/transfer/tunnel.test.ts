import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { connect, createServer, type Server } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import pino from 'pino'
import { createXenosLibp2p, type XenosLibp2p } from '../../src/overlay/libp2p.ts'
import { Tunnels } from '../../src/transfer/index.ts'
import { hostKey } from '../helpers/adverts.ts'
import { tempDir } from '../helpers/cluster.ts'

const log = pino({ level: 'silent' })

async function host (): Promise<{ node: XenosLibp2p, tunnels: Tunnels, id: string }> {
  const k = await hostKey()
  const node = await createXenosLibp2p({ privateKey: k.key, listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], mdns: false })
  await node.start()
  const tunnels = new Tunnels(node, log)
  await tunnels.start()
  return { node, tunnels, id: k.id }
}

/** Sends `data` through a socket at `path` and returns the sha256 of what comes back. */
async function roundTrip (path: string, data: Buffer): Promise<string> {
  return await new Promise((resolve, reject) => {
    const hash = createHash('sha256')
    const socket = connect({ path, allowHalfOpen: true })
    socket.on('data', (d: Buffer) => hash.update(d))
    socket.once('end', () => { resolve(hash.digest('hex')) })
    socket.once('error', reject)
    socket.end(data)
  })
}

/** Unix sockets on two hosts joined through libp2p streams, admitted by ticket. */
describe('tunnels', () => {
  let owner: Awaited<ReturnType<typeof host>>
  let allowed: Awaited<ReturnType<typeof host>>
  let other: Awaited<ReturnType<typeof host>>
  let echo: Server
  let slow: Server
  let target: string
  let slowTarget: string
  let dir: string

  before(async () => {
    dir = await tempDir('tunnel')
    target = join(dir, 'echo.sock')
    // Echoes everything back, then ends its side once the client has ended its own.
    echo = createServer({ allowHalfOpen: true }, s => { s.pipe(s) })
    await new Promise<void>(resolve => echo.listen(target, resolve))
    // Reads slowly (as a VM loading its memory does) and answers with the hash of all it got.
    slowTarget = join(dir, 'slow.sock')
    slow = createServer({ allowHalfOpen: true }, s => {
      const hash = createHash('sha256')
      s.on('data', (d: Buffer) => {
        hash.update(d)
        s.pause()
        setTimeout(() => s.resume(), 4)
      })
      s.once('end', () => { s.end(hash.digest('hex')) })
    })
    await new Promise<void>(resolve => slow.listen(slowTarget, resolve))
    owner = await host()
    allowed = await host()
    other = await host()
    for (const h of [allowed, other]) await h.node.peerStore.merge(owner.node.peerId, { multiaddrs: owner.node.getMultiaddrs() })
  })

  after(async () => {
    echo.close()
    slow.close()
    for (const h of [owner, allowed, other]) await h.node.stop()
  })

  it('carries bytes both ways, intact, with half-close, for the peer the ticket names', async () => {
    const token = owner.tunnels.issue(allowed.id, target)
    const listener = await allowed.tunnels.listen(join(dir, 'in.sock'), owner.id, token)
    const data = randomBytes(48 * 1024 * 1024)
    const [first, second] = await Promise.all([roundTrip(listener.path, data), roundTrip(listener.path, data.subarray(0, 1000))])
    assert.equal(first, createHash('sha256').update(data).digest('hex'))
    assert.equal(second, createHash('sha256').update(data.subarray(0, 1000)).digest('hex'))
    await listener.close()
  })

  it('delivers every byte to a slow reader before passing on the end', async () => {
    const token = owner.tunnels.issue(allowed.id, slowTarget)
    const listener = await allowed.tunnels.listen(join(dir, 'slow-in.sock'), owner.id, token)
    // More than the stream's read buffer holds: the sender must be held back, not buffered for.
    const data = randomBytes(96 * 1024 * 1024)
    const answer = await new Promise<string>((resolve, reject) => {
      let text = ''
      const socket = connect({ path: listener.path, allowHalfOpen: true })
      socket.on('data', (d: Buffer) => { text += d.toString() })
      socket.once('end', () => { resolve(text) })
      socket.once('error', reject)
      socket.once('close', () => { reject(new Error('the tunnel closed without an end')) })
      socket.end(data)
    })
    assert.equal(answer, createHash('sha256').update(data).digest('hex'))
    await listener.close()
  })

  it('refuses a token presented by another peer, and a revoked one', async () => {
    const token = owner.tunnels.issue(allowed.id, target)
    const stolen = await other.tunnels.listen(join(dir, 'stolen.sock'), owner.id, token)
    assert.equal(await roundTrip(stolen.path, Buffer.from('hello')), createHash('sha256').digest('hex'), 'nothing comes back')
    await stolen.close()
    owner.tunnels.revoke(token)
    const revoked = await allowed.tunnels.listen(join(dir, 'revoked.sock'), owner.id, token)
    assert.equal(await roundTrip(revoked.path, Buffer.from('hello')), createHash('sha256').digest('hex'))
    await revoked.close()
  })
})

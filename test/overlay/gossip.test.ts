import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import pino from 'pino'
import { after, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { HostBody } from '../../src/core/index.ts'
import { Overlay } from '../../src/overlay/index.ts'
import { messageBytesId } from '../../src/overlay/libp2p.ts'

const body = (name: string): HostBody => ({ name, api: 'http://127.0.0.1:1/', addrs: [], drivers: ['process'], capacity: { cpu: 1, memory: 1 }, free: { cpu: 1, memory: 1 }, instances: 0, version: '0', operators: [], tags: {} })

async function until (what: string, done: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms
  while (!done()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

describe('gossip between overlays', () => {
  const overlays: Overlay[] = []
  after(async () => { await Promise.all(overlays.map(async o => { await o.stop() })) })

  async function host (name: string, bootstrap: Overlay[]): Promise<Overlay> {
    const o = await Overlay.create({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: bootstrap.map(b => b.multiaddrs()[0] ?? ''), mdns: false, advertTtlMs: 30 * 60_000, log: pino({ level: 'silent' }) })
    overlays.push(o)
    await o.start()
    await o.publish('host', o.peerId, body(name))
    return o
  }
  const seqOf = (at: Overlay, of: Overlay): number | undefined => at.cache.search({ kind: 'host', host: of.peerId })[0]?.seq

  it('sends an advert that reached nobody once a peer joins, and does not sign adverts anew for each peer that joins', async () => {
    const a = await host('a', [])
    const b = await host('b', [a])
    await until('b to hold a\'s advert', () => seqOf(b, a) !== undefined)
    const aSeq = seqOf(b, a)
    // c joins through b only (each host's cache holds its own advert too): a's advert reaches it by b (a pull, or gossip), never re-signed.
    const c = await host('c', [b])
    await until('everyone to hold everyone', () => [a, b, c].every(x => x.cache.search({ kind: 'host' }).length === 3))
    // A new peer subscribing used to have a, b and c re-sign theirs: a's advert would be newer now.
    await sleep(1000)
    assert.equal(seqOf(b, a), aSeq)
    assert.equal(seqOf(c, a), aSeq)
    assert.equal(seqOf(a, b), 0)
    // d joins a: a's gossip copy of d's advert is the one d published (it went out, as it was, once a peer subscribed).
    const d = await host('d', [a])
    await until('c to hold d\'s advert', () => seqOf(c, d) !== undefined)
    assert.equal(seqOf(c, d), 0)
  })

  it('tells copies of one gossip message apart from messages that differ in anything, signature included', () => {
    const msg = { from: new Uint8Array([1, 2]), seqno: new Uint8Array([3]), topic: 't', data: new Uint8Array([4, 5]), signature: new Uint8Array([6]) }
    assert.equal(messageBytesId({ ...msg }), messageBytesId(msg))
    for (const other of [{ ...msg, data: new Uint8Array([4, 6]) }, { ...msg, signature: new Uint8Array([7]) }, { ...msg, seqno: new Uint8Array([4]) }, { ...msg, topic: 'u' }]) {
      assert.notEqual(messageBytesId(other), messageBytesId(msg))
    }
    // Where one field ends is part of the id: bytes moved from one field to the next make another message.
    assert.notEqual(messageBytesId({ ...msg, from: new Uint8Array([1]), seqno: new Uint8Array([2, 3]) }), messageBytesId(msg))
  })
})

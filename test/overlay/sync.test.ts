import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import pino from 'pino'
import { after, before, describe, it } from 'node:test'
import { pullFrom, Rpc, serveSync, type Syncable } from '../../src/overlay/index.ts'
import { createXenosLibp2p, type XenosLibp2p } from '../../src/overlay/libp2p.ts'
import { Refused } from '../../src/overlay/sync.ts'

/** Records in a map. */
function records (entries: Array<[string, number]>): Syncable & { held: Map<string, number> } {
  const held = new Map(entries)
  return {
    held,
    digest: (after: string | null, limit: number): Array<[string, number]> => {
      return [...held].filter(([k]) => after === null || k > after).sort(([a], [b]) => a < b ? -1 : 1).slice(0, limit)
    },
    pick: (keys: string[]) => ({ records: keys.map(k => ({ k, v: held.get(k) })), taken: keys.length }),
    version: (key: string) => held.get(key),
    receive: async (rec: unknown) => { const { k, v } = rec as { k: string, v: number }; held.set(k, v) },
  }
}

describe('anti-entropy', () => {
  let a: XenosLibp2p, b: XenosLibp2p
  let served = records([])
  const calls: string[] = []
  before(async () => {
    const start = async (): Promise<XenosLibp2p> => {
      const node = await createXenosLibp2p({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], mdns: false })
      await node.start()
      return node
    }
    ;[a, b] = await Promise.all([start(), start()])
    const rpc = new Rpc(b, pino({ level: 'silent' }))
    const handle = rpc.handle.bind(rpc)
    rpc.handle = (method, schema, fn) => { handle(method, schema, async (params, from) => { calls.push(method); return await fn(params, from) }) }
    serveSync(rpc, () => served)
    await rpc.start()
    await a.dial(b.getMultiaddrs()[0]!)
  })
  after(async () => { await Promise.all([a.stop(), b.stop()]) })

  it('costs one hash each way between hosts that hold the same, and pulls what differs when they do not', async () => {
    const rpc = new Rpc(a, pino({ level: 'silent' }))
    served = records([['k1', 1], ['k2', 5]])
    const same = records([['k1', 1], ['k2', 5]])
    await pullFrom(rpc, b.peerId, 'adverts', same, new Refused())
    assert.deepEqual(calls, ['sync.root'], 'one hash, no page of the digest')
    served = records([['k1', 1], ['k2', 6], ['k3', 1]])
    const behind = records([['k1', 1], ['k2', 5]])
    await pullFrom(rpc, b.peerId, 'adverts', behind, new Refused())
    assert.deepEqual(calls.slice(1), ['sync.root', 'sync.digest', 'sync.pick'])
    assert.deepEqual([...behind.held].sort(), [['k1', 1], ['k2', 6], ['k3', 1]])
  })
})

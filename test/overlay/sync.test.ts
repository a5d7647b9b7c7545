import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import pino from 'pino'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { XenosError } from '../../src/core/index.ts'
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
  let answerAfterMs = 0
  before(async () => {
    const start = async (): Promise<XenosLibp2p> => {
      const node = await createXenosLibp2p({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], mdns: false })
      await node.start()
      return node
    }
    ;[a, b] = await Promise.all([start(), start()])
    const rpc = new Rpc(b, pino({ level: 'silent' }))
    const handle = rpc.handle.bind(rpc)
    rpc.handle = (method, schema, fn) => { handle(method, schema, async (params, from) => { calls.push(method); await sleep(answerAfterMs); return await fn(params, from) }) }
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

  it('ends a sync with a peer that drips its answers at the deadline, freeing its slot', async () => {
    // A rogue peer: a digest of many keys it claims newer, then one key gone through per slow answer.
    const keys = Array.from({ length: 1000 }, (_, i): [string, number] => [`k${String(i).padStart(4, '0')}`, 99])
    served = { ...records(keys), pick: () => ({ records: [], taken: 1 }) }
    answerAfterMs = 150
    calls.length = 0
    const started = Date.now()
    await assert.rejects(pullFrom(new Rpc(a, pino({ level: 'silent' })), b.peerId, 'adverts', records([]), new Refused(), 1000), (err: XenosError) => {
      assert.equal(err.code, 'TIMEOUT')
      assert.match(err.message, /took more than 1000 ms to sync adverts: the rest waits for the next sync/)
      return true
    })
    const took = Date.now() - started
    assert.ok(took < 2500, `ended ${took} ms after it began`)
    const picks = calls.filter(c => c === 'sync.pick').length
    assert.ok(picks > 0 && picks < 10, `${picks} picks of the 1000 it offered`)
    answerAfterMs = 0
  })
})

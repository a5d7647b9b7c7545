import assert from 'node:assert/strict'
import pino from 'pino'
import { describe, it } from 'node:test'
import { AdvertCache, Liveness, signAdvert, SUSPECT_MS, type LivenessInit } from '../../src/overlay/index.ts'
import { hostKey, templateAdvert } from '../helpers/adverts.ts'

/** A Liveness over a made-up cloud: which hosts answer pings, directly or through whom, on a clock the test moves. */
function cloud (o: { hosts: string[], up: Set<string>, reachableVia?: Set<string>, newest?: number }): { live: Liveness, forgotten: Array<[string, number]>, told: string[], refuted: number[], revived: string[], clock: { now: number }, pings: string[] } {
  const clock = { now: 1_000_000 }
  const forgotten: Array<[string, number]> = []
  const told: string[] = []
  const refuted: number[] = []
  const pings: string[] = []
  const revived: string[] = []
  const init: LivenessInit = {
    self: 'me',
    hosts: () => ['me', ...o.hosts],
    ping: async peer => { pings.push(peer); return o.up.has(peer) },
    pingVia: async (via, peer) => o.reachableVia?.has(`${via}>${peer}`) ?? false,
    connected: () => o.hosts,
    newestOf: host => o.hosts.includes(host) ? o.newest ?? 500 : undefined,
    forget: (host, upTo) => { forgotten.push([host, upTo]) },
    tell: async host => { told.push(host) },
    forgotten: () => forgotten.map(([h]) => h).filter(h => !revived.includes(h)),
    revive: host => { revived.push(host) },
    refute: () => { refuted.push(clock.now) },
    log: pino({ level: 'silent' }),
    clock: () => clock.now,
  }
  return { live: new Liveness(init), forgotten, told, refuted, revived, clock, pings }
}

describe('failure detection', () => {
  it('suspects a host that answers no one, and takes it for dead only once it stayed silent for the suspicion time', async () => {
    const c = cloud({ hosts: ['a', 'b', 'dead'], up: new Set(['a', 'b']) })
    await c.live.check('dead')
    assert.ok(c.live.suspects.has('dead'))
    c.clock.now += SUSPECT_MS - 1
    await c.live.check('dead')
    assert.deepEqual(c.forgotten, [], 'not yet')
    c.clock.now += 1
    await c.live.check('dead')
    assert.deepEqual(c.forgotten, [['dead', 500]], 'its adverts up to the newest known go')
    assert.deepEqual(c.told, ['dead'], 'and the others are told')
    assert.ok(!c.live.suspects.has('dead'))
    c.live.tick()
    await new Promise(resolve => setImmediate(resolve))
    assert.deepEqual(c.revived, [], 'still silent: still dead')
  })

  it('takes back a host taken for dead that answers after all', async () => {
    const up = new Set(['a'])
    const c = cloud({ hosts: ['a', 'busy'], up })
    await c.live.check('busy')
    c.clock.now += SUSPECT_MS
    await c.live.check('busy')
    assert.deepEqual(c.forgotten, [['busy', 500]])
    up.add('busy')
    c.live.tick()
    for (let i = 0; i < 100 && c.revived.length === 0; i++) await new Promise(resolve => setTimeout(resolve, 1))
    assert.deepEqual(c.revived, ['busy'], 'once, whether the round or the look at forgotten hosts got to it first')
  })

  it('keeps a host that only others reach, and clears a suspect that answers again', async () => {
    const c = cloud({ hosts: ['a', 'b', 'far'], up: new Set(['a', 'b']), reachableVia: new Set(['b>far']) })
    await c.live.check('far')
    assert.ok(!c.live.suspects.has('far'), 'a ping through b answered')
    const up = new Set(['a'])
    const d = cloud({ hosts: ['a', 'slow'], up })
    await d.live.check('slow')
    assert.ok(d.live.suspects.has('slow'))
    d.clock.now += SUSPECT_MS
    up.add('slow')
    await d.live.check('slow')
    assert.ok(!d.live.suspects.has('slow'), 'it answered before it was taken for dead')
    assert.deepEqual(d.forgotten, [])
  })

  it('probes every other host once a round, never itself', async () => {
    const c = cloud({ hosts: ['a', 'b', 'c'], up: new Set(['a', 'b', 'c']) })
    for (let i = 0; i < 3; i++) c.live.tick()
    await new Promise(resolve => setImmediate(resolve))
    assert.deepEqual([...c.pings].sort(), ['a', 'b', 'c'])
  })

  it('believes a notice only when its own ping goes unanswered, checks a host at most once in a while, and refutes one about itself', async () => {
    const c = cloud({ hosts: ['a', 'gone', 'alive'], up: new Set(['a', 'alive']) })
    const at = c.clock.now
    assert.equal(await c.live.heard({ host: 'alive', upTo: 500, at }), false, 'a live host is not talked out')
    assert.equal(await c.live.heard({ host: 'gone', upTo: 500, at }), true)
    assert.deepEqual(c.forgotten, [['gone', 500]])
    assert.equal(await c.live.heard({ host: 'gone', upTo: 500, at }), false, 'the same host is not pinged again at once')
    assert.equal(await c.live.heard({ host: 'a', upTo: 400, at }), false, 'the host spoke after the notice\'s bound')
    assert.equal(await c.live.heard({ host: 'unknown', upTo: 500, at }), false, 'nothing known of it')
    assert.equal(await c.live.heard({ host: 'alive', upTo: 500, at: at - 60_000 }), false, 'an old notice')
    assert.equal(c.pings.filter(p => p === 'alive').length, 1, 'neither the old notice nor the others cost a ping')
    assert.equal(await c.live.heard({ host: 'me', upTo: 500, at }), false)
    assert.equal(c.refuted.length, 1, 'a notice about this host makes it announce itself again')
  })
})

describe('a forgotten host in the cache', () => {
  it('drops its adverts up to the bound, refuses late copies of them, and takes what it issues after', async () => {
    const h = await hostKey()
    const cache = new AdvertCache()
    const now = Date.now()
    const old = await signAdvert(h.key, templateAdvert(h.id, { issuedAt: now - 1000 }))
    cache.offer(old)
    assert.equal(cache.newestOf(h.id), now - 1000)
    cache.forgetHost(h.id, now - 1000)
    assert.equal(cache.size, 0)
    assert.equal(cache.offer(old), 'stale', 'a late copy does not bring it back')
    assert.equal(cache.offer(await signAdvert(h.key, templateAdvert(h.id, { issuedAt: now, seq: 2 }))), 'new', 'what it says after the bound comes in')
  })

  it('keeps what it last said, and since when it is gone, when it is taken for dead a second time', async () => {
    const h = await hostKey()
    const cache = new AdvertCache()
    const now = Date.now()
    const body = { name: 'e', api: 'http://127.0.0.1:1/', addrs: [], drivers: ['process'], capacity: { cpu: 1, memory: 1 }, free: { cpu: 1, memory: 1 }, instances: 0, version: '0', operators: [], tags: {} }
    cache.offer(await signAdvert(h.key, { ...templateAdvert(h.id, { issuedAt: now - 1000 }), kind: 'host', id: h.id, body } as never))
    cache.forgetHost(h.id, now - 1000, now)
    // Its own probe took it for dead; then another host's notice says the same.
    cache.forgetHost(h.id, now - 500, now + 2000)
    const [gone] = cache.unreachableHosts()
    assert.equal(gone?.since, now, 'gone since the first time')
    assert.deepEqual(gone?.last.map(a => [a.kind, a.kind === 'host' ? a.body.name : '']), [['host', 'e']], 'its host advert as it was, once')
  })
})

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { MAX_ADVERT_TTL_MS } from '../../src/core/index.ts'
import { AdvertCache, encodeAdvert, signAdvert, verifyAdvert } from '../../src/overlay/index.ts'
import { hostKey, templateAdvert } from '../helpers/adverts.ts'

describe('advert verification', () => {
  it('accepts an advert signed by the host it names', async () => {
    const h = await hostKey()
    const advert = await signAdvert(h.key, templateAdvert(h.id))
    const result = await verifyAdvert(encodeAdvert(advert))
    assert.equal(result.ok, true)
  })

  it('rejects each kind of forgery with its reason', async () => {
    const h = await hostKey()
    const other = await hostKey()
    const now = Date.now()
    const good = await signAdvert(h.key, templateAdvert(h.id))
    const cases: Array<[string, unknown, string]> = [
      ['tampered body', { ...good, body: { ...good.body, name: 'evil' } }, 'bad-signature'],
      ['signed by another host', await signAdvert(other.key, templateAdvert(h.id)), 'bad-signature'],
      ['host advert about someone else', await signAdvert(h.key, {
        ...templateAdvert(h.id),
        kind: 'host',
        id: other.id,
        body: { name: 'x', api: 'http://127.0.0.1:1/', addrs: [], drivers: ['process'], capacity: { cpu: 1, memory: 1 }, free: { cpu: 1, memory: 1 }, instances: 0, version: '0', operators: [], tags: {} },
      } as never), 'wrong-host'],
      ['not a peer id', await signAdvert(h.key, templateAdvert('not-a-peer-id')), 'wrong-host'],
      ['expired', await signAdvert(h.key, templateAdvert(h.id, { issuedAt: now - 60_000, expiresAt: now - 1000 })), 'expired'],
      ['from the future', await signAdvert(h.key, templateAdvert(h.id, { issuedAt: now + 3_600_000, expiresAt: now + 3_600_000 + 1000 })), 'future'],
      ['too long a lifetime', await signAdvert(h.key, templateAdvert(h.id, { expiresAt: now + MAX_ADVERT_TTL_MS + 60_000 })), 'ttl-too-long'],
      ['oversized', await signAdvert(h.key, templateAdvert(h.id, { body: { ...templateAdvert(h.id).body, description: 'x'.repeat(900), tags: Object.fromEntries(Array.from({ length: 80 }, (_, i) => [`t${i}`, 'v'.repeat(200)])) } } as never)), 'oversized'],
      ['unknown field', { ...good, extra: 1 }, 'malformed'],
      ['not JSON', new TextEncoder().encode('{nope'), 'malformed'],
    ]
    for (const [what, input, reason] of cases) {
      const bytes = input instanceof Uint8Array ? input : new TextEncoder().encode(JSON.stringify(input))
      const result = await verifyAdvert(bytes)
      assert.equal(result.ok, false, what)
      assert.equal(!result.ok && result.reason, reason, what)
    }
  })
})

describe('advert cache', () => {
  it('keeps the newest advert per host and subject, and lets a withdrawal win over late copies', async () => {
    const h = await hostKey()
    const g = await hostKey()
    const cache = new AdvertCache()
    const now = Date.now()
    const v1 = await signAdvert(h.key, templateAdvert(h.id, { seq: 1, issuedAt: now }))
    const v2 = await signAdvert(h.key, templateAdvert(h.id, { seq: 2, issuedAt: now + 10 }))
    assert.equal(cache.offer(v2), 'new')
    assert.equal(cache.offer(v1), 'stale', 'an older copy does not replace a newer one')
    const fromG = await signAdvert(g.key, templateAdvert(g.id, { issuedAt: now }))
    assert.equal(cache.offer(fromG), 'new', 'another host holding the same template is a separate advert')
    assert.equal(cache.search({ kind: 'template' }).length, 2)
    const withdrawn = await signAdvert(h.key, { ...templateAdvert(h.id, { seq: 3, issuedAt: now + 20 }), withdrawn: true } as never)
    cache.offer(withdrawn)
    assert.equal(cache.offer(v2), 'stale', 'a withdrawn advert does not come back')
    assert.deepEqual(cache.search({ kind: 'template' }).map(a => a.host), [g.id])
    assert.equal(cache.search({ text: 'FORGED', tags: { kind: 'web' } }).length, 1)
    assert.equal(cache.search({ tags: { kind: 'db' } }).length, 0)
    assert.deepEqual(cache.sweep(now + 60_000).map(a => a.host), [g.id], 'expired live adverts are reported when swept')
    assert.equal(cache.size, 0)
  })
})

describe('advert cache limits', () => {
  it('takes no more than its limit of adverts from one host, nor in all, while updates of what it holds still come in', async () => {
    const h = await hostKey()
    const g = await hostKey()
    const cache = new AdvertCache({ perHost: 3, total: 5 })
    const id = (n: number): string => `sha256:${String(n).padStart(64, '0')}`
    const offered = []
    for (let n = 0; n < 5; n++) offered.push(cache.offer(await signAdvert(h.key, templateAdvert(h.id, { id: id(n) }))))
    assert.deepEqual(offered, ['new', 'new', 'new', 'over-cap', 'over-cap'])
    assert.equal(cache.offer(await signAdvert(h.key, templateAdvert(h.id, { id: id(0), seq: 9, issuedAt: Date.now() + 5 }))), 'new', 'a newer advert about something held replaces it')
    for (let n = 0; n < 3; n++) offered.push(cache.offer(await signAdvert(g.key, templateAdvert(g.id, { id: id(n) }))))
    assert.deepEqual(offered.slice(5), ['new', 'new', 'over-cap'], 'the total limit holds across hosts')
    assert.equal(cache.size, 5)
  })

  it('bounds the bytes one host\'s adverts take', async () => {
    const h = await hostKey()
    const cache = new AdvertCache({ perHostBytes: 2600 })
    const big = (n: number): Promise<any> => signAdvert(h.key, templateAdvert(h.id, { id: `sha256:${String(n).padStart(64, '0')}`, body: { ...templateAdvert(h.id).body, description: 'x'.repeat(700) } } as never))
    assert.equal(cache.offer(await big(1)), 'new')
    assert.equal(cache.offer(await big(2)), 'new')
    assert.equal(cache.offer(await big(3)), 'over-cap')
    assert.ok(cache.bytes <= 2600)
  })
})

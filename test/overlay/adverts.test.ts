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
        body: { name: 'x', api: 'http://127.0.0.1:1/', addrs: [], drivers: ['process'], capacity: { cpu: 1, memory: 1 }, free: { cpu: 1, memory: 1 }, instances: 0, version: '0' },
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
    assert.equal(cache.offer(v2), true)
    assert.equal(cache.offer(v1), false, 'an older copy does not replace a newer one')
    const fromG = await signAdvert(g.key, templateAdvert(g.id, { issuedAt: now }))
    assert.equal(cache.offer(fromG), true, 'another host holding the same template is a separate advert')
    assert.equal(cache.search({ kind: 'template' }).length, 2)
    const withdrawn = await signAdvert(h.key, { ...templateAdvert(h.id, { seq: 3, issuedAt: now + 20 }), withdrawn: true } as never)
    cache.offer(withdrawn)
    assert.equal(cache.offer(v2), false, 'a withdrawn advert does not come back')
    assert.deepEqual(cache.search({ kind: 'template' }).map(a => a.host), [g.id])
    assert.equal(cache.search({ text: 'FORGED', tags: { kind: 'web' } }).length, 1)
    assert.equal(cache.search({ tags: { kind: 'db' } }).length, 0)
    assert.deepEqual(cache.sweep(now + 60_000).map(a => a.host), [g.id], 'expired live adverts are reported when swept')
    assert.equal(cache.size, 0)
  })
})

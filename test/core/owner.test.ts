import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  actionSignedBy, canonicalJson, contentId, decodeAuthHeader, encodeAuthHeader, generateOwnerKey, ownerKeyFromPem, ownerKeyToPem, REQUEST_MAX_SKEW_MS,
  signAction, verifyAction,
} from '../../src/core/index.ts'

const HOST = '12D3KooWGzh4gCqHb2yxWVZLb3pNbG6rBdr3u7wQ9k5cQfEJ3w1K'
const OTHER_HOST = '12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo'
const action = { action: 'stop', target: 'i-0123456789abcdef', params: { a: 1, b: [2, 3] }, host: HOST }

describe('owner signatures', () => {
  it('verify for the signed action only', () => {
    const me = generateOwnerKey()
    const auth = signAction(me, action)
    verifyAction(auth, action)
    verifyAction(auth, { ...action, params: { b: [2, 3], a: 1 } }) // key order does not matter
    assert.throws(() => { verifyAction(auth, { ...action, action: 'destroy' }) }, /UNAUTHENTICATED|does not verify/)
    assert.throws(() => { verifyAction(auth, { ...action, target: 'i-ffffffffffffffff' }) }, /does not verify/)
    assert.throws(() => { verifyAction(auth, { ...action, params: { a: 2, b: [2, 3] } }) }, /does not verify/)
  })

  it('name the host that must carry them out: another host refuses them, even with the host field changed', () => {
    const me = generateOwnerKey()
    const auth = signAction(me, action)
    assert.throws(() => { verifyAction(auth, { ...action, host: OTHER_HOST }) }, /signed for host .* not for host/)
    assert.throws(() => { verifyAction({ ...auth, host: OTHER_HOST }, { ...action, host: OTHER_HOST }) }, /does not verify/)
    assert.equal(actionSignedBy(auth, action), true, 'kept as proof, it stays valid whenever it is checked')
    assert.equal(actionSignedBy(auth, { ...action, host: OTHER_HOST }), false)
  })

  it('refuse another owner claiming the signature and stale timestamps', () => {
    const me = generateOwnerKey()
    const other = generateOwnerKey()
    const auth = signAction(me, action)
    assert.throws(() => { verifyAction({ ...auth, owner: other.id }, action) }, /does not verify/)
    const old = signAction(me, action, Date.now() - REQUEST_MAX_SKEW_MS - 1000)
    assert.throws(() => { verifyAction(old, action) }, /timestamp/)
  })

  it('round-trip through PEM and the auth header', () => {
    const me = generateOwnerKey()
    assert.equal(ownerKeyFromPem(ownerKeyToPem(me)).id, me.id)
    const auth = signAction(me, action)
    assert.deepEqual(decodeAuthHeader(encodeAuthHeader(auth)), auth)
    assert.throws(() => decodeAuthHeader('v1 owner=x'), /version/)
    assert.throws(() => decodeAuthHeader('v2 owner=short host=x ts=1 nonce=00000000 sig=x'), /malformed/)
  })
})

describe('canonical JSON', () => {
  it('sorts keys, drops undefined, and so gives equal values equal ids', () => {
    assert.equal(canonicalJson({ b: 1, a: { d: undefined, c: [1, { y: 1, x: 2 }] } }), '{"a":{"c":[1,{"x":2,"y":1}]},"b":1}')
    assert.equal(contentId({ a: 1, b: 2 }), contentId({ b: 2, a: 1 }))
    assert.notEqual(contentId({ a: 1 }), contentId({ a: 2 }))
  })
})

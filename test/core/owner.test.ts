import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  canonicalJson, contentId, decodeAuthHeader, encodeAuthHeader, generateOwnerKey, ownerKeyFromPem, ownerKeyToPem, REQUEST_MAX_SKEW_MS,
  signAction, verifyAction,
} from '../../src/core/index.ts'

const action = { action: 'stop', target: 'i-0123456789abcdef', params: { a: 1, b: [2, 3] } }

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
    assert.throws(() => decodeAuthHeader('v2 owner=x'), /version/)
    assert.throws(() => decodeAuthHeader('v1 owner=short ts=1 nonce=00000000 sig=x'), /malformed/)
  })
})

describe('canonical JSON', () => {
  it('sorts keys, drops undefined, and so gives equal values equal ids', () => {
    assert.equal(canonicalJson({ b: 1, a: { d: undefined, c: [1, { y: 1, x: 2 }] } }), '{"a":{"c":[1,{"x":2,"y":1}]},"b":1}')
    assert.equal(contentId({ a: 1, b: 2 }), contentId({ b: 2, a: 1 }))
    assert.notEqual(contentId({ a: 1 }), contentId({ a: 2 }))
  })
})

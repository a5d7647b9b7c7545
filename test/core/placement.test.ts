import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { deployTokenValid, generateOwnerKey, instanceIdOf, instanceNameOf, signDeployToken, verifyPlacement } from '../../src/core/index.ts'
import { AdvertCache, signAdvert, verifyAdvert, verifyHostSignature } from '../../src/overlay/index.ts'
import { hostKey } from '../helpers/adverts.ts'
import { deployedOn, drainedTo, instanceAdvert, movedTo, placedUnder, TEMPLATE } from '../helpers/placement.ts'

describe('placements', () => {
  const alice = generateOwnerKey()
  const mallory = generateOwnerKey()

  it('place an instance where its owner deployed it, moved it, or a drain signed by the operator of its host sent it', async () => {
    const a = await hostKey()
    const b = await hostKey()
    const c = await hostKey()
    const operator = generateOwnerKey()
    const { id, placement } = deployedOn(alice, a.id, TEMPLATE, 1000)
    const instance = { id, owner: alice.id, template: TEMPLATE }
    assert.deepEqual(await verifyPlacement(placement, instance, verifyHostSignature), { host: a.id, at: 1000 })
    const moved = movedTo(alice, placement, id, a.id, b.id, 2000)
    assert.deepEqual(await verifyPlacement(moved, instance, verifyHostSignature), { host: b.id, at: 2000 })
    const drained = await drainedTo(operator, b.key, moved, id, b.id, c.id, 3000)
    assert.deepEqual(await verifyPlacement(drained, instance, verifyHostSignature), { host: c.id, at: 3000 })
  })

  it('refuse whatever the owner did not sign: another owner\'s token, an id it does not derive, a move or a drain made up by another', async () => {
    const a = await hostKey()
    const b = await hostKey()
    const rogue = await hostKey()
    const { id, placement } = deployedOn(alice, a.id)
    const instance = { id, owner: alice.id, template: TEMPLATE }
    const mine = deployedOn(mallory, rogue.id)
    // Mallory's own token, offered as Alice's instance: its id does not derive from it, nor its owner.
    await assert.rejects(verifyPlacement(mine.placement, instance, verifyHostSignature), /not by its owner/)
    await assert.rejects(verifyPlacement(mine.placement, { ...instance, owner: mallory.id }, verifyHostSignature), /does not derive its id/)
    const [root, mineRoot] = [placement.root, mine.placement.root]
    assert.ok('token' in root && 'token' in mineRoot)
    assert.notEqual(instanceIdOf(mineRoot.token, 0), id)
    await assert.rejects(verifyPlacement({ ...placement, root: { ...root, token: { ...root.token, host: rogue.id } } }, instance, verifyHostSignature), /does not derive its id|did not sign/)
    await assert.rejects(verifyPlacement(placement, { ...instance, template: `sha256:${'f'.repeat(64)}` }, verifyHostSignature), /is for template/)
    // A move to the rogue, signed by mallory instead of Alice.
    await assert.rejects(verifyPlacement(movedTo(mallory, placement, id, a.id, rogue.id), instance, verifyHostSignature), /move its owner did not sign/)
    // A drain of host A, signed by A's key but whose operator signature is mallory's over another host.
    const drained = await drainedTo(mallory, a.key, placement, id, a.id, rogue.id)
    await assert.rejects(verifyPlacement({ ...drained, drains: drained.drains.map(d => ({ ...d, operator: alice.id })) }, instance, verifyHostSignature), /operator did not sign/)
    // A handoff the host it names did not sign.
    const forged = await drainedTo(mallory, rogue.key, placement, id, a.id, rogue.id)
    await assert.rejects(verifyPlacement(forged, instance, verifyHostSignature), /host .* did not sign/)
    // A drain of a host the instance was not on.
    await assert.rejects(verifyPlacement(await drainedTo(mallory, b.key, placement, id, b.id, rogue.id), instance, verifyHostSignature), /where the instance was not/)
  })

  it('place an instance where a host its owner named for a deployment placed it, and nowhere another host says', async () => {
    const supervisor = await hostKey()
    const a = await hostKey()
    const rogue = await hostKey()
    const { id, placement } = await placedUnder(alice, [supervisor.id], supervisor.key, supervisor.id, a.id, 'web', 5000)
    const instance = { id, owner: alice.id, template: TEMPLATE }
    assert.deepEqual(await verifyPlacement(placement, instance, verifyHostSignature), { host: a.id, at: 5000 })
    assert.deepEqual(await verifyPlacement(movedTo(alice, placement, id, a.id, rogue.id, 6000), instance, verifyHostSignature), { host: rogue.id, at: 6000 }, 'and its owner may move it on')
    // The rogue, not named by Alice, places an instance of her deployment on itself.
    const self = await placedUnder(alice, [supervisor.id], rogue.key, rogue.id, rogue.id)
    await assert.rejects(verifyPlacement(self.placement, { ...instance, id: self.id }, verifyHostSignature), /does not let act for its owner/)
    // ...or claims the supervisor placed it there.
    const claimed = await placedUnder(alice, [supervisor.id], rogue.key, supervisor.id, rogue.id)
    await assert.rejects(verifyPlacement(claimed.placement, { ...instance, id: claimed.id }, verifyHostSignature), /did not sign/)
    // Mallory's own deployment does not place Alice's instances, nor does a changed place keep its id.
    const theirs = await placedUnder(mallory, [rogue.id], rogue.key, rogue.id, rogue.id)
    await assert.rejects(verifyPlacement(theirs.placement, { ...instance, id: theirs.id }, verifyHostSignature), /not of its owner/)
    const root = placement.root
    assert.ok('grant' in root)
    await assert.rejects(verifyPlacement({ ...placement, root: { ...root, generation: 1 } }, instance, verifyHostSignature), /does not derive its id/)
    await assert.rejects(verifyPlacement({ ...placement, root: { ...root, host: rogue.id } }, instance, verifyHostSignature), /did not sign/)
  })

  it('keep a host from advertising an instance not placed on it, and let the latest placement stand', async () => {
    const a = await hostKey()
    const b = await hostKey()
    const rogue = await hostKey()
    const { id, placement } = deployedOn(alice, a.id, TEMPLATE, Date.now() - 5000)
    const claim = await signAdvert(rogue.key, instanceAdvert(rogue.id, id, alice.id, placement, {}, Date.now() + 20_000))
    const result = await verifyAdvert(claim)
    assert.equal(!result.ok && result.reason, 'bad-placement', 'a rogue cannot advertise an instance placed elsewhere, however new its advert')
    const cache = new AdvertCache()
    const onA = await signAdvert(a.key, instanceAdvert(a.id, id, alice.id, placement, { issuedAt: Date.now() + 10_000 }))
    const onB = await signAdvert(b.key, instanceAdvert(b.id, id, alice.id, movedTo(alice, placement, id, a.id, b.id)))
    cache.offer(onA)
    cache.offer(onB)
    assert.equal(cache.get('instance', id)?.host, b.id, 'the host it moved to, though the old host advertised later')
    assert.deepEqual(cache.search({ kind: 'instance' }).map(x => x.host), [b.id])
    cache.offer(await signAdvert(b.key, { ...instanceAdvert(b.id, id, alice.id, movedTo(alice, placement, id, a.id, b.id)), issuedAt: Date.now() + 1, seq: 2, withdrawn: true } as never))
    assert.equal(cache.get('instance', id), undefined, 'withdrawn by the host it was placed on last: gone, whatever older hosts say')
  })

  it('name a deploy\'s instances across its hosts as its tokens say, and the tokens keep that signed', async () => {
    const a = await hostKey()
    const alone = { count: 1 }
    assert.equal(instanceNameOf(alone, 'web', 0), 'web', 'one instance keeps the name')
    assert.deepEqual([0, 1, 2].map(i => instanceNameOf({ count: 3 }, 'web', i)), ['web-1', 'web-2', 'web-3'])
    const third = signDeployToken(alice, { host: a.id, template: TEMPLATE, key: '0'.repeat(32), count: 2, numbering: { first: 2, total: 4 }, spec: 'a'.repeat(64) })
    assert.deepEqual([0, 1].map(i => instanceNameOf(third, 'web', i)), ['web-3', 'web-4'], 'after the hosts before it')
    assert.equal(instanceNameOf({ count: 1, numbering: { first: 1, total: 2 } }, 'web', 0), 'web-2', 'one of several is numbered')
    assert.equal(deployTokenValid(third), true)
    // A host that passes the token on cannot renumber what it names.
    assert.equal(deployTokenValid({ ...third, numbering: { first: 0, total: 4 } }), false)
  })
})

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { PrivateKey } from '@libp2p/interface'
import { generateOwnerKey, placeBytes, sha256Hex, signDeploymentGrant, type GrantPlace, type PlacedRead } from '../../src/core/index.ts'
import { placedReaderOf } from '../../src/node/deployments/places.ts'
import { hostKey } from '../helpers/adverts.ts'

const text = (owner: string): string => `name: report
components:
  render:
    template: renderer
    task: { outputs: report/out }
    storage: { inputs: ["data://me/report/in", "data://${owner}/shared.txt"] }
`

async function signedPlace (key: PrivateKey, unsigned: Omit<GrantPlace, 'sig'>): Promise<GrantPlace> {
  return { ...unsigned, sig: Buffer.from(await key.sign(placeBytes(unsigned))).toString('base64url') }
}

/**
 * The host holding a file lets another read it in its owner's stead only under a place: one a
 * supervisor the owner's grant names gave to that very host, lately, for a component whose
 * signed description names the file. Each case is an attack that place stops.
 */
describe('reads of an input under a place', () => {
  it('let the host placed read what the description names, and nothing else, nobody else', async () => {
    const owner = generateOwnerKey()
    const [supervisor, placedOn, other, rogue] = await Promise.all([hostKey(), hostKey(), hostKey(), hostKey()])
    const description = text(owner.id)
    const grant = signDeploymentGrant(owner, { name: 'report', description: sha256Hex(description), supervisors: [supervisor.id] })
    const unsigned: Omit<GrantPlace, 'sig'> = { grant, component: 'render', index: 0, generation: 0, template: `sha256:${'b'.repeat(64)}`, host: placedOn.id, by: supervisor.id, at: Date.now() }
    const placed: PlacedRead = { text: description, place: await signedPlace(supervisor.key, unsigned) }
    const dir = { owner: owner.id, path: 'report/in' }

    assert.equal(await placedReaderOf(placed, placedOn.id, dir), owner.id, '"me" is the owner whose grant it is')
    assert.equal(await placedReaderOf(placed, placedOn.id, { owner: owner.id, path: 'shared.txt' }), owner.id)

    await assert.rejects(placedReaderOf(placed, other.id, dir), /not on host/, 'another host showing the place it saw')
    await assert.rejects(placedReaderOf(placed, placedOn.id, { owner: owner.id, path: 'secrets' }), /names no input/, 'a file the description does not name')
    await assert.rejects(placedReaderOf(placed, placedOn.id, { owner: owner.id, path: 'report' }), /names no input/, 'the directory above one it names')
    await assert.rejects(placedReaderOf({ ...placed, text: description.replace('report/in', 'secrets') }, placedOn.id, { owner: owner.id, path: 'secrets' }), /not the one the owner/, 'a description the owner did not sign')
    const forged = await signedPlace(rogue.key, { ...unsigned, by: supervisor.id })
    await assert.rejects(placedReaderOf({ ...placed, place: forged }, placedOn.id, dir), /did not sign this place/, 'a place its supervisor did not sign')
    const byRogue = await signedPlace(rogue.key, { ...unsigned, by: rogue.id })
    await assert.rejects(placedReaderOf({ ...placed, place: byRogue }, placedOn.id, dir), /may not act for deployment/, 'a place from a host the grant does not name')
    const stale = await signedPlace(supervisor.key, { ...unsigned, at: Date.now() - 31 * 60_000 })
    await assert.rejects(placedReaderOf({ ...placed, place: stale }, placedOn.id, dir), /too long ago/, 'a place of long ago')
    const stranger = signDeploymentGrant(generateOwnerKey(), { name: 'report', description: sha256Hex(description), supervisors: [supervisor.id] })
    const theirs = await signedPlace(supervisor.key, { ...unsigned, grant: { ...stranger, owner: owner.id } })
    await assert.rejects(placedReaderOf({ ...placed, place: theirs }, placedOn.id, dir), /not signed by the owner/, 'a grant passed off as the owner\'s')
  })
})

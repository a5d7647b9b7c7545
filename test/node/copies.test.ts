import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import pino from 'pino'
import { COMPONENT_EVENTS_KEPT, generateOwnerKey, instanceIdOfPlace, sha256Hex, signDeploymentGrant, type DeploymentGrant } from '../../src/core/index.ts'
import { DeploymentCopies, deploymentCopySchema } from '../../src/node/deployments/copies.ts'
import { openStore, type DeploymentRecord, type PlacedInstance } from '../../src/store/index.ts'
import { hostKey } from '../helpers/adverts.ts'

const TEXT = 'name: site\ncomponents:\n  web: { template: web, count: 2 }\n'

/** A copy of deployment `site` as supervisor `acting` has it in `term`, with instances of these generations. */
function copyOf (grant: DeploymentGrant, acting: string, term: number, generations: number[], host: string): DeploymentRecord {
  const instances = generations.map((generation, index) => ({ index, generation, id: instanceIdOfPlace({ grant, component: 'web', index, generation }), host }))
  return {
    owner: grant.owner, name: 'site', text: TEXT, grant, earlier: [], state: 'running', error: null, acting, term, createdAt: 1, updatedAt: 1 + term,
    components: { web: { state: 'running', instances, generation: 0, event: null, updatedAt: 1 } },
  }
}

/**
 * The copies a supervisor keeps of a deployment other supervisors act for: the later term
 * stands, and a supervisor whose copy lost (both acted during a partition) ends what only it made.
 */
describe('copies of a deployment between its supervisors', () => {
  it('keep the later term, refuse a host the grant does not name, and end what the loser alone made', async () => {
    const owner = generateOwnerKey()
    const [self, other, rogue] = await Promise.all([hostKey(), hostKey(), hostKey()])
    const grant = signDeploymentGrant(owner, { name: 'site', description: sha256Hex(TEXT), supervisors: [self.id, other.id] })
    const store = openStore(':memory:')
    const released: PlacedInstance[] = []
    const copies = new DeploymentCopies({
      overlay: { peerId: self.id } as never,
      store,
      release: async (_d, _path, i) => { released.push(i) },
      log: pino({ level: 'silent' }),
    })
    // This host acted in term 0, and made the second instance anew (generation 1) during a partition.
    store.deployments.put(copyOf(grant, self.id, 0, [0, 1], self.id))
    await assert.rejects(copies.receive(copyOf(grant, rogue.id, 5, [0, 0], rogue.id), rogue.id), /does not name hosts/)
    await assert.rejects(copies.receive({ ...copyOf(grant, other.id, 1, [0, 0], other.id), text: TEXT.replace('2', '9') }, other.id), /another text/)
    const forged = copyOf(grant, other.id, 1, [0, 0], other.id)
    await assert.rejects(copies.receive({ ...forged, components: { web: { ...forged.components.web!, instances: [{ index: 0, generation: 7, id: 'i-0000000000000000', host: other.id }] } } }, other.id), /places do not derive/)

    // The other side took over in term 1 and made the second instance anew too (its own generation 2).
    assert.equal(await copies.receive(copyOf(grant, other.id, 1, [0, 2], other.id), other.id), true)
    assert.deepEqual(released.map(i => i.generation), [1], 'what only this host made is ended: one copy of each instance lives on')
    assert.equal(store.deployments.get(owner.id, 'site')?.acting, other.id, 'this host stands by')
    // An older copy, from either side, changes nothing now.
    assert.equal(await copies.receive(copyOf(grant, self.id, 0, [0, 1], self.id), other.id), false)
    assert.equal(store.deployments.get(owner.id, 'site')?.term, 1)
  })

  it('refuse a copy that would make the others keep more events of a component than a supervisor does', async () => {
    const owner = generateOwnerKey()
    const other = await hostKey()
    const grant = signDeploymentGrant(owner, { name: 'site', description: sha256Hex(TEXT), supervisors: [other.id] })
    const copy = copyOf(grant, other.id, 0, [0, 0], other.id)
    const withEvents = (events: Array<{ at: number, event: string }>): unknown => ({ ...copy, components: { web: { ...copy.components.web!, events } } })
    const kept = Array.from({ length: COMPONENT_EVENTS_KEPT }, (_, i) => ({ at: i, event: `died ${i}` }))
    assert.equal(deploymentCopySchema.safeParse(withEvents(kept)).success, true)
    assert.equal(deploymentCopySchema.safeParse(withEvents([...kept, { at: 99, event: 'one more' }])).success, false, 'more events than kept')
    assert.equal(deploymentCopySchema.safeParse(withEvents([{ at: 1, event: 'x'.repeat(4097) }])).success, false, 'an event longer than any a supervisor writes')
  })

  it('take an updated deployment whose instances run under its earlier grant, and refuse an earlier grant its owner did not sign', async () => {
    const owner = generateOwnerKey()
    const [self, other] = await Promise.all([hostKey(), hostKey()])
    const store = openStore(':memory:')
    const copies = new DeploymentCopies({ overlay: { peerId: self.id } as never, store, release: async () => {}, log: pino({ level: 'silent' }) })
    const v1 = signDeploymentGrant(owner, { name: 'site', description: sha256Hex(TEXT), supervisors: [self.id, other.id] })
    const text2 = TEXT.replace('count: 2', 'count: 3')
    const v2 = signDeploymentGrant(owner, { name: 'site', description: sha256Hex(text2), supervisors: [self.id, other.id] })
    // Mid-update: instance 0 runs as v2 made it, instance 1 still as v1 did.
    const old = copyOf(v1, other.id, 0, [0, 0], other.id).components.web!.instances
    const made = { index: 0, generation: 1, id: instanceIdOfPlace({ grant: v2, component: 'web', index: 0, generation: 1 }), host: other.id }
    const copy: DeploymentRecord = {
      ...copyOf(v2, other.id, 0, [], other.id),
      text: text2,
      earlier: [{ text: TEXT, grant: v1 }],
      components: { web: { state: 'deploying', instances: [made, { ...old[1]!, grant: v1.sig }], retiring: [{ ...old[0]!, grant: v1.sig }], generation: 0, event: null, updatedAt: 1 } },
    }
    assert.equal(deploymentCopySchema.safeParse(copy).success, true)

    const stranger = signDeploymentGrant(generateOwnerKey(), { name: 'site', description: sha256Hex(TEXT), supervisors: [self.id, other.id] })
    await assert.rejects(copies.receive({ ...copy, earlier: [{ text: TEXT, grant: { ...stranger, owner: owner.id } }] }, other.id), /not signed by the owner/)
    await assert.rejects(copies.receive({ ...copy, earlier: [{ text: text2, grant: v1 }] }, other.id), /another text/)
    const unheard = { ...copy.components.web!, instances: [made, { ...old[1]!, grant: 'not-a-grant-this-deployment-had' }] }
    await assert.rejects(copies.receive({ ...copy, components: { web: unheard } }, other.id), /places do not derive/, 'an instance under a grant the copy does not hold')
    const unsaid = { ...copy.components.web!, instances: [made, old[1]!] }
    await assert.rejects(copies.receive({ ...copy, components: { web: unsaid } }, other.id), /places do not derive/, 'an instance of v1 passed off as one of v2')

    assert.equal(await copies.receive(copy, other.id), true)
    assert.deepEqual(store.deployments.get(owner.id, 'site')?.earlier.map(e => e.grant.sig), [v1.sig])
    // The acting supervisor's copy from before the update changes nothing now.
    assert.equal(await copies.receive(copyOf(v1, other.id, 0, [0, 0], other.id), other.id), false)
  })
})

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { generateOwnerKey, sha256Hex, signDeploymentGrant } from '../../src/core/index.ts'
import { resolveDescription } from '../../src/deploy/index.ts'
import { outdatedBy, placedUnder, stillUsed, updatedTo } from '../../src/node/deployments/updates.ts'
import type { DeploymentRecord } from '../../src/store/index.ts'

const V1 = `name: pi
components:
  master: { template: m, onFailure: replace }
  tracker: { template: t, env: { MASTER_ID: "\${master.id}" } }
  linked: { template: t, env: { MASTER: "\${master.endpoints}" } }
  workers: { template: w, count: 2, env: { ROLE: a } }
  single: { template: s }
`

const resolved = (text: string): ReturnType<typeof resolveDescription> => resolveDescription(text, 'pi.yaml')

/** Which components an update makes anew, and how a deployment's record is carried over to its new description. */
describe('updates of a deployment', () => {
  it('make anew what differs in what its instances are made of, and what holds the host or id of one made anew', () => {
    const v1 = resolved(V1)
    assert.deepEqual(outdatedBy(v1, v1), new Set(), 'nothing changed')
    // Its count, its failure policy and its liveness are its supervisor's: its instances stay.
    assert.deepEqual(outdatedBy(v1, resolved(V1.replace('count: 2', 'count: 5').replace('onFailure: replace', 'onFailure: restart'))), new Set())
    assert.deepEqual(outdatedBy(v1, resolved(V1.replace('ROLE: a', 'ROLE: b'))), new Set(['workers']))
    // The master made anew: the id fixed in the tracker's environment is stale; the link follows by itself.
    assert.deepEqual(outdatedBy(v1, resolved(V1.replace('template: m', 'template: m2'))), new Set(['master', 'tracker']))
    // From one instance to several, its instances are named otherwise.
    assert.deepEqual(outdatedBy(v1, resolved(V1.replace('template: s }', 'template: s, count: 2 }'))), new Set(['single']))
  })

  it('write down under which grant each instance was placed, and forget an earlier grant nothing is under', () => {
    const owner = generateOwnerKey()
    const text2 = V1.replace('ROLE: a', 'ROLE: b').replace('  single: { template: s }\n', '  added: { template: s }\n')
    const g1 = signDeploymentGrant(owner, { name: 'pi', description: sha256Hex(V1), supervisors: ['h'] })
    const g2 = signDeploymentGrant(owner, { name: 'pi', description: sha256Hex(text2), supervisors: ['h'] })
    const running = { state: 'running' as const, generation: 0, event: null, updatedAt: 1 }
    const d: DeploymentRecord = {
      owner: owner.id, name: 'pi', text: V1, grant: g1, earlier: [], state: 'running', error: null, acting: 'h', term: 0, createdAt: 1, updatedAt: 1,
      components: {
        master: { ...running, instances: [{ index: 0, generation: 0, id: 'i-m', host: 'h' }], checkpoints: [{ index: 0, instance: 'i-m', generation: 0, host: 'k', snapshot: 's-1', at: 1 }] },
        workers: { ...running, instances: [{ index: 0, generation: 0, id: 'i-w0', host: 'h' }, { index: 1, generation: 0, id: 'i-w1', host: 'h' }] },
        single: { ...running, instances: [{ index: 0, generation: 0, id: 'i-s', host: 'h' }] },
      },
    }
    const next = updatedTo(d, resolved(V1), text2, g2, resolved(text2), 5)
    const updated: DeploymentRecord = { ...d, ...next }
    assert.deepEqual(next.earlier.map(e => e.grant.sig), [g1.sig])
    assert.equal(next.components.workers?.outdated, true)
    assert.equal(next.components.master?.outdated, false)
    assert.equal(next.components.single?.state, 'running', 'a component the update drops stays until it is ended')
    assert.deepEqual(next.components.added, { state: 'waiting', instances: [], generation: 0, event: null, updatedAt: 5 })
    const master = next.components.master?.instances[0]
    assert.ok(master !== undefined)
    assert.equal(placedUnder(updated, master).text, V1, 'the master runs under the description it was placed under')
    assert.equal(placedUnder(updated, next.components.master?.checkpoints?.[0] ?? {}).grant.sig, g1.sig)
    assert.equal(placedUnder(updated, {}).grant.sig, g2.sig, 'what is placed now is under the new grant')

    // Once every instance of the earlier description is made anew and its checkpoints dropped, it is forgotten.
    const rolled = Object.fromEntries(Object.entries(next.components).map(([p, c]) => [p, { ...c, instances: c.instances.map(({ grant: _g, ...i }) => i), checkpoints: [] }]))
    assert.deepEqual(stillUsed({ ...updated, components: rolled }), [])
    assert.throws(() => placedUnder({ ...updated, earlier: [] }, master), /no longer holds the description/)
  })
})

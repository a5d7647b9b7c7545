import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import pino from 'pino'
import { COMPONENT_EVENTS_KEPT, deploymentViewSchema, generateOwnerKey, sha256Hex, signDeploymentGrant } from '../../src/core/index.ts'
import { ComponentOps } from '../../src/node/deployments/components.ts'
import { openStore } from '../../src/store/index.ts'
import { hostKey } from '../helpers/adverts.ts'

const TEXT = 'name: site\ncomponents:\n  web: { template: web }\n'

/** What a supervisor writes down of a component: its state, and what happened to it lately, for its owner to read. */
describe('the events of a deployment\'s components', () => {
  it('keep the latest ones in order with their times, each once, and show them to the owner', async () => {
    const owner = generateOwnerKey()
    const self = await hostKey()
    const grant = signDeploymentGrant(owner, { name: 'site', description: sha256Hex(TEXT), supervisors: [self.id] })
    const store = openStore(':memory:')
    store.deployments.insert({ owner: owner.id, name: 'site', text: TEXT, grant, earlier: [], state: 'applying', components: {}, error: null, acting: self.id, term: 0, createdAt: 1, updatedAt: 1 })
    const ops = new ComponentOps({ overlay: { peerId: self.id } as never, store, places: {} as never, deployer: {} as never, liveness: {} as never, log: pino({ level: 'silent' }) })

    ops.setComponent(owner.id, 'site', 'web', { state: 'deploying', event: 'placing 1 instance(s) on 1 host(s)' })
    ops.setComponent(owner.id, 'site', 'web', { state: 'deploying', event: 'placing 1 instance(s) on 1 host(s)' })
    ops.setComponent(owner.id, 'site', 'web', { state: 'running' })
    ops.setComponent(owner.id, 'site', 'web', { event: 'running and healthy' })
    let view = deploymentViewSchema.parse(ops.view(ops.get(owner.id, 'site')))
    assert.deepEqual(view.components[0]?.events.map(e => e.event), ['placing 1 instance(s) on 1 host(s)', 'running and healthy'], 'the same event twice in a row is one, a change of state alone is none')
    assert.equal(view.components[0]?.state, 'running')

    for (let i = 0; i < COMPONENT_EVENTS_KEPT + 5; i++) ops.setComponent(owner.id, 'site', 'web', { event: `died ${i}` })
    view = deploymentViewSchema.parse(ops.view(ops.get(owner.id, 'site')))
    const events = view.components[0]?.events ?? []
    assert.equal(events.length, COMPONENT_EVENTS_KEPT, 'a bounded history')
    assert.equal(events.at(-1)?.event, `died ${COMPONENT_EVENTS_KEPT + 4}`, 'the newest last')
    assert.equal(events[0]?.event, 'died 5', 'the oldest dropped first')
    assert.ok(events.every((e, i) => i === 0 || e.at >= (events[i - 1]?.at ?? 0)), 'in the order they happened')
    assert.equal(view.components[0]?.event, events.at(-1)?.event)
  })
})

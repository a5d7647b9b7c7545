import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { generateOwnerKey, instanceIdOfPlace, placeBytes, REQUEST_MAX_SKEW_MS, sha256Hex, signDeploymentGrant, type GrantPlace, type InstanceView, type PlaceRequest } from '../../src/core/index.ts'
import { Places, type PlacesInit } from '../../src/node/deployments/places.ts'
import { hostKey } from '../helpers/adverts.ts'

const TEMPLATE = `sha256:${'c'.repeat(64)}`
const text = 'name: web\ncomponents:\n  site:\n    template: site\n'

/** The supervisor of this host's instances, as far as a place sees it: what it holds, and what it was asked to do. */
class Instances {
  readonly views = new Map<string, InstanceView>()
  readonly asked: string[] = []

  has (id: string): boolean { return this.views.has(id) }
  view (id: string): InstanceView { return this.views.get(id) as InstanceView }
  async control (id: string, action: string): Promise<undefined> {
    this.asked.push(`${action} ${id}`)
    if (action === 'destroy') this.views.delete(id)
    return undefined
  }

  async create (_t: unknown, owner: string, made: Array<{ id: string, name: string }>): Promise<InstanceView[]> {
    for (const m of made) {
      this.asked.push(`create ${m.id}`)
      this.views.set(m.id, { id: m.id, name: m.name, owner, state: 'running', createdAt: Date.now(), healthyAt: Date.now() } as unknown as InstanceView)
    }
    return []
  }
}

/** A place of deployment `web`'s only instance on this host, freshly signed by its supervisor, and the host it is on. */
async function setUp (): Promise<{ places: Places, instances: Instances, id: string, place: (ago?: number) => Promise<PlaceRequest> }> {
  const owner = generateOwnerKey()
  const [supervisor, here] = await Promise.all([hostKey(), hostKey()])
  const grant = signDeploymentGrant(owner, { name: 'web', description: sha256Hex(text), supervisors: [supervisor.id] })
  const instances = new Instances()
  const nonces = new Set<string>()
  const init = {
    overlay: { peerId: here.id },
    supervisor: instances,
    catalog: { resolve: async () => ({ id: TEMPLATE }) },
    fetcher: { ensure: async () => ({ template: {}, fetched: 0 }) },
    verifier: { claimOnce: (o: string, sig: string) => { if (nonces.has(`${o}/${sig}`)) throw new Error('replayed'); nonces.add(`${o}/${sig}`) } },
  } as unknown as PlacesInit
  const unsigned: Omit<GrantPlace, 'sig' | 'at'> = { grant, component: 'site', index: 0, generation: 0, template: TEMPLATE, host: here.id, by: supervisor.id }
  const place = async (ago = 0): Promise<PlaceRequest> => {
    const at = { ...unsigned, at: Date.now() - ago }
    return { text, place: { ...at, sig: Buffer.from(await supervisor.key.sign(placeBytes(at))).toString('base64url') }, env: {}, links: [] }
  }
  return { places: new Places(init), instances, id: instanceIdOfPlace(unsigned), place }
}

/** A place asked again (its supervisor restarted) makes nothing twice, but makes afresh what never came up. */
describe('places asked again', () => {
  it('answers the instance already made, without making it again', async () => {
    const { places, instances, id, place } = await setUp()
    await places.place(await place())
    assert.equal((await places.place(await place())).id, id)
    assert.deepEqual(instances.asked, [`create ${id}`])
  })

  it('makes afresh an instance this host stopped while making', async () => {
    const { places, instances, id, place } = await setUp()
    instances.views.set(id, { id, state: 'failed', error: 'the host stopped while this instance was being created', createdAt: Date.now() } as unknown as InstanceView)
    const view = await places.place(await place())
    assert.equal(view.state, 'running')
    assert.deepEqual(instances.asked, [`destroy ${id}`, `create ${id}`])
  })

  it('leaves the one that never came up as it is when the place asking again is stale, replayed or forged', async () => {
    const { places, instances, id, place } = await setUp()
    const failed = { id, state: 'failed', error: 'the host stopped while this instance was being created', createdAt: Date.now() } as unknown as InstanceView
    instances.views.set(id, failed)
    await assert.rejects(places.place(await place(REQUEST_MAX_SKEW_MS + 60_000)), /too long ago/)
    const fresh = await place()
    await places.place(fresh)
    instances.views.set(id, failed)
    instances.asked.length = 0
    await assert.rejects(places.place(fresh), /replayed/, 'the same place, sent again')
    const rogue = await hostKey()
    const forged = { ...fresh, place: { ...fresh.place, at: Date.now(), sig: Buffer.from(await rogue.key.sign(placeBytes({ ...fresh.place, at: Date.now() }))).toString('base64url') } }
    await assert.rejects(places.place(forged), /did not sign this place/)
    assert.deepEqual(instances.asked, [], 'nothing was destroyed or made')
  })

  it('says that one failed which had come up, and leaves it to its supervisor\'s policy', async () => {
    const { places, instances, id, place } = await setUp()
    instances.views.set(id, { id, state: 'failed', error: 'exited with code 1', createdAt: Date.now(), healthyAt: Date.now() } as unknown as InstanceView)
    await assert.rejects(places.place(await place()), /is failed: exited with code 1/)
    assert.deepEqual(instances.asked, [])
  })
})

import assert from 'node:assert/strict'
import type { FastifyInstance } from 'fastify'
import { after, before, describe, it } from 'node:test'
import pino from 'pino'
import type { PrivateKey } from '@libp2p/interface'
import { buildApp } from '../../src/api/index.ts'
import {
  generateOwnerKey, instanceIdOfPlace, placeBytes, sha256Hex, supervisedBytes, signDeploymentGrant,
  type CheckpointKeep, type DeploymentGrant, type GrantPlace, type OwnerKey, type PlaceRequest,
} from '../../src/core/index.ts'
import { Host } from '../../src/node/index.ts'
import { hostKey } from '../helpers/adverts.ts'
import { tempDir } from '../helpers/cluster.ts'
import { Requests } from '../helpers/requests.ts'

const manifest = {
  name: 'web', version: '1', driver: 'process', resources: { cpu: 0.1, memory: 32 },
  command: 'mkdir -p www && echo up > www/index.html && exec busybox httpd -f -p ${XENOS_HOST}:${XENOS_PORT_HTTP} -h www',
  ports: [{ name: 'http', protocol: 'http' }],
}
const TEXT = 'name: site\ncomponents:\n  web:\n    template: web\n    count: 2\n    env: { MODE: fast }\n'

async function signed (key: PrivateKey, data: Uint8Array): Promise<string> {
  return Buffer.from(await key.sign(data)).toString('base64url')
}

/**
 * A host makes an instance another host's deployment places on it only as its owner's grant
 * allows: placed by a supervisor the grant names, signed by it, under the description signed,
 * with what the description says; and ends one only at such a supervisor's word.
 */
describe('places under a deployment', () => {
  let host: Host
  let app: FastifyInstance
  let alice: OwnerKey
  let supervisor: { key: PrivateKey, id: string }
  let rogue: { key: PrivateKey, id: string }
  let template: string
  let grant: DeploymentGrant

  before(async () => {
    alice = generateOwnerKey()
    supervisor = await hostKey()
    rogue = await hostKey()
    host = await Host.create({ dataDir: await tempDir('places'), listen: ['/ip4/127.0.0.1/tcp/0'], capacity: { cpu: 1, memory: 256 } }, pino({ level: 'silent' }))
    await host.start()
    app = await buildApp(host)
    const r = new Requests(app, host.overlay.peerId)
    const body = { manifest }
    template = (await r.inject('POST', '/v1/templates', r.auth(alice, 'template.import', 'templates', body), body)).json().id
    grant = signDeploymentGrant(alice, { name: 'site', description: sha256Hex(TEXT), supervisors: [supervisor.id] })
  })

  after(async () => {
    for (const v of host.supervisor.list()) await host.supervisor.control(v.id, 'destroy')
    await app.close()
    await host.stop()
  })

  /** A place of instance `index` on this host, signed by `by` (with `key`), and what comes with it. */
  const request = async (o: { by?: string, key?: PrivateKey, index?: number, generation?: number, text?: string, template?: string, env?: Record<string, string>, grant?: DeploymentGrant, snapshot?: string } = {}): Promise<PlaceRequest> => {
    const unsigned: Omit<GrantPlace, 'sig'> = { grant: o.grant ?? grant, component: 'web', index: o.index ?? 0, generation: o.generation ?? 0, template: o.template ?? template, host: host.overlay.peerId, by: o.by ?? supervisor.id, at: Date.now() }
    const place = { ...unsigned, sig: await signed(o.key ?? supervisor.key, placeBytes(unsigned)) }
    return { text: o.text ?? TEXT, place, env: o.env ?? { MODE: 'fast' }, links: [], ...o.snapshot === undefined ? {} : { snapshot: o.snapshot } }
  }

  it('refuses a place by a host the grant does not name, one it did not sign, another description, template or environment', async () => {
    await assert.rejects(host.places.place(await request({ by: rogue.id, key: rogue.key })), /may not act for deployment site/)
    await assert.rejects(host.places.place(await request({ key: rogue.key })), /did not sign this place/)
    await assert.rejects(host.places.place(await request({ text: TEXT.replace('count: 2', 'count: 50') })), /not the one the owner of deployment site signed/)
    await assert.rejects(host.places.place(await request({ template: `sha256:${'a'.repeat(64)}` })), /runs web/)
    await assert.rejects(host.places.place(await request({ env: { MODE: 'fast', PATH: '/evil' } })), /sets no PATH/)
    await assert.rejects(host.places.place(await request({ index: 2 })), /has 2 instance\(s\), not 3/)
    const forged = { ...grant, supervisors: [rogue.id] }
    await assert.rejects(host.places.place(await request({ grant: forged, by: rogue.id, key: rogue.key })), /not signed by the owner/)
    assert.deepEqual(host.supervisor.list(), [], 'nothing was made')
  })

  it('makes what the supervisor placed, once, and starts it again or ends it only at a supervisor\'s word', async () => {
    const req = await request()
    const made = await host.places.place(req)
    assert.equal(made.id, instanceIdOfPlace(req.place))
    assert.equal(made.owner, alice.id)
    assert.equal(made.name, 'site-web-1')
    assert.equal(made.state, 'running')
    assert.equal((await host.places.place(req)).id, made.id, 'the same place again makes nothing new')
    assert.equal(host.supervisor.list().length, 1)

    const at = Date.now()
    const word = async (action: 'release' | 'restart', by: { key: PrivateKey, id: string }, as = by.id): Promise<void> => {
      await host.places.act({ id: made.id, action, by: as, at, sig: await signed(by.key, supervisedBytes(action, made.id, grant.sig, as, at)) })
    }
    await assert.rejects(word('release', rogue), /may not act for deployment site/)
    await assert.rejects(word('release', rogue, supervisor.id), /did not sign this release/)
    await assert.rejects(word('restart', rogue, supervisor.id), /did not sign this restart/)
    assert.equal(host.supervisor.view(made.id).state, 'running')
    await host.supervisor.control(made.id, 'stop')
    await word('restart', supervisor)
    assert.equal(host.supervisor.view(made.id).state, 'running', 'started again where it was')
    await word('release', supervisor)
    assert.equal(host.supervisor.has(made.id), false)
  })

  it('takes, keeps and resumes from checkpoints only for a supervisor the grant names, of a component that asks for them', async () => {
    const text = 'name: ck\ncomponents:\n  web:\n    template: web\n    checkpoint: 5s\n    env: { MODE: fast }\n'
    const ck = signDeploymentGrant(alice, { name: 'ck', description: sha256Hex(text), supervisors: [supervisor.id] })
    const made = await host.places.place(await request())
    let at = Date.now()
    const take = async (by: { key: PrivateKey, id: string }, body: string, as = by.id): Promise<unknown> => {
      // A signature is claimed once: each attempt is signed anew.
      at++
      const sig = await signed(by.key, supervisedBytes('checkpoint', made.id, grant.sig, as, at))
      return await host.checkpoints.take({ request: { id: made.id, action: 'checkpoint', by: as, at, sig }, text: body, keeper: rogue.id })
    }
    await assert.rejects(take(rogue, TEXT), /may not act for deployment site/)
    await assert.rejects(take(rogue, TEXT, supervisor.id), /did not sign this checkpoint/)
    await assert.rejects(take(supervisor, TEXT), /component web of deployment site takes no checkpoints/)

    const file = { blob: `sha256:${'a'.repeat(64)}`, size: 1, ticket: 'b'.repeat(32) }
    const keep = (g: DeploymentGrant, body: string): CheckpointKeep => ({ text: body, grant: g, component: 'web', index: 0, generation: 0, from: rogue.id, snapshot: 's-00000000000000ab', offer: { template, at: Date.now(), state: file, disk: file } })
    await assert.rejects(host.checkpoints.keep(keep(ck, text), rogue.id), /may not act for deployment ck/)
    await assert.rejects(host.checkpoints.keep(keep(ck, TEXT), supervisor.id), /not the one the owner of deployment ck signed/)
    await assert.rejects(host.checkpoints.keep(keep(grant, TEXT), supervisor.id), /takes no checkpoints/)
    await assert.rejects(host.checkpoints.keep(keep(ck, text), supervisor.id), /is not a VM's/)
    await assert.rejects(host.checkpoints.keep(keep({ ...ck, supervisors: [rogue.id] }, text), rogue.id), /not signed by the owner/)

    // A snapshot of the owner's that is not a checkpoint of the place resumed.
    host.store.snapshots.insert({ id: 's-00000000000000aa', instanceId: made.id, templateId: template, owner: alice.id, createdAt: Date.now() })
    try {
      await assert.rejects(host.places.place(await request({ grant: ck, text, generation: 1, snapshot: 's-00000000000000ab' })), /keeps no checkpoint s-00000000000000ab/)
      await assert.rejects(host.places.place(await request({ grant: ck, text, generation: 1, snapshot: 's-00000000000000aa' })), /is not a checkpoint of instance 0 of component web of deployment ck/)
      await assert.rejects(host.places.place(await request({ generation: 1, snapshot: 's-00000000000000aa' })), /takes no checkpoints to resume from/)
      // Nor may a checkpoint's drop reach it: not from a host the grant does not name, nor as one of another deployment.
      const drop = { grant: ck, component: 'web', index: 0, generation: 0, snapshot: 's-00000000000000aa' }
      await assert.rejects(host.checkpoints.drop(drop, rogue.id), /may not act for deployment ck/)
      await assert.rejects(host.checkpoints.drop(drop, supervisor.id), /is not a checkpoint of component web of deployment ck/)
      assert.ok(host.store.snapshots.get('s-00000000000000aa') !== undefined, 'the snapshot stays')
    } finally {
      host.store.snapshots.remove('s-00000000000000aa')
    }
    assert.equal(host.supervisor.list().length, 1, 'nothing more was made')
    await host.supervisor.control(made.id, 'destroy')
  })

  it('runs a description only under a fresh grant its owner signed over that text, naming this host, once', async () => {
    const text = 'name: solo\ncomponents:\n  web: { template: web }\n'
    const apply = async (g: DeploymentGrant, body = text): Promise<{ status: number, code?: string }> => {
      const res = await app.inject({ method: 'POST', url: '/v1/deployments', payload: { text: body, grant: g } })
      return { status: res.statusCode, code: res.json().error?.code }
    }
    const self = host.overlay.peerId
    const named = (o: { supervisors?: string[], issuedAt?: number } = {}): DeploymentGrant => signDeploymentGrant(alice, { name: 'solo', description: sha256Hex(text), supervisors: o.supervisors ?? [self] }, o.issuedAt)
    assert.deepEqual(await apply(named({ supervisors: [rogue.id] })), { status: 403, code: 'FORBIDDEN' }, 'a grant that names other hosts')
    assert.deepEqual(await apply(named(), text.replace('web }', 'web, count: 9 }')), { status: 401, code: 'UNAUTHENTICATED' }, 'another text than the one signed')
    assert.deepEqual(await apply(named({ issuedAt: Date.now() - 10 * 60_000 })), { status: 401, code: 'UNAUTHENTICATED' }, 'a grant signed long ago')
    assert.deepEqual(await apply({ ...named(), owner: generateOwnerKey().id }), { status: 401, code: 'UNAUTHENTICATED' }, 'claimed by another key')
    assert.deepEqual(host.supervisor.list(), [], 'nothing was made')
    const grant = named()
    assert.equal((await apply(grant)).status, 200)
    assert.equal(host.deployments.show(alice.id, 'solo').state, 'running')
    await host.deployments.terminate(alice.id, 'solo')
    assert.deepEqual(await apply(grant), { status: 401, code: 'UNAUTHENTICATED' }, 'the same grant again, once terminated, is a replay')
  })
})

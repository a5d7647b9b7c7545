import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { after, before, describe, it } from 'node:test'
import pino from 'pino'
import { buildApp } from '../../src/api/index.ts'
import { allowanceId, encodeAuthHeader, generateOwnerKey, sha256Hex, signAction, signAllowance, signDeploymentGrant, signTransfer, XenosError, type Allowance, type OwnerKey, type Receipt } from '../../src/core/index.ts'
import { Host } from '../../src/node/index.ts'
import { tempDir } from '../helpers/cluster.ts'
import { Requests } from '../helpers/requests.ts'

const OTHER_HOST = '12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo'
const manifest = { name: 'sleeper', version: '1', driver: 'process', command: 'sleep 60', resources: { cpu: 0.1, memory: 16 } }
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** How one signed route is asked: its URL and body, and what its signature covers. */
interface RouteCase {
  url: string
  body?: unknown
  headers?: Record<string, string>
  action: string
  target: string
  params: unknown
  /** What another user's properly signed request must come to: refused, or an answer that shows none of Alice's. */
  mallory: (res: LightMyRequestResponse) => void
}

const refused = (res: LightMyRequestResponse): void => {
  assert.ok([403, 404].includes(res.statusCode), `refused, not ${res.statusCode}: ${res.body.slice(0, 300)}`)
  assert.ok(['FORBIDDEN', 'INSTANCE_NOT_FOUND', 'DATA_NOT_FOUND'].includes(res.json().error.code), res.body.slice(0, 300))
}

/**
 * Every route of the API that takes a signature, found in /openapi.json, is tried as an attacker
 * would: unsigned, signed by the owner for another host or another action, and signed properly
 * by another user. A route that takes a signature but has no case here fails the test.
 */
describe('signed routes', () => {
  let host: Host
  let app: FastifyInstance
  let r: Requests
  let alice: OwnerKey
  let mallory: OwnerKey
  let operator: OwnerKey
  let self: string
  let template: string
  let instance: string
  let upload: string
  const file = `data://${'_'.repeat(43)}/f.txt`
  let aliceFile: string
  let aliceReceipt: Receipt
  let allowance: Allowance
  let budget: string

  before(async () => {
    alice = generateOwnerKey()
    mallory = generateOwnerKey()
    operator = generateOwnerKey()
    host = await Host.create({ dataDir: await tempDir('signed'), listen: ['/ip4/127.0.0.1/tcp/0'], capacity: { cpu: 1, memory: 256 }, operators: [operator.id], bank: true, bankGrant: 5 }, pino({ level: 'silent' }))
    await host.start()
    app = await buildApp(host)
    self = host.overlay.peerId
    r = new Requests(app, self)
    const body = { manifest }
    template = (await r.inject('POST', '/v1/templates', r.auth(alice, 'template.import', 'templates', body), body)).json().id
    instance = (await r.deploy(alice, template, { name: 'a' })).json().instances[0].id
    aliceFile = file.replace('_'.repeat(43), alice.id)
    // Alice's account is opened with the bank's starting grant; 3 of it paid into the host's escrow.
    await r.inject('GET', '/v1/bank/account', r.auth(alice, 'account', host.banking.own ?? '', {}))
    aliceReceipt = await host.banking.transfer(signTransfer(alice, { bank: host.banking.own ?? '', to: host.bidding.escrow, amount: 3 }))
    // And 2 of it given to the host's bidder to spend on her instance's bid.
    allowance = signAllowance(alice, { bank: host.banking.own ?? '', agent: host.bidder.agent, max: 2, until: Date.now() + 600_000, payees: [host.bidding.escrow], instances: [instance] })
    budget = (await r.inject('POST', '/v1/budgets', {}, { allowance, hosts: { [instance]: self } })).json().budget.id
    assert.equal(budget, allowanceId(allowance))
    const content = Buffer.from('alice\n')
    const begin = { uri: aliceFile, size: content.length, sha256: sha(content) }
    const up = (await r.inject('POST', '/v1/data/uploads', r.auth(alice, 'data.put', aliceFile, { size: begin.size, sha256: begin.sha256 }), begin)).json()
    await app.inject({ method: 'PUT', url: `/v1/data/uploads/${up.id as string}?offset=0`, payload: content, headers: { ...r.auth(alice, 'data.upload', up.id, { offset: 0 }), 'content-type': 'application/octet-stream' } })
    await r.inject('POST', `/v1/data/uploads/${up.id as string}/complete`, r.auth(alice, 'data.complete', up.id, {}))
    const pending = { uri: `data://${alice.id}/g.txt`, size: 10, sha256: 'b'.repeat(64) }
    upload = (await r.inject('POST', '/v1/data/uploads', r.auth(alice, 'data.put', pending.uri, { size: 10, sha256: pending.sha256 }), pending)).json().id
    host.store.snapshots.insert({ id: 's-0123456789abcdef', instanceId: instance, templateId: template, owner: alice.id, createdAt: Date.now() })
    host.store.tasks.insert({ id: instance, owner: alice.id, templateId: template, inputs: [], outputsPrefix: 'out', keep: true, state: 'running', exitCode: null, error: null, outputs: [], refused: [], placed: null, createdAt: Date.now(), collectingAt: null, endedAt: null })
    await r.inject('PUT', '/v1/data/grants', r.auth(alice, 'data.grant', `data://${alice.id}`, { grantee: operator.id, rights: 'read' }), { grantee: operator.id, rights: 'read' })
    const text = 'name: site\ncomponents:\n  s:\n    template: sleeper\n'
    const applied = await r.inject('POST', '/v1/deployments', {}, { text, grant: signDeploymentGrant(alice, { name: 'site', description: sha256Hex(text), supervisors: [self] }) })
    assert.equal(applied.json().state, 'running', applied.body.slice(0, 300))
  })

  after(async () => {
    for (const v of host.supervisor.list()) await host.supervisor.control(v.id, 'destroy')
    await app.close()
    await host.stop()
  })

  const cases = (): Record<string, RouteCase> => {
    const byHost = { to: null }
    const connect = { endpoint: null, address: '127.0.0.1', port: 0 }
    const malloryBlob = Buffer.from('mallory\'s own image file')
    const digest = 'sha256:' + 'c'.repeat(64)
    return {
      'POST /v1/host/drain': { url: '/v1/host/drain', body: {}, action: 'drain', target: self, params: byHost, mallory: refused },
      'POST /v1/host/undrain': { url: '/v1/host/undrain', action: 'undrain', target: self, params: {}, mallory: refused },
      'POST /v1/connect': { url: '/v1/connect', body: { target: instance }, action: 'connect', target: instance, params: connect, mallory: refused },
      'POST /v1/templates': {
        url: '/v1/templates', body: { manifest: { ...manifest, name: 'mallorys' } }, action: 'template.import', target: 'templates', params: { manifest: { ...manifest, name: 'mallorys' } },
        mallory: res => {
          assert.equal(res.statusCode, 201, 'anyone may import a template of their own')
          assert.equal(host.library.get(res.json().id)?.owner, mallory.id)
        },
      },
      'POST /v1/templates/{ref}/pull': { url: `/v1/templates/${template}/pull`, action: 'template.pull', target: template, params: {}, mallory: res => { assert.equal(res.statusCode, 403) } },
      'DELETE /v1/templates/{ref}': { url: `/v1/templates/${template}`, action: 'template.remove', target: template, params: {}, mallory: res => { assert.equal(res.statusCode, 403) } },
      'PUT /v1/blobs/{digest}': {
        url: `/v1/blobs/${digest}`, body: malloryBlob, headers: { 'content-type': 'application/octet-stream' }, action: 'blob.put', target: digest, params: {},
        mallory: res => { assert.equal(res.json().error.code, 'INVALID_ARGUMENT', 'kept only if it hashes to its id; counted against the uploader') },
      },
      'POST /v1/instances': { url: '/v1/instances', action: '', target: '', params: {}, mallory: () => {} },
      'GET /v1/instances/{id}': { url: `/v1/instances/${instance}`, action: 'get', target: instance, params: {}, mallory: refused },
      'POST /v1/instances/{id}/{action}': { url: `/v1/instances/${instance}/stop`, action: 'stop', target: instance, params: {}, mallory: refused },
      'POST /v1/instances/{id}/snapshot': { url: `/v1/instances/${instance}/snapshot`, action: 'snapshot', target: instance, params: {}, mallory: refused },
      'POST /v1/instances/{id}/migrate': { url: `/v1/instances/${instance}/migrate`, body: { to: OTHER_HOST }, action: 'migrate', target: instance, params: { to: OTHER_HOST, copyDisk: false }, mallory: refused },
      'POST /v1/instances/{id}/replicate': {
        url: `/v1/instances/${instance}/replicate`, body: { to: self, part: { token: r.token(mallory, template, { name: 'a' }, 1) } }, action: 'replicate', target: instance, params: { to: self, snapshot: null },
        mallory: res => {
          refused(res)
          assert.equal(host.supervisor.list().filter(v => v.name === 'a').length, 1, 'no replica of Alice\'s instance')
        },
      },
      'POST /v1/instances/{id}/derive': { url: `/v1/instances/${instance}/derive`, body: { name: 'stolen' }, action: 'derive', target: instance, params: { name: 'stolen' }, mallory: refused },
      'POST /v1/instances/{id}/collect': { url: `/v1/instances/${instance}/collect`, body: { prefix: 'loot' }, action: 'collect', target: instance, params: { prefix: 'loot' }, mallory: refused },
      'POST /v1/instances/{id}/bid': { url: `/v1/instances/${instance}/bid`, body: { seconds: 60 }, action: 'bid', target: instance, params: { seconds: 60 }, mallory: refused },
      'GET /v1/instances/{id}/metrics': { url: `/v1/instances/${instance}/metrics`, action: 'metrics', target: instance, params: {}, mallory: refused },
      'GET /v1/instances/{id}/logs': { url: `/v1/instances/${instance}/logs`, action: 'logs', target: instance, params: {}, mallory: refused },
      'GET /v1/deploys': { url: '/v1/deploys', action: 'deploys', target: self, params: {}, mallory: res => { assert.deepEqual(res.json(), { deploys: [] }, 'none of Alice\'s') } },
      'GET /v1/migrations': { url: '/v1/migrations', action: 'migrations', target: self, params: {}, mallory: res => { assert.deepEqual(res.json(), { migrations: [] }, 'none of Alice\'s') } },
      'GET /v1/snapshots': { url: '/v1/snapshots', action: 'snapshots', target: self, params: {}, mallory: res => { assert.deepEqual(res.json(), { snapshots: [] }, 'none of Alice\'s') } },
      'DELETE /v1/snapshots/{id}': { url: '/v1/snapshots/s-0123456789abcdef', action: 'snapshot.delete', target: 's-0123456789abcdef', params: {}, mallory: refused },
      'POST /v1/data/uploads': { url: '/v1/data/uploads', body: { uri: `data://${alice.id}/planted`, size: 1, sha256: 'a'.repeat(64) }, action: 'data.put', target: `data://${alice.id}/planted`, params: { size: 1, sha256: 'a'.repeat(64) }, mallory: refused },
      'GET /v1/data/uploads/{id}': { url: `/v1/data/uploads/${upload}`, action: 'data.upload', target: upload, params: {}, mallory: refused },
      'PUT /v1/data/uploads/{id}': { url: `/v1/data/uploads/${upload}?offset=0`, body: Buffer.from('x'), headers: { 'content-type': 'application/octet-stream' }, action: 'data.upload', target: upload, params: { offset: 0 }, mallory: refused },
      'DELETE /v1/data/uploads/{id}': { url: `/v1/data/uploads/${upload}`, action: 'data.cancel', target: upload, params: {}, mallory: refused },
      'POST /v1/data/uploads/{id}/complete': { url: `/v1/data/uploads/${upload}/complete`, action: 'data.complete', target: upload, params: {}, mallory: refused },
      'GET /v1/data/files': { url: `/v1/data/files?uri=${encodeURIComponent(`data://${alice.id}/`)}`, action: 'data.list', target: `data://${alice.id}/`, params: {}, mallory: refused },
      'GET /v1/data/file': { url: `/v1/data/file?uri=${encodeURIComponent(aliceFile)}`, action: 'data.get', target: aliceFile, params: {}, mallory: refused },
      'DELETE /v1/data/file': { url: `/v1/data/file?uri=${encodeURIComponent(aliceFile)}`, action: 'data.delete', target: aliceFile, params: {}, mallory: refused },
      'GET /v1/deployments': { url: '/v1/deployments', action: 'deployments', target: self, params: {}, mallory: res => { assert.deepEqual(res.json(), { deployments: [] }, 'none of Alice\'s') } },
      'GET /v1/deployments/{name}': { url: '/v1/deployments/site', action: 'deployment.get', target: 'site', params: {}, mallory: res => { assert.equal(res.json().error.code, 'DEPLOYMENT_NOT_FOUND') } },
      'POST /v1/deployments/{name}/terminate': { url: '/v1/deployments/site/terminate', action: 'deployment.terminate', target: 'site', params: {}, mallory: res => { assert.equal(res.json().error.code, 'DEPLOYMENT_NOT_FOUND') } },
      'GET /v1/bank/account': {
        url: '/v1/bank/account', action: 'account', target: host.banking.own ?? '', params: {},
        mallory: res => { assert.deepEqual([res.json().owner, res.json().entries.map((e: any) => e.to)], [mallory.id, [mallory.id]], 'her own account, with her starting grant: none of Alice\'s') },
      },
      'POST /v1/market/refunds': {
        url: '/v1/market/refunds', body: { receipt: aliceReceipt }, action: 'refund', target: aliceReceipt.hash, params: {},
        mallory: res => { assert.equal(res.json().error.code, 'BAD_RECEIPT', 'a payment of Alice\'s is paid back to Alice only') },
      },
      'GET /v1/budgets/{id}': { url: `/v1/budgets/${budget}`, action: 'get', target: budget, params: {}, mallory: refused },
      'DELETE /v1/budgets/{id}': { url: `/v1/budgets/${budget}`, action: 'stop', target: budget, params: {}, mallory: refused },
      'GET /v1/tasks': { url: '/v1/tasks', action: 'task.list', target: 'tasks', params: {}, mallory: res => { assert.deepEqual(res.json(), { tasks: [] }, 'none of Alice\'s') } },
      'GET /v1/tasks/{id}': { url: `/v1/tasks/${instance}`, action: 'task.get', target: instance, params: {}, mallory: refused },
      'GET /v1/data/grants': { url: '/v1/data/grants', action: 'data.grants', target: 'SIGNER', params: {}, mallory: res => { assert.deepEqual(res.json(), { grants: [] }, 'none of Alice\'s') } },
      'PUT /v1/data/grants': {
        url: '/v1/data/grants', body: { grantee: mallory.id, rights: 'write' }, action: 'data.grant', target: 'SIGNER', params: { grantee: mallory.id, rights: 'write' },
        mallory: () => { assert.equal(host.data.grants(alice.id).some(g => g.grantee === mallory.id), false, 'a grant signed by Mallory is on her own data, never on Alice\'s') },
      },
      'DELETE /v1/data/grants/{grantee}': {
        url: `/v1/data/grants/${operator.id}`, action: 'data.revoke', target: 'SIGNER', params: { grantee: operator.id },
        mallory: () => { assert.ok(host.data.grants(alice.id).some(g => g.grantee === operator.id), 'Alice\'s grant stays') },
      },
    }
  }

  it('refuses every signed route unsigned, signed for another host or another action, and lets another user do nothing with the owner\'s things', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json()
    const table = cases()
    const secured: string[] = []
    for (const [path, methods] of Object.entries(doc.paths as Record<string, Record<string, { security: Array<Record<string, string[]>> }>>)) {
      for (const [method, op] of Object.entries(methods)) {
        // Open (security []: none, or signatures in the body) or open to all and more to signers ({} among them).
        if (op.security.length === 0 || op.security.some(s => Object.keys(s).length === 0)) continue
        const name = `${method.toUpperCase()} ${path}`
        secured.push(name)
        const c = table[name]
        assert.ok(c !== undefined, `${name} takes a signature but has no case in this test`)
        if (name === 'POST /v1/instances') continue
        const send = async (headers: Record<string, string>): Promise<LightMyRequestResponse> => await app.inject({
          method: method.toUpperCase() as 'GET',
          url: c.url,
          headers: { ...c.headers, ...headers },
          ...c.body === undefined ? {} : { payload: c.body as string },
        })
        const signedBy = (key: OwnerKey, over: { host?: string, action?: string } = {}): Record<string, string> => ({
          'x-xenos-auth': encodeAuthHeader(signAction(key, { action: over.action ?? c.action, target: c.target === 'SIGNER' ? `data://${key.id}` : c.target, params: c.params, host: over.host ?? self })),
        })
        const unsigned = await send({})
        assert.equal(unsigned.statusCode, 401, `${name} unsigned: ${unsigned.body.slice(0, 200)}`)
        assert.equal(unsigned.json().error.code, 'UNAUTHENTICATED')
        // Signed for another host: refused here, or sent on to that host (which is nowhere), never carried out here.
        const elsewhere = await send(signedBy(alice, { host: OTHER_HOST }))
        assert.ok(['UNAUTHENTICATED', 'HOST_NOT_FOUND'].includes(elsewhere.json().error?.code), `${name} signed for another host: ${elsewhere.body.slice(0, 200)}`)
        assert.equal((await send(signedBy(alice, { action: 'something-else' }))).statusCode, 401, `${name} signed for another action`)
        c.mallory(await send(signedBy(mallory)))
      }
    }
    assert.ok(secured.length >= 30, `${secured.length} signed routes`)
    // Nothing of Alice's changed meanwhile.
    assert.equal(host.supervisor.view(instance).state, 'running')
    assert.equal(host.supervisor.admission.draining, false)
    assert.ok(host.library.get(template) !== undefined)
    assert.ok(host.store.data.file(alice.id, 'f.txt') !== undefined)
    assert.ok(host.store.snapshots.get('s-0123456789abcdef') !== undefined)
    assert.equal(host.deployments.show(alice.id, 'site').state, 'running', 'Alice\'s deployment runs on')
    assert.equal((await host.bidder.view(budget, alice.id)).state, 'active', 'Alice\'s budget is spent on')
  })

  it('lets an allowance\'s agent bid on its instances only, within its time, and nobody else use it', async () => {
    const bidAs = async (key: OwnerKey, a: Allowance, id = instance, seconds = 30): Promise<unknown> => {
      const params = { seconds }
      return await host.bidding.bid(id, params, signAction(key, { action: 'bid', target: id, params, host: self }), a)
    }
    const code = (c: string) => (err: unknown): boolean => err instanceof XenosError && err.code === c
    await assert.rejects(bidAs(mallory, allowance), code('FORBIDDEN'), 'Mallory presents Alice\'s allowance')
    const mallorys = signAllowance(mallory, { bank: host.banking.own ?? '', agent: mallory.id, max: 2, until: Date.now() + 600_000, payees: [host.bidding.escrow], instances: [instance] })
    await assert.rejects(bidAs(mallory, mallorys), code('FORBIDDEN'), 'an allowance of Mallory\'s own for Alice\'s instance')
    await assert.rejects(bidAs(mallory, { ...mallorys, owner: alice.id }), code('FORBIDDEN'), 'one passed off as Alice\'s')
    const quote = async (key: OwnerKey, a: Allowance): Promise<unknown> => await host.bidding.quote(a, signAction(key, { action: 'quote', target: allowanceId(a), params: {}, host: self }))
    await assert.rejects(quote(mallory, allowance), code('FORBIDDEN'), 'Mallory asks what Alice\'s bids hold')
    const short = signAllowance(alice, { bank: host.banking.own ?? '', agent: operator.id, max: 2, until: Date.now() + 10_000, payees: [host.bidding.escrow], instances: [instance] })
    await assert.rejects(bidAs(operator, short, instance, 60), code('FORBIDDEN'), 'a bid that outlasts its allowance')
    const other = signAllowance(alice, { bank: host.banking.own ?? '', agent: operator.id, max: 2, until: Date.now() + 600_000, payees: [host.bidding.escrow], instances: ['i-00000000000000ff'] })
    await assert.rejects(bidAs(operator, other), code('FORBIDDEN'), 'an allowance for another instance')
  })

  it('deploys only with tokens their owner signed, unaltered', async () => {
    const spec = { name: null }
    const good = r.token(alice, template, spec, 1)
    const forged = async (token: unknown): Promise<number> => (await r.inject('POST', '/v1/instances', {}, { template, spec, parts: [{ token }] })).statusCode
    assert.equal(await forged({ ...good, sig: good.sig.replace(/^./, c => c === 'A' ? 'B' : 'A') }), 401, 'a signature that is not Alice\'s')
    assert.equal(await forged({ ...good, count: 2 }), 401, 'more instances than she signed for')
    assert.equal(await forged({ ...good, owner: mallory.id }), 401, 'claimed by another key')
    assert.equal(await forged(r.token(mallory, template, { name: 'other' }, 1)), 401, 'signed for other parameters')
  })

  it('replicates an instance only under a token its owner signed, whoever relays the request', async () => {
    const body = { to: self, part: { token: r.token(mallory, template, { name: 'a' }, 1) } }
    const res = await r.inject('POST', `/v1/instances/${instance}/replicate`, r.auth(alice, 'replicate', instance, { to: self, snapshot: null }), body)
    assert.equal(res.statusCode, 403, res.body.slice(0, 300))
    assert.match(res.json().error.message, /signed by another key/)
    assert.equal(host.supervisor.list().filter(v => v.name === 'a').length, 1, 'no replica owned by the token\'s signer')
    const own = { to: self, part: { token: r.token(alice, template, { name: 'a' }, 1) } }
    const made = await r.inject('POST', `/v1/instances/${instance}/replicate`, r.auth(alice, 'replicate', instance, { to: self, snapshot: null }), own)
    assert.equal(made.statusCode, 200, made.body.slice(0, 300))
    assert.equal(made.json().replica.owner, alice.id)
    assert.equal(made.json().replica.name, 'a')
    await host.supervisor.control(made.json().replica.id, 'destroy')
  })

  it('shows everyone only what adverts show, and keeps what an instance printed for its owner', async () => {
    const listed = (await app.inject({ method: 'GET', url: '/v1/instances' })).json().instances.find((v: any) => v.id === instance)
    assert.equal(listed.owner, alice.id)
    assert.equal('error' in listed, false)
    const located = (await app.inject({ method: 'GET', url: `/v1/instances/${instance}/host` })).json()
    assert.deepEqual(located, { host: self })
  })

  it('lets only the operator open a port other hosts can reach, and any key only its own services', async () => {
    const aliceWide = await app.inject({ method: 'POST', url: '/v1/connect', payload: { target: instance, address: '0.0.0.0' }, headers: r.auth(alice, 'connect', instance, { endpoint: null, address: '0.0.0.0', port: 0 }) })
    assert.equal(aliceWide.statusCode, 403)
    assert.match(aliceWide.json().error.message, /only the operator/)
  })
})

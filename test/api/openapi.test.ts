import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { createClient } from '@hey-api/openapi-ts'
import type { FastifyInstance } from 'fastify'
import pino from 'pino'
import { buildApp } from '../../src/api/index.ts'
import { generateOwnerKey, type OwnerKey } from '../../src/core/index.ts'
import { Host } from '../../src/node/index.ts'
import { NODE, ROOT, tempDir } from '../helpers/cluster.ts'
import { Requests } from '../helpers/requests.ts'

const run = promisify(execFile)
const manifest = { name: 'sleeper', version: '1', driver: 'process', command: 'sleep 60', resources: { cpu: 0.5, memory: 64 } }

/** /openapi.json as tools outside Xenos read it: a linter, and a client generated from it. */
describe('OpenAPI document', () => {
  let host: Host
  let app: FastifyInstance
  let alice: OwnerKey
  let dir: string
  let instance: string

  before(async () => {
    alice = generateOwnerKey()
    dir = await tempDir('openapi')
    host = await Host.create({ dataDir: join(dir, 'host'), listen: ['/ip4/127.0.0.1/tcp/0'], capacity: { cpu: 1, memory: 256 }, operators: [] }, pino({ level: 'silent' }))
    await host.start()
    app = await buildApp(host)
    await app.listen({ host: '127.0.0.1', port: 0 })
    const r = new Requests(app, host.overlay.peerId)
    const body = { manifest }
    const template = (await r.inject('POST', '/v1/templates', r.auth(alice, 'template.import', 'templates', body), body)).json().id as string
    const deployed = await r.deploy(alice, template, { name: 'sleeper' })
    assert.equal(deployed.statusCode, 201, deployed.body)
    instance = deployed.json().instances[0].id
    await writeFile(join(dir, 'openapi.json'), (await app.inject({ method: 'GET', url: '/openapi.json' })).body)
  })

  after(async () => {
    for (const v of host.supervisor.list()) await host.supervisor.control(v.id, 'destroy')
    await app.close()
    await host.stop()
  })

  it('passes redocly\'s lint with neither errors nor warnings', async () => {
    const lint = await run(join(ROOT, 'node_modules/.bin/redocly'), ['lint', '--format=json', join(dir, 'openapi.json')], { maxBuffer: 64 * 1024 * 1024 }).catch((err: unknown) => err as { stdout: string })
    const { problems } = JSON.parse(lint.stdout) as { problems: Array<{ ruleId: string, message: string, location: Array<{ pointer: string }> }> }
    assert.deepEqual(problems.map(p => `${p.ruleId}: ${p.message} at ${p.location[0]?.pointer ?? '?'}`), [])
  })

  it('names its schemas, and gives every operation an id, a tag, its security and its errors', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json()
    for (const id of ['Error', 'InstanceView', 'HostInfo', 'DeploymentView', 'Receipt']) assert.ok(doc.components.schemas[id], id)
    assert.ok(doc.components.schemas.Error.properties.error.properties.code.enum.includes('INSTANCE_NOT_FOUND'), 'the codes of docs/errors.md')
    const ops = Object.entries(doc.paths as Record<string, Record<string, any>>).flatMap(([path, methods]) => Object.entries(methods).map(([method, op]) => ({ path, method, op })))
    assert.equal(new Set(ops.map(o => o.op.operationId)).size, ops.length, 'operation ids are unique')
    for (const { path, method, op } of ops) {
      assert.ok(op.tags?.length === 1 && op.security !== undefined, `${method} ${path}`)
      assert.ok(Object.keys(op.responses).some(s => s.startsWith('4')), `${method} ${path} answers errors`)
    }
    const download = doc.paths['/v1/blobs/{digest}']
    assert.ok(download.head, 'HEAD /v1/blobs/{digest} is documented')
    assert.deepEqual(Object.keys(download.get.responses[200].content), ['application/octet-stream'])
    assert.deepEqual(Object.keys(download.put.requestBody.content), ['application/octet-stream'])
    assert.deepEqual(Object.keys(doc.paths['/v1/instances/{id}/migrate'].post.responses[200].content), ['application/json', 'text/event-stream'])
    assert.deepEqual(doc.paths['/v1/bank/transfers'].post.security, [], 'signed in its body, not a header')
    assert.deepEqual(doc.paths['/v1/transfers'].get.security, [{}, { anyKeySignature: [] }], 'open, and more when signed')
    assert.match(doc.paths['/v1/host'].get.responses[402].description, /INSUFFICIENT_FUNDS/)
  })

  it('makes a client with @hey-api/openapi-ts that lists instances and, signed, reads one', async () => {
    const gen = join(dir, 'client')
    await mkdir(gen, { recursive: true })
    await writeFile(join(gen, 'package.json'), JSON.stringify({ type: 'module' }))
    await createClient({ input: join(dir, 'openapi.json'), output: { path: join(gen, 'sdk'), importFileExtension: '.ts' }, logs: { level: 'silent' } })
    const address = app.server.address()
    assert.ok(address !== null && typeof address === 'object')
    const r = new Requests(app, host.overlay.peerId)
    await writeFile(join(gen, 'list.ts'), `
import { client } from './sdk/client.gen.ts'
import { getInstance, listInstances } from './sdk/sdk.gen.ts'
client.setConfig({ baseUrl: 'http://127.0.0.1:${address.port}' })
const list = await listInstances({ query: { owner: ${JSON.stringify(alice.id)} }, throwOnError: true })
const one = await getInstance({ path: { id: ${JSON.stringify(instance)} }, headers: ${JSON.stringify(r.auth(alice, 'get', instance, {}))}, throwOnError: true })
const refused = await getInstance({ path: { id: ${JSON.stringify(instance)} } })
console.log(JSON.stringify({ ids: list.data.instances.map(i => i.id), state: one.data.state, refused: refused.error?.error.code }))
`)
    const { stdout } = await run(NODE, ['--disable-warning=ExperimentalWarning', join(gen, 'list.ts')])
    assert.deepEqual(JSON.parse(stdout), { ids: [instance], state: 'running', refused: 'UNAUTHENTICATED' })
  })
})

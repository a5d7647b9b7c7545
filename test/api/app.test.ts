import assert from 'node:assert/strict'
import type { FastifyInstance } from 'fastify'
import { after, before, describe, it } from 'node:test'
import pino from 'pino'
import { buildApp } from '../../src/api/index.ts'
import { encodeAuthHeader, generateOwnerKey, signAction, type OwnerKey } from '../../src/core/index.ts'
import { Host } from '../../src/node/index.ts'
import { tempDir } from '../helpers/cluster.ts'

const manifest = { name: 'sleeper', version: '1', driver: 'process', command: 'sleep 60', resources: { cpu: 0.5, memory: 64 } }

/** The HTTP API of one in-process host, through fastify's inject. */
describe('host API', () => {
  let host: Host
  let app: FastifyInstance
  let alice: OwnerKey
  let templateId: string

  const signed = (action: string, target: string, params: unknown): Record<string, string> =>
    ({ 'x-xenos-auth': encodeAuthHeader(signAction(alice, { action, target, params })) })

  const deploy = async (params: { hosts: string[] | null, count: number, name: string | null, [more: string]: unknown }, headers = signed('deploy', templateId, params)): Promise<{ statusCode: number, json: () => any }> =>
    await app.inject({ method: 'POST', url: '/v1/instances', payload: { template: templateId, ...params }, headers })

  before(async () => {
    host = await Host.create({ dataDir: await tempDir('api'), listen: ['/ip4/127.0.0.1/tcp/0'], capacity: { cpu: 1, memory: 256 } }, pino({ level: 'silent' }))
    await host.start()
    app = await buildApp(host)
    alice = generateOwnerKey()
  })

  after(async () => {
    for (const v of host.supervisor.list()) await host.supervisor.control(v.id, 'destroy')
    await app.close()
    await host.stop()
  })

  it('serves an OpenAPI document of its routes', async () => {
    const res = await app.inject({ method: 'GET', url: '/openapi.json' })
    assert.equal(res.statusCode, 200)
    const doc = res.json()
    assert.ok(doc.openapi.startsWith('3.'))
    for (const path of ['/v1/search', '/v1/instances', '/v1/instances/{id}/{action}', '/v1/templates']) assert.ok(doc.paths[path], path)
  })

  it('imports a manifest and refuses a bad one, naming the field', async () => {
    const ok = await app.inject({ method: 'POST', url: '/v1/templates', payload: { manifest } })
    assert.equal(ok.statusCode, 201)
    templateId = ok.json().id
    const bad = await app.inject({ method: 'POST', url: '/v1/templates', payload: { manifest: { ...manifest, resources: { cpu: 'lots' } } } })
    assert.equal(bad.statusCode, 400)
    assert.equal(bad.json().error.code, 'BAD_MANIFEST')
    assert.match(bad.json().error.message, /resources\.cpu/)
    const junk = await app.inject({ method: 'POST', url: '/v1/templates', payload: { what: 1 } })
    assert.equal(junk.statusCode, 400)
    assert.equal(junk.json().error.code, 'INVALID_ARGUMENT')
  })

  it('refuses malformed ids and unknown routes with clear codes', async () => {
    const badId = await app.inject({ method: 'GET', url: '/v1/instances/nope' })
    assert.equal(badId.statusCode, 400)
    assert.match(badId.json().error.message, /i- and 16 hex digits/)
    const missing = await app.inject({ method: 'GET', url: '/v1/instances/i-0000000000000000' })
    assert.equal(missing.statusCode, 404)
    assert.equal(missing.json().error.code, 'INSTANCE_NOT_FOUND')
    const route = await app.inject({ method: 'GET', url: '/v2/everything' })
    assert.equal(route.statusCode, 404)
    assert.equal(route.json().error.code, 'ROUTE_NOT_FOUND')
    const badTag = await app.inject({ method: 'GET', url: '/v1/search?tag=novalue' })
    assert.equal(badTag.json().error.code, 'INVALID_ARGUMENT')
  })

  it('deploys only when signed, and only once per signature', async () => {
    const params = { hosts: null, count: 1, name: 'one' }
    const unsigned = await deploy(params, {})
    assert.equal(unsigned.statusCode, 401)
    const wrongParams = await deploy({ ...params, count: 2 }, signed('deploy', templateId, params))
    assert.equal(wrongParams.statusCode, 401)
    const headers = signed('deploy', templateId, params)
    const ok = await deploy(params, headers)
    assert.equal(ok.statusCode, 201)
    assert.equal(ok.json().instances[0].owner, alice.id)
    const replay = await deploy(params, headers)
    assert.equal(replay.statusCode, 401)
    assert.match(replay.json().error.message, /already used/)
  })

  it('admits only what fits, with the admission error', async () => {
    // 1 CPU capacity, 0.5 used: one more 0.5-CPU instance fits, two do not.
    const tooMany = await deploy({ hosts: [host.overlay.peerId], count: 2, name: null })
    assert.equal(tooMany.statusCode, 409)
    assert.equal(tooMany.json().error.code, 'ADMISSION_REFUSED')
    assert.match(tooMany.json().error.message, /0.5 CPU and 192 MiB free/)
    const fits = await deploy({ hosts: [host.overlay.peerId], count: 1, name: null })
    assert.equal(fits.statusCode, 201)
    const full = await deploy({ hosts: null, count: 1, name: null })
    assert.equal(full.statusCode, 503)
    assert.equal(full.json().error.code, 'NO_HOST_AVAILABLE')
  })

  it('refuses to remove a template in use, and actions in the wrong state', async () => {
    const del = await app.inject({ method: 'DELETE', url: `/v1/templates/${templateId}` })
    assert.equal(del.statusCode, 409)
    assert.equal(del.json().error.code, 'TEMPLATE_IN_USE')
    const id = host.supervisor.list()[0]!.id
    const resume = await app.inject({ method: 'POST', url: `/v1/instances/${id}/resume`, headers: signed('resume', id, {}) })
    assert.equal(resume.statusCode, 409)
    assert.equal(resume.json().error.code, 'INVALID_STATE')
  })

  it('admits more than its capacity only as far as its overcommit allows', async () => {
    const over = await Host.create({ dataDir: await tempDir('api-over'), listen: ['/ip4/127.0.0.1/tcp/0'], capacity: { cpu: 1, memory: 256 }, overcommit: { cpu: 2, memory: 1 } }, pino({ level: 'silent' }))
    assert.deepEqual(over.info().capacity, { cpu: 2, memory: 256 })
    assert.deepEqual(over.info().free, { cpu: 2, memory: 256 })
    over.store.close()
  })

  it('refuses bad requests to the data repository with clear codes, and keeps nothing of them', async () => {
    const uri = `data://${alice.id}/in.txt`
    const sha = 'a'.repeat(64)
    const begin = async (body: unknown, headers: Record<string, string>): Promise<any> => await app.inject({ method: 'POST', url: '/v1/data/uploads', payload: body as object, headers })
    assert.equal((await begin({ uri, size: 3, sha256: sha }, {})).json().error.code, 'UNAUTHENTICATED')
    assert.equal((await begin({ uri, size: 3, sha256: sha }, signed('data.put', uri, { size: 4, sha256: sha }))).json().error.code, 'UNAUTHENTICATED')
    const traversal = `data://${alice.id}/a/../b`
    assert.equal((await begin({ uri: traversal, size: 3, sha256: sha }, signed('data.put', traversal, { size: 3, sha256: sha }))).json().error.code, 'INVALID_ARGUMENT')
    assert.equal((await begin({ uri, size: -1, sha256: sha }, signed('data.put', uri, { size: -1, sha256: sha }))).json().error.code, 'INVALID_ARGUMENT')
    assert.equal((await begin({ uri, size: 3, sha256: 'xyz' }, signed('data.put', uri, { size: 3, sha256: 'xyz' }))).json().error.code, 'INVALID_ARGUMENT')
    const up = (await begin({ uri, size: 3, sha256: sha }, signed('data.put', uri, { size: 3, sha256: sha }))).json()
    assert.match(up.id, /^u-[0-9a-f]{32}$/)
    const json = await app.inject({ method: 'PUT', url: `/v1/data/uploads/${up.id}?offset=0`, payload: { not: 'bytes' }, headers: signed('data.upload', up.id, { offset: 0 }) })
    assert.equal(json.json().error.code, 'INVALID_ARGUMENT')
    const badId = await app.inject({ method: 'GET', url: '/v1/data/uploads/..%2F..%2Fstate.db', headers: signed('data.upload', '../../state.db', {}) })
    assert.equal(badId.json().error.code, 'INVALID_ARGUMENT')
    const notFound = await app.inject({ method: 'GET', url: `/v1/data/file?uri=${encodeURIComponent(uri)}`, headers: signed('data.get', uri, {}) })
    assert.equal(notFound.json().error.code, 'DATA_NOT_FOUND')
  })

  it('refuses task deploys no host could run, and shows tasks to their owner only', async () => {
    const task = { outputs: 'results/t', keep: false }
    const twice = await deploy({ hosts: null, count: 2, name: null, outputBytes: 2 ** 20, task })
    assert.equal(twice.json().error.code, 'INVALID_ARGUMENT')
    assert.match(twice.json().error.message, /a task runs one instance/)
    const noDisk = await deploy({ hosts: null, count: 1, name: null, task })
    assert.match(noDisk.json().error.message, /needs an outputs disk/)
    const escaping = await deploy({ hosts: null, count: 1, name: null, outputBytes: 2 ** 20, task: { outputs: '../bob', keep: false } })
    assert.equal(escaping.json().error.code, 'INVALID_ARGUMENT')
    assert.equal((await app.inject({ method: 'GET', url: '/v1/tasks' })).json().error.code, 'UNAUTHENTICATED')
    assert.equal((await app.inject({ method: 'GET', url: '/v1/tasks/nope', headers: signed('task.get', 'nope', {}) })).json().error.code, 'INVALID_ARGUMENT')
    const id = 'i-0123456789abcdef'
    assert.equal((await app.inject({ method: 'GET', url: `/v1/tasks/${id}`, headers: signed('task.get', id, {}) })).json().error.code, 'TASK_NOT_FOUND')
    assert.deepEqual((await app.inject({ method: 'GET', url: '/v1/tasks', headers: signed('task.list', 'tasks', {}) })).json(), { tasks: [] })
  })

  it('keeps a drained host drained across a restart, until undrained', async () => {
    const dataDir = await tempDir('drained')
    const open = async (): Promise<Host> => {
      const h = await Host.create({ dataDir, listen: ['/ip4/127.0.0.1/tcp/0'], capacity: { cpu: 1, memory: 256 } }, pino({ level: 'silent' }))
      await h.start()
      return h
    }
    const first = await open()
    await first.migrations.drain(null)
    await first.stop()
    const again = await open()
    try {
      assert.deepEqual(again.supervisor.free(), { cpu: 0, memory: 0 }, 'the restarted host still offers no room')
      again.migrations.undrain()
      assert.equal(again.supervisor.free().cpu, 1)
    } finally {
      await again.stop()
    }
  })

  it('exposes Prometheus metrics', async () => {
    const res = await app.inject({ method: 'GET', url: '/metrics' })
    assert.equal(res.statusCode, 200)
    assert.match(res.body, /^xenos_host_capacity_cpu 1$/m)
    assert.match(res.body, /^xenos_host_free_cpu 0$/m)
    assert.match(res.body, /^xenos_instances\{state="running"\} 2$/m)
    assert.match(res.body, /^xenos_instance_memory_bytes\{instance="i-[0-9a-f]{16}",name="one"\} \d+$/m)
  })
})

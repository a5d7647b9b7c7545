import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { after, before, describe, it } from 'node:test'
import pino from 'pino'
import { buildApp } from '../../src/api/index.ts'
import { generateOwnerKey, instanceIdsOf, XENOS_VERSION, type OwnerKey } from '../../src/core/index.ts'
import { Host } from '../../src/node/index.ts'
import { ROOT, tempDir } from '../helpers/cluster.ts'
import { Requests } from '../helpers/requests.ts'

/** Prometheus's checker: scripts/test-tools.sh puts it in .cache/bin when the machine has none. */
const PROMTOOL = existsSync(join(ROOT, '.cache/bin/promtool')) ? join(ROOT, '.cache/bin/promtool') : 'promtool'

const manifest = { name: 'sleeper', version: '1', driver: 'process', command: 'sleep 60', resources: { cpu: 0.5, memory: 64 } }

/** The HTTP API of one in-process host, through fastify's inject. */
describe('host API', () => {
  let host: Host
  let app: FastifyInstance
  let alice: OwnerKey
  let operator: OwnerKey
  let r: Requests
  let templateId: string

  before(async () => {
    alice = generateOwnerKey()
    operator = generateOwnerKey()
    host = await Host.create({ dataDir: await tempDir('api'), listen: ['/ip4/127.0.0.1/tcp/0'], capacity: { cpu: 1, memory: 256 }, operators: [operator.id] }, pino({ level: 'silent' }))
    await host.start()
    app = await buildApp(host)
    r = new Requests(app, host.overlay.peerId)
  })

  after(async () => {
    for (const v of host.supervisor.list()) await host.supervisor.control(v.id, 'destroy')
    await app.close()
    await host.stop()
  })

  it('serves an OpenAPI document of its routes, saying who signs what', async () => {
    const res = await app.inject({ method: 'GET', url: '/openapi.json' })
    assert.equal(res.statusCode, 200)
    const doc = res.json()
    assert.ok(doc.openapi.startsWith('3.'))
    for (const path of ['/v1/search', '/v1/instances', '/v1/instances/{id}/{action}', '/v1/templates']) assert.ok(doc.paths[path], path)
    assert.deepEqual(doc.paths['/v1/host/drain'].post['x-xenos-signature'], { by: 'operator', action: 'drain on this host\'s peer id, params {to: the hosts named, or null}' })
    assert.deepEqual(doc.paths['/v1/host/drain'].post.security, [{ operatorSignature: [] }])
    assert.equal(doc.components.securitySchemes.operatorSignature.name, 'X-Xenos-Auth')
    // And for people, at /docs: Swagger UI, whose files the host serves, reading the same document.
    const page = await app.inject({ method: 'GET', url: '/docs' })
    assert.equal(page.statusCode, 200)
    assert.match(page.headers['content-type'] as string, /^text\/html/)
    assert.match(page.body, /swagger-ui/)
    assert.equal((await app.inject({ method: 'GET', url: '/docs/static/swagger-ui-bundle.js' })).statusCode, 200, 'its script, from the host')
    assert.deepEqual(Object.keys((await app.inject({ method: 'GET', url: '/docs/json' })).json().paths).sort(), Object.keys(doc.paths).sort(), 'the same routes')
  })

  it('imports a manifest signed by its owner and refuses a bad one, naming the field', async () => {
    const body = { manifest }
    assert.equal((await r.inject('POST', '/v1/templates', {}, body)).statusCode, 401)
    const ok = await r.inject('POST', '/v1/templates', r.auth(alice, 'template.import', 'templates', body), body)
    assert.equal(ok.statusCode, 201)
    templateId = ok.json().id
    assert.equal(host.library.get(templateId)?.owner, alice.id)
    const badBody = { manifest: { ...manifest, resources: { cpu: 'lots' } } }
    const bad = await r.inject('POST', '/v1/templates', r.auth(alice, 'template.import', 'templates', badBody), badBody)
    assert.equal(bad.statusCode, 400)
    assert.equal(bad.json().error.code, 'BAD_MANIFEST')
    assert.match(bad.json().error.message, /resources\.cpu/)
    const junk = await r.inject('POST', '/v1/templates', {}, { what: 1 })
    assert.equal(junk.statusCode, 400)
    assert.equal(junk.json().error.code, 'INVALID_ARGUMENT')
  })

  it('refuses malformed ids, unknown routes, and bodies too large or of the wrong type, with their codes', async () => {
    const badId = await app.inject({ method: 'GET', url: '/v1/instances/nope/host' })
    assert.equal(badId.statusCode, 400)
    assert.match(badId.json().error.message, /i- and 16 hex digits/)
    const missing = await app.inject({ method: 'GET', url: '/v1/instances/i-0000000000000000', headers: r.auth(alice, 'get', 'i-0000000000000000', {}) })
    assert.equal(missing.statusCode, 404)
    assert.equal(missing.json().error.code, 'INSTANCE_NOT_FOUND')
    const route = await app.inject({ method: 'GET', url: '/v2/everything' })
    assert.equal(route.statusCode, 404)
    assert.equal(route.json().error.code, 'ROUTE_NOT_FOUND')
    const badTag = await app.inject({ method: 'GET', url: '/v1/search?tag=novalue' })
    assert.equal(badTag.json().error.code, 'INVALID_ARGUMENT')
    const huge = await app.inject({ method: 'POST', url: '/v1/templates', payload: { text: 'x'.repeat(2 * 1024 * 1024) } })
    assert.equal(huge.statusCode, 413)
    assert.equal(huge.json().error.code, 'TOO_LARGE')
    const xml = await app.inject({ method: 'POST', url: '/v1/templates', payload: '<manifest/>', headers: { 'content-type': 'application/xml' } })
    assert.equal(xml.statusCode, 415)
    assert.equal(xml.json().error.code, 'UNSUPPORTED_MEDIA_TYPE')
  })

  it('deploys only with a token its owner signed for this host and these parameters, and makes nothing twice', async () => {
    const spec = { name: 'one' }
    const forOther = r.token(alice, templateId, spec, 1, { host: '12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo' })
    const elsewhere = await r.deploy(alice, templateId, spec, 1, [forOther])
    assert.equal(elsewhere.json().error.code, 'HOST_NOT_FOUND', 'a token for another host is sent there, never run here')
    const wrongSpec = await r.deploy(alice, templateId, spec, 1, [r.token(alice, templateId, { name: 'two' }, 1)])
    assert.equal(wrongSpec.statusCode, 401)
    const stale = await r.deploy(alice, templateId, spec, 1, [r.token(alice, templateId, spec, 1, { issuedAt: Date.now() - 3_600_000 })])
    assert.equal(stale.statusCode, 401)
    const token = r.token(alice, templateId, spec, 1)
    const ok = await r.deploy(alice, templateId, spec, 1, [token])
    assert.equal(ok.statusCode, 201)
    assert.equal(ok.json().instances[0].owner, alice.id)
    assert.deepEqual(ok.json().instances.map((v: any) => v.id), instanceIdsOf(token))
    const replay = await r.deploy(alice, templateId, spec, 1, [token])
    assert.equal(replay.statusCode, 401)
    assert.match(replay.json().error.message, /already used/)
    const retry = await r.deploy(alice, templateId, spec, 1, [r.token(alice, templateId, spec, 1, { key: token.key })])
    assert.equal(retry.statusCode, 201, 'a retry with the same key answers with what the first made')
    assert.deepEqual(retry.json().instances.map((v: any) => v.id), instanceIdsOf(token))
    assert.equal(host.supervisor.list().length, 1)
  })

  it('admits only what fits, with the admission error, and plans only what fits', async () => {
    // 1 CPU capacity, 0.5 used: one more 0.5-CPU instance fits, two do not.
    const tooMany = await r.deploy(alice, templateId, { name: null }, 2)
    assert.equal(tooMany.statusCode, 409)
    assert.equal(tooMany.json().error.code, 'ADMISSION_REFUSED')
    assert.match(tooMany.json().error.message, /0.5 CPU and 192 MiB free/)
    assert.deepEqual((await app.inject({ method: 'GET', url: `/v1/placement?template=${templateId}&count=1` })).json(), { hosts: [{ host: host.overlay.peerId, count: 1 }] })
    const fits = await r.deploy(alice, templateId, { name: null }, 1)
    assert.equal(fits.statusCode, 201)
    const full = await app.inject({ method: 'GET', url: `/v1/placement?template=${templateId}&count=1` })
    assert.equal(full.statusCode, 503)
    assert.equal(full.json().error.code, 'NO_HOST_AVAILABLE')
  })

  it('admits again an instance that starts after it stopped: a stopped one holds no room', async () => {
    const id = host.supervisor.list()[1]!.id
    const control = async (action: string): Promise<any> => await r.inject('POST', `/v1/instances/${id}/${action}`, r.auth(alice, action, id, {}))
    assert.equal((await control('stop')).statusCode, 200)
    const other = await r.deploy(alice, templateId, { name: 'other' }, 1)
    assert.equal(other.statusCode, 201, 'its room went to another instance')
    const start = await control('start')
    assert.equal(start.statusCode, 409)
    assert.equal(start.json().error.code, 'ADMISSION_REFUSED')
    assert.equal(host.supervisor.view(id).state, 'stopped')
    assert.ok(host.supervisor.admission.free().cpu >= 0, 'nothing runs beyond what the host offers')
    await r.inject('POST', `/v1/instances/${other.json().instances[0].id as string}/destroy`, r.auth(alice, 'destroy', other.json().instances[0].id, {}))
    assert.equal((await control('start')).statusCode, 200)
  })

  it('refuses to remove a template in use (only for its importer or the operator), and actions in the wrong state', async () => {
    const mallory = generateOwnerKey()
    const bymallory = await r.inject('DELETE', `/v1/templates/${templateId}`, r.auth(mallory, 'template.remove', templateId, {}))
    assert.equal(bymallory.statusCode, 403)
    const del = await r.inject('DELETE', `/v1/templates/${templateId}`, r.auth(alice, 'template.remove', templateId, {}))
    assert.equal(del.statusCode, 409)
    assert.equal(del.json().error.code, 'TEMPLATE_IN_USE')
    const id = host.supervisor.list()[0]!.id
    const resume = await r.inject('POST', `/v1/instances/${id}/resume`, r.auth(alice, 'resume', id, {}))
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
    const begin = async (body: unknown, headers: Record<string, string>): Promise<any> => await r.inject('POST', '/v1/data/uploads', headers, body)
    assert.equal((await begin({ uri, size: 3, sha256: sha }, {})).json().error.code, 'UNAUTHENTICATED')
    assert.equal((await begin({ uri, size: 3, sha256: sha }, r.auth(alice, 'data.put', uri, { size: 4, sha256: sha }))).json().error.code, 'UNAUTHENTICATED')
    const traversal = `data://${alice.id}/a/../b`
    assert.equal((await begin({ uri: traversal, size: 3, sha256: sha }, r.auth(alice, 'data.put', traversal, { size: 3, sha256: sha }))).json().error.code, 'INVALID_ARGUMENT')
    assert.equal((await begin({ uri, size: -1, sha256: sha }, r.auth(alice, 'data.put', uri, { size: -1, sha256: sha }))).json().error.code, 'INVALID_ARGUMENT')
    assert.equal((await begin({ uri, size: 3, sha256: 'xyz' }, r.auth(alice, 'data.put', uri, { size: 3, sha256: 'xyz' }))).json().error.code, 'INVALID_ARGUMENT')
    const up = (await begin({ uri, size: 3, sha256: sha }, r.auth(alice, 'data.put', uri, { size: 3, sha256: sha }))).json()
    assert.match(up.id, /^u-[0-9a-f]{32}$/)
    const json = await r.inject('PUT', `/v1/data/uploads/${up.id as string}?offset=0`, r.auth(alice, 'data.upload', up.id, { offset: 0 }), { not: 'bytes' })
    assert.equal(json.json().error.code, 'UNSUPPORTED_MEDIA_TYPE')
    const badId = await r.inject('GET', '/v1/data/uploads/..%2F..%2Fstate.db', r.auth(alice, 'data.upload', '../../state.db', {}))
    assert.equal(badId.json().error.code, 'INVALID_ARGUMENT')
    const notFound = await r.inject('GET', `/v1/data/file?uri=${encodeURIComponent(uri)}`, r.auth(alice, 'data.get', uri, {}))
    assert.equal(notFound.json().error.code, 'DATA_NOT_FOUND')
  })

  it('refuses task deploys no host could run, and shows tasks to their owner only', async () => {
    const task = { outputs: 'results/t', keep: false }
    const twice = await r.deploy(alice, templateId, { name: null, outputBytes: 2 ** 20, task }, 2)
    assert.equal(twice.json().error.code, 'INVALID_ARGUMENT')
    assert.match(twice.json().error.message, /a task runs one instance/)
    const noDisk = await r.deploy(alice, templateId, { name: null, task })
    assert.match(noDisk.json().error.message, /needs an outputs disk/)
    const escaping = await r.deploy(alice, templateId, { name: null, outputBytes: 2 ** 20, task: { outputs: '../bob', keep: false } })
    assert.equal(escaping.json().error.code, 'INVALID_ARGUMENT')
    assert.equal((await r.inject('GET', '/v1/tasks')).json().error.code, 'UNAUTHENTICATED')
    assert.equal((await r.inject('GET', '/v1/tasks/nope', r.auth(alice, 'task.get', 'nope', {}))).json().error.code, 'INVALID_ARGUMENT')
    const id = 'i-0123456789abcdef'
    assert.equal((await r.inject('GET', `/v1/tasks/${id}`, r.auth(alice, 'task.get', id, {}))).json().error.code, 'TASK_NOT_FOUND')
    assert.deepEqual((await r.inject('GET', '/v1/tasks', r.auth(alice, 'task.list', 'tasks', {}))).json(), { tasks: [] })
  })

  it('keeps a drained host drained across a restart, until its operator undrains it', async () => {
    const dataDir = await tempDir('drained')
    const open = async (): Promise<Host> => {
      const h = await Host.create({ dataDir, listen: ['/ip4/127.0.0.1/tcp/0'], capacity: { cpu: 1, memory: 256 }, operators: [operator.id] }, pino({ level: 'silent' }))
      await h.start()
      return h
    }
    const first = await open()
    const drain = (h: Host, key: OwnerKey): Parameters<Host['draining']['drain']>[1] => new Requests(app, h.overlay.peerId).authOf(key, 'drain', h.overlay.peerId, { to: null })
    await assert.rejects(first.draining.drain(null, drain(first, alice)), /only the operator/)
    await first.draining.drain(null, drain(first, operator))
    await first.stop()
    const again = await open()
    try {
      assert.deepEqual(again.supervisor.admission.free(), { cpu: 0, memory: 0 }, 'the restarted host still offers no room')
      assert.throws(() => { again.draining.undrain(new Requests(app, again.overlay.peerId).authOf(alice, 'undrain', again.overlay.peerId, {})) }, /only the operator/)
      again.draining.undrain(new Requests(app, again.overlay.peerId).authOf(operator, 'undrain', again.overlay.peerId, {}))
      assert.equal(again.supervisor.admission.free().cpu, 1)
    } finally {
      await again.stop()
    }
  })

  it('exposes Prometheus metrics that promtool finds clean, in base units, with no label Prometheus takes for its own', async () => {
    const res = await app.inject({ method: 'GET', url: '/metrics' })
    assert.equal(res.statusCode, 200)
    assert.match(res.headers['content-type'] as string, /^text\/plain; version=0\.0\.4/)
    assert.match(res.body, /^xenos_host_capacity_cpus 1$/m)
    assert.match(res.body, /^xenos_host_free_cpus 0$/m)
    assert.match(res.body, /^xenos_host_capacity_memory_bytes 268435456$/m)
    assert.match(res.body, /^xenos_instances\{state="running"\} 2$/m)
    assert.match(res.body, /^xenos_instance_memory_bytes\{instance_id="i-[0-9a-f]{16}",name="one"\} \d+$/m)
    assert.match(res.body, /^xenos_instance_start_time_seconds\{instance_id="i-[0-9a-f]{16}",name="one"\} 1\d{9}(\.\d+)?$/m)
    assert.doesNotMatch(res.body, /[{,]instance="/, 'no series labelled `instance`')
    assert.match(res.body, new RegExp(`^xenos_build_info\\{version="${XENOS_VERSION}",node="${process.versions.node}"\\} 1$`, 'm'))
    assert.match(res.body, /^process_cpu_seconds_total \d/m, 'the process\'s own')
    assert.match(res.body, /^nodejs_eventloop_lag_seconds \d/m)
    assert.match(res.body, /^xenos_http_request_duration_seconds_count\{method="POST",route="\/v1\/instances",status_code="201"\} [1-9]/m, 'the deploys above, timed')
    assert.match(res.body, /^xenos_deploy_duration_seconds_count\{result="ok"\} [1-9]/m)
    assert.match(res.body, /^xenos_instance_boot_duration_seconds_count\{result="ok"\} [1-9]/m)
    const unknown = await app.inject({ method: 'GET', url: '/no/such/route' })
    assert.equal(unknown.statusCode, 404)
    const after = (await app.inject({ method: 'GET', url: '/metrics' })).body
    assert.match(after, /^xenos_http_request_duration_seconds_count\{method="GET",route="unmatched",status_code="404"\} [1-9]/m)
    assert.doesNotMatch(after, /no\/such/, 'made-up paths are one series, not one each')
    const check = spawnSync(PROMTOOL, ['check', 'metrics'], { input: res.body, encoding: 'utf8' })
    assert.equal(check.error, undefined, `promtool runs (scripts/test-tools.sh fetches it): ${String(check.error)}`)
    assert.equal(`${check.stdout}${check.stderr}`, '', 'promtool has nothing to say')
    assert.equal(check.status, 0)
  })
})
